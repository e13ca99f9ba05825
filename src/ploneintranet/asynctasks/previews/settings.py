"""The site administrator's switch: previews on or off, without code.

The record ``ploneintranet.asynctasks.previews_enabled`` (Site Setup ->
Configuration Registry) is added by the add-on's profile, or by the upgrade
step to 1003. Switched off, uploads queue no preview job and pages show no
preview; the previews already made are kept and come back when it is on again.
"""

from plone import api
from ploneintranet.asynctasks.i18n import _
from zope import schema
from zope.interface import Interface


#: Records of :class:`IPreviewSettings` are named with this prefix.
RECORD_PREFIX = "ploneintranet.asynctasks"
#: The name of the switch in the site's registry.
ENABLED_RECORD = f"{RECORD_PREFIX}.previews_enabled"


class IPreviewSettings(Interface):
    """The registry records of previews (registered with :data:`RECORD_PREFIX`)."""

    previews_enabled = schema.Bool(
        title=_("Make previews of uploaded Images and Files"),
        description=_(
            "On: an upload queues a job that makes its preview, and the item's page "
            "shows it. Off: no preview job is queued and no preview is shown; the "
            "previews already made are kept and shown again once this is on."
        ),
        default=True,
        required=False,
    )


def enabled():
    """True unless a site administrator switched previews off. A site that
    lacks the record (the upgrade step to 1003 has not run) makes previews."""
    return api.portal.get_registry_record(ENABLED_RECORD, default=True) is not False
