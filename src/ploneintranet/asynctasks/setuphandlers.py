"""GenericSetup handlers of the add-on's profiles."""

from plone.api import portal
from plone.base.interfaces import INonInstallable
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from zope.annotation.interfaces import IAnnotations
from zope.interface import implementer


@implementer(INonInstallable)
class HiddenProfiles:
    """Hide the uninstall profile from the add-ons control panel."""

    def getNonInstallableProfiles(self):
        return ["ploneintranet.asynctasks:uninstall"]


def uninstall(setup_tool):
    """Post handler of the uninstall profile: remove what the add-on stored
    on the site root."""
    IAnnotations(portal.get()).pop(CHECKSUM_KEY, None)
