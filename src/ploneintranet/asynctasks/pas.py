"""The PAS plugin that lets a job act as its user with a job token.

Installed in the site's ``acl_users`` by the add-on's profile (and removed by
its uninstall profile), active as an extraction, authentication and roles
plugin. It reads the ``X-Async-Token`` header of a request and, if the token
is valid for this request's path (:func:`ploneintranet.asynctasks.jobtoken.verify`),
authenticates the token's user. A user of the Zope root (such as the admin
that created the site) is given their global roles there, as their own login
would; a user that exists nowhere is refused.
"""

from AccessControl import getSecurityManager
from AccessControl.class_init import InitializeClass
from Acquisition import aq_base
import logging
from plone.keyring.interfaces import IKeyManager
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks.wire import TOKEN_HEADER
from Products.PluggableAuthService.interfaces.plugins import IAuthenticationPlugin
from Products.PluggableAuthService.interfaces.plugins import IExtractionPlugin
from Products.PluggableAuthService.interfaces.plugins import IRolesPlugin
from Products.PluggableAuthService.plugins.BasePlugin import BasePlugin
from zope.component import getUtility
from zope.globalrequest import getRequest
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")

PLUGIN_ID = jobtoken.PLUGIN_ID
_CREDENTIAL = "asynctasks_job_token"
# Request key: the Zope-root user a token authenticated in this request.
_ROOT_USER = "ploneintranet.asynctasks.root_user"
_INTERFACES = (IExtractionPlugin, IAuthenticationPlugin, IRolesPlugin)


def current_userid():
    """The id of the user of this request, or ``None`` for anonymous: whom
    a job is queued for and a push socket is opened for."""
    user = getSecurityManager().getUser()
    if user is None or user.getUserName() == "Anonymous User":
        return None
    return user.getId() or user.getUserName()


def is_installed(acl_users):
    """True if ``acl_users`` has the job token plugin."""
    return getattr(aq_base(acl_users), PLUGIN_ID, None) is not None


@implementer(*_INTERFACES)
class JobTokenPlugin(BasePlugin):
    """Authenticates a job's request by its job token."""

    meta_type = "ploneintranet.asynctasks job token plugin"

    def __init__(self, id=PLUGIN_ID, title="Async job tokens"):
        self._setId(id)
        self.title = title

    def extractCredentials(self, request):
        token = request.getHeader(TOKEN_HEADER)
        if not token:
            return {}
        path = request.environ.get("SCRIPT_NAME", "") + request.environ.get("PATH_INFO", "")
        return {_CREDENTIAL: token, "path": path or "/"}

    def authenticateCredentials(self, credentials):
        token = credentials.get(_CREDENTIAL)
        if token is None:
            return None
        secrets = list(getUtility(IKeyManager)[jobtoken.RING])
        userid = jobtoken.verify(token, secrets, credentials["path"])
        if userid is None:
            logger.warning("refused a job token for %s: forged, expired or for another url", credentials["path"])
            return None
        pas = self._getPAS()
        info = pas._verifyUser(pas.plugins, user_id=userid)
        if info:
            return info["id"], info["login"]
        root_user = self.getPhysicalRoot().acl_users.getUserById(userid)
        if root_user is None:
            logger.warning("refused a job token of %s: no such user", userid)
            return None
        request = getRequest()
        if request is not None:
            request.set(_ROOT_USER, userid)
        return userid, root_user.getUserName()

    def getRolesForPrincipal(self, principal, request=None):
        if request is None or request.get(_ROOT_USER) != principal.getId():
            return ()
        user = self.getPhysicalRoot().acl_users.getUserById(principal.getId())
        return tuple(user.getRoles()) if user is not None else ()


InitializeClass(JobTokenPlugin)


def install(acl_users):
    """Add the plugin to ``acl_users`` and activate it (idempotent)."""
    if not is_installed(acl_users):
        acl_users._setObject(PLUGIN_ID, JobTokenPlugin())
    plugins = acl_users.plugins
    for interface in _INTERFACES:
        if PLUGIN_ID not in plugins.listPluginIds(interface):
            plugins.activatePlugin(interface, PLUGIN_ID)


def uninstall(acl_users):
    """Remove the plugin from ``acl_users``."""
    if is_installed(acl_users):
        acl_users.plugins.removePluginById(PLUGIN_ID)
        acl_users._delObject(PLUGIN_ID)
