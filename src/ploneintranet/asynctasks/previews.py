"""Previews of Images and Files, made in the background by the
:class:`~ploneintranet.asynctasks.tasks.GeneratePreview` job.

Until the job ran, the item's view shows a placeholder (see
:mod:`ploneintranet.asynctasks.browser.preview`); the job's ``done`` push
message makes the browser fetch the finished preview in its place. An Image's
preview is an image scale (``preview``, made by plone.namedfile); a PDF's is
its first page, rendered by ``pdftoppm``.

Whoever may upload chooses the bytes a converter reads, so
:func:`run_converter` runs it without network and within
``ASYNC_PREVIEW_TIMEOUT`` and ``ASYNC_PREVIEW_MEMORY_MB``. A conversion that
fails or runs out of time is a final "no preview", and the site remembers each
outcome by the sha256 of the bytes: the same bytes are converted once.
"""

from Acquisition import aq_base
from BTrees.OOBTree import OOBTree
import hashlib
from html import escape
import math
import os
from persistent.mapping import PersistentMapping
from plone import api
from plone.app.contenttypes.interfaces import IFile
from plone.app.contenttypes.interfaces import IImage
from plone.namedfile.file import NamedBlobImage
from plone.uuid.interfaces import IUUID
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.push.messages import SNIPPET_URL_FIELD
from ploneintranet.asynctasks.push.messages import TARGET_FIELD
import shutil
import signal
import subprocess
import tempfile
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
MIB = 1024 * 1024
#: ``unshare`` options for a network namespace of its own, tried in turn:
#: as root, then inside a user namespace (any user, where the kernel allows).
UNSHARE_OPTIONS = (("--net",), ("--map-current-user", "--net"))
#: Debian packages of the commands we run, for the error that one is missing.
PACKAGES = {"pdftoppm": "poppler-utils", "prlimit": "util-linux", "unshare": "util-linux"}


class ConversionFailed(Exception):
    """A converter made nothing of these bytes: it ran out of time, hit a
    limit or failed; the message says which. The same bytes fail again."""


class ConverterUnavailable(ConversionFailed):
    """This machine cannot run the converter safely (a command is missing or
    no network namespace is allowed); the message says what to change."""


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
    """Make the preview of ``context`` now and store it; return the new state.

    A failed conversion stores :data:`NO_PREVIEW` with its ``reason`` (see
    :func:`no_preview_reason`) and raises nothing: the job is done."""
    name, value = source(context)
    if value is None:
        return None
    stored = PersistentMapping(state=NO_PREVIEW, source=value._p_oid)
    if name == "image":
        # plone.namedfile makes the scale and keeps it with the image
        context.restrictedTraverse("@@images").scale(name, scale=SCALE)
        stored["state"] = READY
    elif getattr(value, "contentType", "") == "application/pdf":
        stored.update(pdf_preview(value.data))
    IAnnotations(context)[ANNOTATION_KEY] = stored
    return stored["state"]


def pdf_preview(pdf):
    """``state`` and ``image`` or ``reason`` of the PDF bytes ``pdf``: what the
    site remembers for these bytes, else a new conversion, then remembered."""
    digest = hashlib.sha256(pdf).hexdigest()
    known = remembered()["results"].get(digest)
    if known is not None:
        return dict(known)
    try:
        png = first_page_png(pdf)
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
        store = annotations[REMEMBERED_KEY] = PersistentMapping(
            results=OOBTree(), order=OOBTree()
        )
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


def first_page_png(pdf):
    """The first page of the PDF bytes ``pdf`` as PNG bytes, rendered by
    ``pdftoppm`` under :func:`run_converter`; raises :class:`ConversionFailed`."""
    with tempfile.TemporaryDirectory(prefix="asynctasks-preview-") as directory:
        with open(os.path.join(directory, "source.pdf"), "wb") as out:
            out.write(pdf)
        run_converter(
            ["pdftoppm", "-png", "-f", "1", "-l", "1", "-scale-to", "800",
             "-singlefile", "source.pdf", "page"],
            directory,
        )
        try:
            with open(os.path.join(directory, "page.png"), "rb") as page:
                return page.read()
        except FileNotFoundError:
            raise ConversionFailed("pdftoppm finished but made no page") from None


