"""GenericSetup handlers of the add-on's profiles."""

from plone.base.interfaces import INonInstallable
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from zope.annotation.interfaces import IAnnotations
from zope.interface import implementer


@implementer(INonInstallable)
class HiddenProfiles:
    """Hide the uninstall profile from the add-ons control panel."""

    def getNonInstallableProfiles(self):
        return ["ploneintranet.asynctasks:uninstall"]


def uninstall(context):
    """Remove what the add-on stored on the site root."""
    site = context.getSite()
    IAnnotations(site).pop(CHECKSUM_KEY, None)
