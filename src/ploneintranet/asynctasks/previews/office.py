"""The first page of an Office or OpenDocument file (docx, xlsx, pptx, odt,
ods, odp, rtf): LibreOffice converts it to a PDF of one page, which
:func:`~ploneintranet.asynctasks.previews.convert.first_page_png` renders as
it renders an uploaded PDF.

Every step runs under :func:`~ploneintranet.asynctasks.previews.convert.run_converter`
(no network, ``ASYNC_PREVIEW_TIMEOUT``, ``ASYNC_PREVIEW_MEMORY_MB``, the
process group killed at the end):

1. a file above :data:`MAX_FILE_MB`, or empty, is refused unread;
2. a zipped format is looked into by ``archive_check.py`` in a process of its
   own: more than :data:`MAX_UNPACKED_MB` unpacked (a zip bomb) or macros, and
   LibreOffice never opens it;
3. ``soffice --headless --convert-to pdf``, with a new profile directory in
   the conversion's temporary directory (also its ``HOME`` and ``TMPDIR``,
   removed afterwards) and the import filter of the format forced, so that a
   file is never read as another format than it claims;
4. ``pdftoppm`` renders the page.

At most :data:`CONCURRENT_CONVERSIONS` LibreOffice processes run at once in
one Plone process; a job that waits longer than ``ASYNC_PREVIEW_TIMEOUT``
for its turn raises :class:`ConverterBusy` and is tried again later.

Nothing here knows Zope or Plone.
"""

from collections import namedtuple
import contextlib
import os
from pathlib import Path
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.previews.convert import MIB
from ploneintranet.asynctasks.previews.convert import ConversionFailed
from ploneintranet.asynctasks.previews.convert import first_page_png
from ploneintranet.asynctasks.previews.convert import required
from ploneintranet.asynctasks.previews.convert import run_converter
import sys
import tempfile
import threading


#: The largest file LibreOffice is given; larger ones get no preview unread.
MAX_FILE_MB = 25
#: The most a zipped document may unpack to (its parts' declared sizes).
MAX_UNPACKED_MB = 256
#: LibreOffice processes at once in one Plone process. Each takes a CPU and
#: about 220 MB for a second or more, and a worker instance has few threads:
#: one conversion at a time keeps the others serving jobs and pages; more
#: previews at once call for more worker instances, not more threads. (Each
#: conversion has a profile of its own, so they would not collide: a
#: LibreOffice profile serves one process at a time.)
CONCURRENT_CONVERSIONS = 1
#: The turns of :data:`CONCURRENT_CONVERSIONS`.
SLOTS = threading.BoundedSemaphore(CONCURRENT_CONVERSIONS)
#: The script that looks into an archive, run by this Python without site.
ARCHIVE_CHECK = Path(__file__).with_name("archive_check.py")
#: Export only the first page: a long document costs no more than a short one.
FIRST_PAGE = '{"PageRange":{"type":"string","value":"1"}}'

#: ``filter``: LibreOffice's import filter; ``export``: its PDF export
#: filter; ``zipped``: a zip archive; ``content_types``: what Plone calls it.
Format = namedtuple("Format", "filter export zipped content_types")
OOXML = "application/vnd.openxmlformats-officedocument"
ODF = "application/vnd.oasis.opendocument"
FORMATS = {
    "docx": Format("MS Word 2007 XML", "writer_pdf_Export", True, (f"{OOXML}.wordprocessingml.document",)),
    "xlsx": Format("Calc MS Excel 2007 XML", "calc_pdf_Export", True, (f"{OOXML}.spreadsheetml.sheet",)),
    "pptx": Format(
        "Impress MS PowerPoint 2007 XML", "impress_pdf_Export", True, (f"{OOXML}.presentationml.presentation",)
    ),
    "odt": Format("writer8", "writer_pdf_Export", True, (f"{ODF}.text",)),
    "ods": Format("calc8", "calc_pdf_Export", True, (f"{ODF}.spreadsheet",)),
    "odp": Format("impress8", "impress_pdf_Export", True, (f"{ODF}.presentation",)),
    "rtf": Format("Rich Text Format", "writer_pdf_Export", False, ("application/rtf", "text/rtf", "text/richtext")),
}


