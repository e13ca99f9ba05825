"""GenericSetup handlers of the add-on's profiles."""

from plone.api import portal
from plone.base.interfaces import INonInstallable
from ploneintranet.asynctasks import pas
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from zope.annotation.interfaces import IAnnotations
from zope.interface import implementer


@implementer(INonInstallable)
class HiddenProfiles:
    """Hide the uninstall profile from the add-ons control panel."""

    def getNonInstallableProfiles(self):
        return ["ploneintranet.asynctasks:uninstall"]


def install(setup_tool):
    """Post handler of the default profile: add the job token plugin to the
    site's ``acl_users``."""
    pas.install(portal.get().acl_users)


def uninstall(setup_tool):
    """Post handler of the uninstall profile: remove the job token plugin and
    what the add-on stored on the site root."""
    site = portal.get()
    pas.uninstall(site.acl_users)
    IAnnotations(site).pop(CHECKSUM_KEY, None)
