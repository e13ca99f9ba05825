"""Previews of Images and Files, made in the background by the
:class:`~ploneintranet.asynctasks.tasks.GeneratePreview` job.

Until the job ran, the item's view shows a placeholder (see
:mod:`ploneintranet.asynctasks.browser.preview`); the job's ``done`` push
message makes the browser fetch the finished preview in its place. An Image's
preview is an image scale (``preview``, made by plone.namedfile); a PDF's is
its first page, rendered by ``pdftoppm`` when it is installed.
"""

from html import escape
from persistent.mapping import PersistentMapping
from plone.namedfile.file import NamedBlobImage
from plone.uuid.interfaces import IUUID
from ploneintranet.asynctasks.push.messages import SNIPPET_URL_FIELD
from ploneintranet.asynctasks.push.messages import TARGET_FIELD
import shutil
import subprocess
import tempfile
from zope.annotation.interfaces import IAnnotations


ANNOTATION_KEY = "ploneintranet.asynctasks.preview"
#: The image scale shown as an Image's preview.
SCALE = "preview"
PENDING = "pending"
READY = "ready"
NO_PREVIEW = "none"
#: Seconds pdftoppm may take for a first page.
PDFTOPPM_TIMEOUT = 60


def source(context):
    """``(field name, file)`` of the Image's image or the File's file, or
    ``(None, None)``."""
    for name in ("image", "file"):
        value = getattr(context, name, None)
        if value is not None:
            return name, value
    return None, None


def record(context):
    """The stored preview record (``state`` and more), or ``None``."""
    return IAnnotations(context).get(ANNOTATION_KEY)


def state(context):
    """:data:`PENDING`, :data:`READY`, :data:`NO_PREVIEW` or ``None`` (never queued)."""
    stored = record(context)
    return None if stored is None else stored.get("state")


def needs_preview(context):
    """True if the file is new or changed since the last preview was made."""
    name, value = source(context)
    if value is None:
        return False
    stored = record(context)
    # a replaced file is a new object, without an oid until the commit
    return stored is None or value._p_oid is None or stored.get("source") != value._p_oid


def mark_pending(context):
    IAnnotations(context)[ANNOTATION_KEY] = PersistentMapping(state=PENDING)


def target_id(context):
    """Id of the page element that shows the preview."""
    return f"async-preview-{IUUID(context, None) or context.getId()}"


def snippet_url(context):
    return f"{context.absolute_url()}/@@async-preview-snippet"


def push_fields(context):
    """Job data that tells the push message where the preview goes."""
    return {SNIPPET_URL_FIELD: snippet_url(context), TARGET_FIELD: target_id(context)}


def generate(context):
    """Make the preview of ``context`` now and store it; return the new state."""
    name, value = source(context)
    if value is None:
        return None
    stored = PersistentMapping(state=NO_PREVIEW, source=value._p_oid)
    if name == "image":
        # plone.namedfile makes the scale and keeps it with the image
        context.restrictedTraverse("@@images").scale(name, scale=SCALE)
        stored["state"] = READY
    elif getattr(value, "contentType", "") == "application/pdf" and shutil.which("pdftoppm"):
        png = first_page_png(value.data)
        if png:
            stored.update(state=READY, image=NamedBlobImage(png, filename="preview.png"))
    IAnnotations(context)[ANNOTATION_KEY] = stored
    return stored["state"]


def first_page_png(pdf):
    """The first page of the PDF bytes ``pdf`` as PNG bytes, or ``b""``."""
    with tempfile.TemporaryDirectory(prefix="asynctasks-preview-") as directory:
        path = f"{directory}/source.pdf"
        with open(path, "wb") as out:
            out.write(pdf)
        result = subprocess.run(
            ["pdftoppm", "-png", "-f", "1", "-l", "1", "-scale-to", "800",
             "-singlefile", path, f"{directory}/page"],
            capture_output=True, timeout=PDFTOPPM_TIMEOUT, check=False,
        )
        if result.returncode != 0:
            return b""
        with open(f"{directory}/page.png", "rb") as page:
            return page.read()


def preview_html(context):
    """The preview element: a placeholder (``data-pat-push``) while the job
    is pending, the preview when it is ready, ``""`` if none was ever queued."""
    current = state(context)
    if current is None:
        return ""
    target = escape(target_id(context))
    if current == PENDING:
        return (
            f'<div id="{target}" class="async-preview pending" '
            f'data-pat-push="{escape(snippet_url(context))}">Making the preview…</div>'
        )
    if current == NO_PREVIEW:
        return f'<div id="{target}" class="async-preview none">No preview for this file.</div>'
    title = escape(context.Title() or context.getId())
    if record(context).get("image") is not None:
        src = f"{context.absolute_url()}/@@async-preview-image"
        img = f'<img src="{escape(src)}" alt="{title}" />'
    else:
        img = context.restrictedTraverse("@@images").scale("image", scale=SCALE).tag(alt=title)
    return f'<div id="{target}" class="async-preview ready">{img}</div>'