class ConverterBusy(Exception):
    """Every LibreOffice turn of this process stayed taken while the job
    waited: nothing is wrong with the file, try again later."""


def office_format(filename, content_type):
    """The key of :data:`FORMATS` of a file named ``filename`` of
    ``content_type``, or ``None`` if LibreOffice does not preview it. The
    content type decides; the extension, when the browser sent none that we
    know (``application/octet-stream``)."""
    for name, known in FORMATS.items():
        if (content_type or "").lower() in known.content_types:
            return name
    extension = os.path.splitext(filename or "")[1].lower().lstrip(".")
    return extension if extension in FORMATS else None


def office_first_page_png(data, name):
    """The first page of the document bytes ``data`` of format ``name`` (a
    key of :data:`FORMATS`) as PNG bytes; raises
    :class:`~ploneintranet.asynctasks.previews.convert.ConversionFailed` why
    not, or :class:`ConverterBusy`."""
    check_size(len(data))
    known = FORMATS[name]
    with tempfile.TemporaryDirectory(prefix="asynctasks-office-") as directory:
        source = f"source.{name}"
        Path(directory, source).write_bytes(data)
        if known.zipped:
            check_archive(directory, source)
        pdf = libreoffice_pdf(directory, source, known)
    return first_page_png(pdf)


def check_size(size):
    """Raise :class:`ConversionFailed` if a file of ``size`` bytes is empty
    or larger than :data:`MAX_FILE_MB`: LibreOffice is not given it."""
    if size == 0:
        raise ConversionFailed("the file is empty")
    if size > MAX_FILE_MB * MIB:
        raise ConversionFailed(
            f"the file has {size / MIB:,.1f} MiB, more than the {MAX_FILE_MB} MiB "
            "LibreOffice is given (previews.office.MAX_FILE_MB)"
        )


def check_archive(directory, source):
    """Raise :class:`ConversionFailed` unless ``archive_check.py`` finds the
    archive ``source`` fit for LibreOffice."""
    verdict = run_converter(
        [sys.executable, "-I", "-S", str(ARCHIVE_CHECK), source, str(MAX_UNPACKED_MB * MIB)],
        directory,
    )
    if verdict != "ok":
        raise ConversionFailed(verdict)


def libreoffice_pdf(directory, source, known):
    """The PDF bytes of the first page of ``source``, made by LibreOffice in
    ``directory`` with a profile of its own there, in its turn."""
    soffice = required("soffice")
    profile = Path(directory, "profile").as_uri()
    command = [
        soffice,
        "--headless",
        "--norestore",
        "--nolockcheck",
        "--nologo",
        "--nodefault",
        f"-env:UserInstallation={profile}",
        f"--infilter={known.filter}",
        "--convert-to",
        f"pdf:{known.export}:{FIRST_PAGE}",
        "--outdir",
        "pdf",
        source,
    ]
    with turn():
        said = run_converter(command, directory)
    try:
        return Path(directory, "pdf", Path(source).with_suffix(".pdf")).read_bytes()
    except FileNotFoundError:
        # soffice says "Error: source file could not be loaded" and exits 0
        raise ConversionFailed(f"soffice made no PDF: {said!r}") from None


@contextlib.contextmanager
def turn():
    """Hold one of :data:`SLOTS` while the block runs; raise
    :class:`ConverterBusy` after waiting ``ASYNC_PREVIEW_TIMEOUT`` seconds."""
    wait = celeryconfig.ASYNC_PREVIEW_TIMEOUT
    if not SLOTS.acquire(timeout=wait):
        raise ConverterBusy(
            f"LibreOffice was busy with other previews for {wait:g} s "
            f"({CONCURRENT_CONVERSIONS} at a time per Plone process): try again later"
        )
    try:
        yield
    finally:
        SLOTS.release()
