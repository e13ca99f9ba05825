"""Event subscribers: queue a preview when an Image or File gets a new file."""

import logging
from plone import api
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from zope.globalrequest import getRequest


logger = logging.getLogger("ploneintranet.asynctasks")


def queue_preview(context, event):
    """Queue :class:`~ploneintranet.asynctasks.tasks.GeneratePreview` for a
    new or changed file, in a request of a logged-in user of a site that has
    the add-on installed and previews on
    (:func:`~ploneintranet.asynctasks.previews.settings.enabled`); the item
    shows a placeholder until it is done."""
    request = getRequest()
    if request is None or not IPloneintranetAsyncLayer.providedBy(request):
        return
    if not previews.enabled():
        return
    if api.user.is_anonymous() or not previews.needs_preview(context):
        return
    try:
        tasks.GeneratePreview(context, request)()
    except AsyncTaskError as error:
        logger.warning("no preview queued for %s: %s", context.absolute_url(), error)
        return
    previews.mark_pending(context)