def run_converter(argv, directory, timeout=None, memory_mb=None):
    """Run the converter command ``argv`` in ``directory``, as befits a
    program reading bytes an uploader chose: in a network namespace of its own
    (no network), with at most ``memory_mb`` MiB of address space and as much
    file size, ``timeout`` seconds and as many of CPU time, no core dump.

    ``timeout`` and ``memory_mb`` default to ``celeryconfig``'s
    ``ASYNC_PREVIEW_TIMEOUT`` and ``ASYNC_PREVIEW_MEMORY_MB``. On timeout the
    command's whole process group is killed. Returns once it exited with
    status 0; raises :class:`ConversionFailed` saying why otherwise, and
    :class:`ConverterUnavailable` if a command or the namespace is missing.
    """
    timeout = celeryconfig.ASYNC_PREVIEW_TIMEOUT if timeout is None else timeout
    memory_mb = celeryconfig.ASYNC_PREVIEW_MEMORY_MB if memory_mb is None else memory_mb
    name, program = os.path.basename(argv[0]), required(argv[0])
    # limits by prlimit(1) and a session by setsid: no preexec_fn in threaded Zope
    limits = [f"--as={memory_mb * MIB}", f"--fsize={memory_mb * MIB}",
              f"--cpu={math.ceil(timeout) + 1}", "--core=0"]
    command = [*no_network_prefix(), required("prlimit"), *limits, "--",
               program, *argv[1:]]
    with tempfile.TemporaryFile() as output:  # a file: a chatty converter fills no pipe
        process = subprocess.Popen(
            command, cwd=directory, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ConversionFailed(
                f"{name} took longer than {timeout:g} s (ASYNC_PREVIEW_TIMEOUT) and was killed"
            ) from None
        finally:
            kill_group(process)
        if status != 0:
            raise ConversionFailed(failure(name, status, memory_mb, last_line(output)))


def no_network_prefix():
    """``unshare`` and the options that run a command in a network namespace
    of its own here (only a loopback device, down); raises
    :class:`ConverterUnavailable` if this machine allows none."""
    unshare = required("unshare")
    for options in UNSHARE_OPTIONS:
        probe = subprocess.run(
            [unshare, *options, "true"], stdin=subprocess.DEVNULL,
            capture_output=True, timeout=10, check=False,
        )
        if probe.returncode == 0:
            return [unshare, *options, "--"]
    raise ConverterUnavailable(
        "cannot run a converter without network here "
        f"({probe.stderr.decode(errors='replace').strip()}): run Plone as root, or let "
        "its user create user namespaces (sysctl user.max_user_namespaces above 0; "
        "a container needs a seccomp profile that allows unshare)"
    )


def required(command):
    """The path of ``command``; raises :class:`ConverterUnavailable` naming its
    Debian package if it is not installed."""
    path = shutil.which(command)
    if path is None:
        package = PACKAGES.get(os.path.basename(command), "the package that has it")
        raise ConverterUnavailable(f"{command} is not installed: apt-get install {package}")
    return path


def kill_group(process):
    """Kill what is left of the process group that ``process`` leads; reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it exited and left nothing behind
    process.wait()


def last_line(output):
    """The last line the converter wrote to the file ``output``, at most 200 characters."""
    output.seek(max(0, output.seek(0, os.SEEK_END) - 2000))
    lines = output.read().decode(errors="replace").strip().splitlines()
    return lines[-1][-200:] if lines else ""


def failure(name, status, memory_mb, last):
    """Why the converter ``name`` that ended with ``status`` made nothing."""
    if status == -signal.SIGXCPU:
        return f"{name} used more CPU time than ASYNC_PREVIEW_TIMEOUT allows and was killed"
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    hint = ""
    if status < 0 or "memory" in last.lower() or "alloc" in last.lower():
        hint = f"; the limit of {memory_mb} MiB (ASYNC_PREVIEW_MEMORY_MB) may be too small"
    return f"{name} {how}: {last!r}{hint}"


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
