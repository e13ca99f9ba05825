"""Previews of Images and Files, made in the background by the
:class:`~ploneintranet.asynctasks.tasks.GeneratePreview` job.

An upload queues the job (``previews/subscribers.py``); until it ran, the
item's page shows a placeholder (``previews/browser.py``), and the job's
``done`` push message makes the browser fetch the finished preview in its
place. An Image's preview is an image scale (``preview``, made by
plone.namedfile); a PDF's is its first page, rendered by ``pdftoppm`` under the
limits of :func:`~ploneintranet.asynctasks.previews.convert.run_converter`; an
Office or OpenDocument file's (docx, xlsx, pptx, odt, ods, odp, rtf) is the
first page of the PDF LibreOffice makes of it, under the same limits
(:mod:`~ploneintranet.asynctasks.previews.office`). A conversion that fails
or runs out of time is a final "no preview", and the site remembers each
outcome by the sha256 of the bytes: the same bytes are converted once.

A site administrator switches previews off with a registry record (see
:mod:`ploneintranet.asynctasks.previews.settings`): then the subscriber queues
nothing and the viewlet shows nothing; the functions here work either way.
``run_converter``, ``ConversionFailed`` and ``ConverterUnavailable`` (of
``convert``), ``ConverterBusy`` (of ``office``), ``enabled`` and
``ENABLED_RECORD`` (of ``settings``) are ``previews.<name>`` too.
"""

from Acquisition import aq_base
from BTrees.OOBTree import OOBTree
import functools
import hashlib
from html import escape
from persistent.mapping import PersistentMapping
from plone import api
from plone.app.contenttypes.interfaces import IFile
from plone.app.contenttypes.interfaces import IImage
from plone.namedfile.file import NamedBlobImage
from plone.uuid.interfaces import IUUID
from ploneintranet.asynctasks.i18n import _
from ploneintranet.asynctasks.i18n import translated
from ploneintranet.asynctasks.previews.convert import ConversionFailed
from ploneintranet.asynctasks.previews.convert import ConverterUnavailable
from ploneintranet.asynctasks.previews.convert import first_page_png
from ploneintranet.asynctasks.previews.convert import run_converter as run_converter
from ploneintranet.asynctasks.previews.office import ConverterBusy as ConverterBusy
from ploneintranet.asynctasks.previews.office import check_size
from ploneintranet.asynctasks.previews.office import office_first_page_png
from ploneintranet.asynctasks.previews.office import office_format
from ploneintranet.asynctasks.previews.settings import ENABLED_RECORD as ENABLED_RECORD
from ploneintranet.asynctasks.previews.settings import enabled as enabled
from ploneintranet.asynctasks.push.messages import SNIPPET_URL_FIELD
from ploneintranet.asynctasks.push.messages import TARGET_FIELD
import time
from zope.annotation.interfaces import IAnnotations


ANNOTATION_KEY = "ploneintranet.asynctasks.preview"
#: Annotation on the site root: outcomes of conversions by sha256 of the bytes.
REMEMBERED_KEY = "ploneintranet.asynctasks.preview-digests"
#: Outcomes the site remembers (a first page is ~100 KB); the oldest go first.
REMEMBERED_MAX = 1000
#: The image scale shown as an Image's preview.
SCALE = "preview"
PENDING = "pending"
READY = "ready"
NO_PREVIEW = "none"


def applies_to(context):
    """True for the items that get previews: Images and Files."""
    return IImage.providedBy(context) or IFile.providedBy(context)


def source(context):
    """``(field name, file)`` of the Image's image or the File's file, or
    ``(None, None)``."""
    item = aq_base(context)  # not a parent's item that happens to be named "image"
    for name in ("image", "file"):
        value = getattr(item, name, None)
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


def no_preview_reason(context):
    """Why a conversion made no preview of ``context`` (for the log), or ``None``."""
    stored = record(context)
    return None if stored is None else stored.get("reason")


def needs_preview(context):
    """True if the file is new or changed since the last preview was made."""
    name, value = source(context)
    if value is None:
        return False
    stored = record(context)
    # a replaced file is a new object, without an oid until the commit
    return stored is None or value._p_oid is None or stored.get("source") != value._p_oid


def mark_pending(context):
    """Record that a preview job for ``context`` is queued: its page shows a
    placeholder until the job stored the preview."""
    IAnnotations(context)[ANNOTATION_KEY] = PersistentMapping(state=PENDING)


def target_id(context):
    """Id of the page element that shows the preview."""
    return f"async-preview-{IUUID(context, None) or context.getId()}"


def snippet_url(context):
    """The url of the preview element alone, which pat-push fetches."""
    return f"{context.absolute_url()}/@@async-preview-snippet"


