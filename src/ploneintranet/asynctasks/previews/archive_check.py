"""Look into an uploaded Office or OpenDocument archive before LibreOffice
opens it: refuse one that unpacks to too much (a zip bomb) or carries macros.

Run as a converter, ``python -I -S archive_check.py FILE LIMIT_BYTES``,
under :func:`~ploneintranet.asynctasks.previews.convert.run_converter`'s
limits, so that the uploader's zip is parsed outside the Zope process. It
needs nothing but the standard library, and prints one line: ``ok``, or why
the file gets no preview.

The sizes checked are those the archive declares; an archive that lies about
them still meets LibreOffice's time and memory limits.
"""

import sys
import zipfile


MIB = 1024 * 1024
OK = "ok"
#: Parts that hold code a document would run: VBA projects (docm, xlsm,
#: pptm, or the same renamed), Excel 4 macro sheets, OpenDocument Basic
#: libraries and scripts.
MACRO_SUFFIXES = ("vbaproject.bin",)
MACRO_PREFIXES = ("basic/", "scripts/", "xl/macrosheets/")


def verdict(path, limit):
    """``ok`` if LibreOffice may open the archive at ``path``, else the
    reason it may not: not a zip, more than ``limit`` bytes unpacked, macros."""
    try:
        with zipfile.ZipFile(path) as package:
            entries = package.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as error:
        return f"not a valid zip archive ({error})"
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > limit:
        return f"it unpacks to {unpacked / MIB:,.0f} MiB, more than the {limit / MIB:,.0f} MiB a preview may unpack"
    for entry in entries:
        name = entry.filename.lower()
        if name.endswith(MACRO_SUFFIXES) or name.startswith(MACRO_PREFIXES):
            return f"it contains macros ({entry.filename[:80]!r}): such documents get no preview"
    return OK


if __name__ == "__main__":
    print(verdict(sys.argv[1], int(sys.argv[2])))
