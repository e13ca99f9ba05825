"""The preview on an Image's or File's page: a placeholder until the
``GeneratePreview`` job made it, then the preview, fetched by pat-push.

The worker view that makes it, ``@@async-generate-preview``, is
:class:`GeneratePreviewView`."""

import logging
from plone.app.layout.viewlets.common import ViewletBase
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.browser.views import ProtectedJobView
from Products.Five.browser import BrowserView
from zExceptions import NotFound


logger = logging.getLogger("ploneintranet.asynctasks")


class PreviewViewlet(ViewletBase):
    """Shows the preview element above the item's body; nothing while a site
    administrator has switched previews off."""

    def render(self):
        if not previews.enabled():
            return ""
        return previews.preview_html(self.context)


def require_preview(context):
    """Raise ``NotFound`` (404) unless ``context`` is an item that gets
    previews: the views below are registered for ``*``."""
    if not previews.applies_to(context):
        raise NotFound("only Images and Files have a preview")


class PreviewSnippetView(BrowserView):
    """``@@async-preview-snippet``: the preview element alone, the HTML
    snippet that pat-push puts in place of the placeholder."""

    def __call__(self):
        require_preview(self.context)
        self.request.response.setHeader("Content-Type", "text/html; charset=utf-8")
        self.request.response.setHeader("Cache-Control", "no-store")
        return f"<html><body>{previews.preview_html(self.context)}</body></html>"


class PreviewImageView(BrowserView):
    """``@@async-preview-image``: the stored first page of a PDF, as PNG."""

    def __call__(self):
        require_preview(self.context)
        stored = previews.record(self.context) or {}
        image = stored.get("image")
        if image is None:
            raise NotFound("this item has no rendered preview image")
        response = self.request.response
        response.setHeader("Content-Type", image.contentType or "image/png")
        response.setHeader("Content-Length", str(image.getSize()))
        return image.data


class GeneratePreviewView(ProtectedJobView):
    """``@@async-generate-preview``: make and store the preview of an Image
    or File (see :mod:`ploneintranet.asynctasks.previews`).

    Answers 200 with the new state, also for "no preview" (a final outcome:
    the job is not retried), and 503 when LibreOffice had no turn for the
    file in time (the job is tried again later; nothing is stored)."""

    def run(self):
        path = "/".join(self.context.getPhysicalPath())
        try:
            made = previews.generate(self.context)
        except previews.ConverterBusy as busy:
            logger.info("preview of %s later: %s", path, busy)
            self.request.response.setStatus(503)
            self.request.response.setHeader("Retry-After", "10")
            return f"preview later: {busy}"
        reason = previews.no_preview_reason(self.context)
        if reason:  # a final state: answered 200, so the job is not retried
            logger.warning("no preview of %s: %s", path, reason)
        else:
            logger.info("preview of %s: %s", path, made)
        return f"preview {made}"