def push_fields(context):
    """Job data that tells the push message where the preview goes."""
    return {SNIPPET_URL_FIELD: snippet_url(context), TARGET_FIELD: target_id(context)}


def generate(context):
    """Make the preview of ``context`` now and store it; return the new state.

    A failed conversion stores :data:`NO_PREVIEW` with its ``reason`` (see
    :func:`no_preview_reason`) and raises nothing: the job is done. Raises
    :class:`~ploneintranet.asynctasks.previews.office.ConverterBusy`, and
    stores nothing, if LibreOffice had no turn for it."""
    name, value = source(context)
    if value is None:
        return None
    stored = PersistentMapping(state=NO_PREVIEW, source=value._p_oid)
    content_type = getattr(value, "contentType", "")
    office = office_format(getattr(value, "filename", ""), content_type)
    if name == "image":
        # plone.namedfile makes the scale and keeps it with the image
        context.restrictedTraverse("@@images").scale(name, scale=SCALE)
        stored["state"] = READY
    elif content_type == "application/pdf":
        stored.update(pdf_preview(value.data))
    elif office is not None:
        stored.update(office_preview(value, office))
    IAnnotations(context)[ANNOTATION_KEY] = stored
    return stored["state"]


def pdf_preview(pdf):
    """``state`` and ``image`` or ``reason`` of the PDF bytes ``pdf``: what the
    site remembers for these bytes, else a new conversion, then remembered."""
    return converted(pdf, hashlib.sha256(pdf).hexdigest(), first_page_png)


def office_preview(file, name):
    """:func:`pdf_preview` of the Office or OpenDocument ``file`` (a
    NamedBlobFile) of format ``name`` (``docx``, ...), remembered by sha256
    and format; a file too large is not even read."""
    try:
        check_size(file.getSize())
    except ConversionFailed as error:
        return {"state": NO_PREVIEW, "reason": str(error)}
    data = file.data
    digest = f"{hashlib.sha256(data).hexdigest()}.{name}"
    return converted(data, digest, functools.partial(office_first_page_png, name=name))


def converted(data, digest, first_page):
    """``state`` and ``image`` or ``reason``: the outcome the site remembers
    under ``digest``, else ``first_page(data)``'s (PNG bytes or
    ``ConversionFailed``), then remembered."""
    known = remembered()["results"].get(digest)
    if known is not None:
        return dict(known)
    try:
        png = first_page(data)
        outcome = {"state": READY, "image": NamedBlobImage(png, filename="preview.png")}
    except ConverterUnavailable as error:
        return {"state": NO_PREVIEW, "reason": str(error)}  # the machine's fault, not the bytes'
    except ConversionFailed as error:
        outcome = {"state": NO_PREVIEW, "reason": str(error)}
    remember(digest, outcome)
    return outcome


def remembered():
    """The site's conversions: ``results`` (sha256 -> outcome) and ``order``
    (``(time, sha256)`` -> sha256, oldest first)."""
    annotations = IAnnotations(api.portal.get())
    store = annotations.get(REMEMBERED_KEY)
    if store is None:
        store = annotations[REMEMBERED_KEY] = PersistentMapping(results=OOBTree(), order=OOBTree())
    return store


def remember(digest, outcome):
    """Keep ``outcome`` for the bytes of ``digest``; beyond
    :data:`REMEMBERED_MAX` outcomes, forget the oldest."""
    store = remembered()
    results, order = store["results"], store["order"]
    results[digest] = outcome
    order[(time.time(), digest)] = digest
    while order and len(results) > REMEMBERED_MAX:
        results.pop(order.pop(order.minKey()), None)


#: What the preview element says while the job runs, and when none could be made.
MAKING = _("Making the preview…")
NO_PREVIEW_TEXT = _("No preview for this file.")


def preview_html(context):
    """The preview element: a placeholder (a ``pat-push`` element whose
    ``data-pat-push`` is its snippet's url) while the job is pending, the
    preview when it is ready, ``""`` if none was ever queued. Its texts are
    in the language of the current request."""
    current = state(context)
    if current is None:
        return ""
    target = escape(target_id(context))
    if current == PENDING:
        return (
            f'<div id="{target}" class="async-preview pending pat-push" '
            f'data-pat-push="{escape(snippet_url(context))}">{escape(translated(MAKING))}</div>'
        )
    if current == NO_PREVIEW:
        return f'<div id="{target}" class="async-preview none">{escape(translated(NO_PREVIEW_TEXT))}</div>'
    title = escape(context.Title() or context.getId())
    if record(context).get("image") is not None:
        src = f"{context.absolute_url()}/@@async-preview-image"
        img = f'<img src="{escape(src)}" alt="{title}" />'
    else:
        img = context.restrictedTraverse("@@images").scale("image", scale=SCALE).tag(alt=title)
    return f'<div id="{target}" class="async-preview ready">{img}</div>'
