"""``@controlpanels/async-tasks``: Site Setup > Async tasks for Volto."""

from AccessControl import Unauthorized
from AccessControl import getSecurityManager
from plone.restapi.controlpanels import RegistryConfigletPanel
from ploneintranet.asynctasks.browser.controlpanel import CONFIGLET_ID
from ploneintranet.asynctasks.browser.controlpanel import IAsyncTasksSettings
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.previews.settings import RECORD_PREFIX
from zope.component import adapter
from zope.interface import Interface


@adapter(Interface, IPloneintranetAsyncLayer)
class AsyncTasksControlpanel(RegistryConfigletPanel):
    """The registry records of :class:`IAsyncTasksSettings`, read and written
    by plone.restapi's ``@controlpanels`` service.

    That service asks only for ``Plone Site Setup: Overview``, which Site
    Administrators have; these settings, like the configlet, need
    ``Manage portal``.
    """

    configlet_id = CONFIGLET_ID
    configlet_category_id = "Products"
    schema_prefix = RECORD_PREFIX

    @property
    def schema(self):
        """:class:`IAsyncTasksSettings`, for users who may manage the portal."""
        if not getSecurityManager().checkPermission("Manage portal", self.context):
            raise Unauthorized("the Async tasks settings need the permission Manage portal")
        return IAsyncTasksSettings
