"""Previews of Office and OpenDocument files (``previews/office.py``): the
first page LibreOffice makes of each format, and hostile files that end in
"no preview" within the time limit, with nothing written but that state and
no process left behind.

Needs LibreOffice's ``soffice`` (``make libreoffice``); without it these
tests fail, saying how to install it.
"""

import hashlib
import io
import os
from PIL import Image
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from plone.namedfile.file import NamedBlobFile
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.previews import office
from ploneintranet.asynctasks.testing import ASYNC_INTEGRATION_TESTING
from ploneintranet.asynctasks.tests import office_files
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.office_files import CONTENT_TYPES
from ploneintranet.asynctasks.tests.test_previews import CommandsOnPath
from ploneintranet.asynctasks.tests.test_views import authenticator_in
import shutil
import socket
import tempfile
import time
import transaction
import unittest
from zope.interface import noLongerProvides


SOFFICE_MISSING = (
    "soffice (LibreOffice) is missing: run 'make libreoffice', or as root: apt-get install "
    "--no-install-recommends libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui"
)
#: Processes of a conversion: none may outlive it.
CONVERTERS = {"soffice", "soffice.bin", "oosplash", "pdftoppm"}
#: Where the macro of the hostile document would leave its mark.
MACRO_MARK = "/tmp/asynctasks-macro-ran"


def require_soffice():
    """Fail (never skip) with how to install LibreOffice if it is missing."""
    if shutil.which("soffice") is None:
        raise RuntimeError(SOFFICE_MISSING)


def converter_processes(marker):
    """``pid: command line`` of the live processes that are LibreOffice or
    ``pdftoppm``, or whose command line contains ``marker``."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                name, _, rest = stat.read().partition(" (")[2].rpartition(")")
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if rest.split()[0] in ("Z", "X"):  # ended, not reaped yet
            continue
        if name in CONVERTERS or marker in command:
            found[int(pid)] = command
    return found


def dark_pixels(png):
    """How many pixels of the PNG bytes ``png`` are darker than mid-grey."""
    image = Image.open(io.BytesIO(png)).convert("L")
    return sum(count for level, count in enumerate(image.histogram()) if level < 128)


class OfficeTestCase(CommandsOnPath, unittest.TestCase):
    layer = ASYNC_INTEGRATION_TESTING

    def setUp(self):
        require_soffice()
        self.portal = self.layer["portal"]
        setRoles(self.portal, TEST_USER_ID, ["Manager"])

    def add_file(self, data, filename, content_type):
        item = api.content.create(
            container=self.portal,
            type="File",
            id=filename,
            file=NamedBlobFile(data, filename=filename, contentType=content_type),
        )
        transaction.savepoint(optimistic=True)  # gives the file an oid
        return item

    def listener(self):
        """A loopback socket that records connections, the stand-in for
        every address a document may name; return it and its url."""
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0)
        self.addCleanup(listener.close)
        return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/leak.png"

    def assertNoConnection(self, listener):
        with self.assertRaises(BlockingIOError, msg="a converter reached the network"):
            listener.accept()


class TestFormats(unittest.TestCase):
    def test_the_content_type_decides_and_the_extension_helps_out(self):
        self.assertEqual(office.office_format("memo.docx", CONTENT_TYPES["docx"]), "docx")
        self.assertEqual(office.office_format("memo.bin", CONTENT_TYPES["ods"]), "ods")
        self.assertEqual(office.office_format("memo.docx", "application/octet-stream"), "docx")
        self.assertEqual(office.office_format("memo.RTF", ""), "rtf")
        self.assertIsNone(office.office_format("memo.doc", "application/msword"))
        self.assertIsNone(office.office_format("notes.txt", "text/plain"))


class TestOfficePreviews(OfficeTestCase):
    def test_each_format_gets_its_first_page(self):
        for name, make in office_files.DOCUMENTS.items():
            with self.subTest(name):
                item = self.add_file(make(), f"sample.{name}", CONTENT_TYPES[name])
                self.assertEqual(previews.generate(item), previews.READY, previews.no_preview_reason(item))
                png = previews.record(item)["image"].data
                self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
                self.assertGreater(dark_pixels(png), 50, "the page shows no text")
                self.assertIn("@@async-preview-image", previews.preview_html(item))

    def test_a_document_sent_as_octet_stream_is_known_by_its_extension(self):
        item = self.add_file(office_files.docx(), "memo.docx", "application/octet-stream")
        self.assertEqual(previews.generate(item), previews.READY)

    def test_the_same_document_is_converted_once(self):
        runs = self.count_runs("soffice")
        first = self.add_file(office_files.odt(), "first.odt", CONTENT_TYPES["odt"])
        copy = self.add_file(office_files.odt(), "copy.odt", CONTENT_TYPES["odt"])
        self.assertEqual(previews.generate(first), previews.READY)
        self.assertEqual(previews.generate(copy), previews.READY)
        self.assertEqual(runs(), 1)

    def test_a_document_past_the_time_limit_is_killed(self):
        self.set_timeout(0.3)  # LibreOffice takes about a second to start
        item = self.add_file(office_files.rtf(), "slow.rtf", CONTENT_TYPES["rtf"])
        started = time.monotonic()
        self.assertEqual(previews.generate(item), previews.NO_PREVIEW)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("soffice took longer than 0.3 s (ASYNC_PREVIEW_TIMEOUT)", previews.no_preview_reason(item))
        self.assertEqual(converter_processes("asynctasks-office-"), {})

    def test_a_file_above_the_size_limit_is_not_given_to_libreoffice(self):
        runs = self.count_runs("soffice")
        self.patch(office, "MAX_FILE_MB", 1)
        big = office_files.archive({"word/media/noise.bin": os.urandom(2 * 1024 * 1024)})
        item = self.add_file(big, "big.docx", CONTENT_TYPES["docx"])
        self.assertEqual(previews.generate(item), previews.NO_PREVIEW)
        self.assertIn("more than the 1 MiB LibreOffice is given", previews.no_preview_reason(item))
        self.assertEqual(runs(), 0)

    def test_a_document_does_not_reach_the_network_it_links_to(self):
        listener, url = self.listener()
        item = self.add_file(office_files.linked_odt(url), "linked.odt", CONTENT_TYPES["odt"])
        # LibreOffice fetches a linked image (an OPTIONS request, then GET) if it can
        self.assertEqual(previews.generate(item), previews.READY)
        self.assertNoConnection(listener)

    def test_without_soffice_no_preview_and_nothing_remembered(self):
        directory = tempfile.mkdtemp(prefix="asynctasks-test-path-")
        self.addCleanup(shutil.rmtree, directory)
        for command in ("unshare", "prlimit", "true", "pdftoppm"):  # all but soffice
            os.symlink(shutil.which(command), os.path.join(directory, command))
        self.use_path(directory)
        item = self.add_file(office_files.docx(), "memo.docx", CONTENT_TYPES["docx"])
        self.assertEqual(previews.generate(item), previews.NO_PREVIEW)
        self.assertIn(
            "soffice is not installed: apt-get install libreoffice-writer-nogui", previews.no_preview_reason(item)
        )
        self.assertEqual(len(previews.remembered()["results"]), 0)  # converts once installed

    def test_while_libreoffice_is_busy_a_job_waits_then_gives_up_storing_nothing(self):
        self.set_timeout(1)
        item = self.add_file(office_files.docx(), "memo.docx", CONTENT_TYPES["docx"])
        previews.mark_pending(item)
        self.assertTrue(office.SLOTS.acquire(timeout=30))  # another conversion's turn
        try:
            started = time.monotonic()
            with self.assertRaises(previews.ConverterBusy) as busy:
                previews.generate(item)
            self.assertGreaterEqual(time.monotonic() - started, 1)
        finally:
            office.SLOTS.release()
        self.assertIn("try again later", str(busy.exception))
        self.assertEqual(previews.state(item), previews.PENDING)
        self.set_timeout(20)  # time for LibreOffice itself
        self.assertEqual(previews.generate(item), previews.READY)  # its turn came

    def patch(self, owner, name, value):
        saved = getattr(owner, name)
        setattr(owner, name, value)
        self.addCleanup(setattr, owner, name, saved)


class TestHostileFiles(OfficeTestCase):
    """Each hostile file ends in "no preview" within ``ASYNC_PREVIEW_TIMEOUT``,
    with nothing written but that state, and no process left behind."""

    def hostile_files(self, url):
        """``(name, bytes, filename, why)``: ``why`` is in the reason stored."""
        return [
            (
                "corrupt docx",
                office_files.corrupt_docx(),
                "corrupt.docx",
                "soffice made no PDF: 'Error: source file could not be loaded'",
            ),
            ("docx that is no zip", office_files.docx()[:300], "truncated.docx", "not a valid zip archive"),
            ("zip bomb", office_files.zip_bomb_docx(), "bomb.docx", "it unpacks to 1,024 MiB, more than the 256 MiB"),
            (
                "external link and macro",
                office_files.linked_odt(url, macro=True),
                "macro.odt",
                "it contains macros ('Basic/Standard/Module1.xml')",
            ),
            (
                "password-protected",
                office_files.encrypted_odt(),
                "secret.odt",
                "soffice made no PDF: 'Error: source file could not be loaded'",
            ),
            ("0 bytes", b"", "empty.docx", "the file is empty"),
        ]

    def test_hostile_files_end_in_no_preview_leaving_nothing(self):
        listener, url = self.listener()
        scratch = tempfile.mkdtemp(prefix="asynctasks-test-scratch-")
        self.addCleanup(shutil.rmtree, scratch, True)
        self.addCleanup(setattr, tempfile, "tempdir", tempfile.tempdir)
        tempfile.tempdir = scratch  # every conversion's directory, its HOME and TMPDIR
        profile = os.path.expanduser("~/.config/libreoffice")
        had_profile = os.path.exists(profile)
        for name, data, filename, why in self.hostile_files(url):
            with self.subTest(name):
                item = self.add_file(data, filename, CONTENT_TYPES[filename.rpartition(".")[2]])
                started = time.monotonic()
                self.assertEqual(previews.generate(item), previews.NO_PREVIEW)
                self.assertLess(time.monotonic() - started, celeryconfig.ASYNC_PREVIEW_TIMEOUT)
                stored = previews.record(item)
                self.assertIn(why, stored["reason"])
                self.assertEqual(set(stored), {"state", "source", "reason"})  # no image
                self.assertIn("No preview for this file.", previews.preview_html(item))
                self.assertEqual(item.file.data, data)
                digest = f"{hashlib.sha256(data).hexdigest()}.{filename.rpartition('.')[2]}"
                known = previews.remembered()["results"].get(digest)
                if data:  # remembered for these bytes; an empty file is refused by its size
                    self.assertEqual(dict(known), {"state": previews.NO_PREVIEW, "reason": stored["reason"]})
                else:
                    self.assertIsNone(known)
                self.assertEqual(os.listdir(scratch), [], "a conversion left files behind")
                self.assertEqual(converter_processes(scratch), {}, "a conversion left processes")
        self.assertNoConnection(listener)
        self.assertFalse(os.path.exists(MACRO_MARK), "the document's macro ran")
        self.assertEqual(os.path.exists(profile), had_profile, "LibreOffice wrote to ~/.config")


class TestOfficePreviewJob(CommandsOnPath, PipelineTestCase):
    """``@@async-generate-preview`` of an Office document over HTTP."""

    def setUp(self):
        require_soffice()
        super().setUp()
        # these tests send the job themselves: the upload queues none alongside
        noLongerProvides(self.layer["request"], IPloneintranetAsyncLayer)

    def add_file(self, data, filename):
        item = api.content.create(
            container=self.portal,
            type="File",
            id=filename,
            file=NamedBlobFile(data, filename=filename, contentType=CONTENT_TYPES[filename.rpartition(".")[2]]),
        )
        transaction.commit()
        self.assertIsNone(previews.state(item))
        return f"{item.absolute_url()}/@@async-generate-preview"

    def send(self, url):
        token = authenticator_in(self.get(url, auth=self.owner).text)
        return self.post(url, auth=self.owner, data={"_authenticator": token})

    def test_a_corrupt_document_is_a_finished_job_and_one_log_line(self):
        url = self.add_file(office_files.corrupt_docx(), "corrupt.docx")
        with self.assertLogs("ploneintranet.asynctasks", "INFO") as logged:
            response = self.send(url)
        self.assertEqual((response.status_code, response.text), (200, "preview none"))
        self.assertEqual(
            [line for line in logged.output if "corrupt.docx" in line],
            [
                "WARNING:ploneintranet.asynctasks:no preview of /plone/corrupt.docx: soffice made "
                "no PDF: 'Error: source file could not be loaded'"
            ],
        )

    def test_a_job_that_finds_libreoffice_busy_is_answered_503_to_be_retried(self):
        self.set_timeout(1)
        url = self.add_file(office_files.docx(), "memo.docx")
        self.assertTrue(office.SLOTS.acquire(timeout=30))
        try:
            response = self.send(url)
        finally:
            office.SLOTS.release()
        self.assertEqual(response.status_code, 503)
        self.assertIn("LibreOffice was busy with other previews for 1 s", response.text)
        self.assertIsNone(previews.state(self.fresh(self.portal)["memo.docx"]))
        self.set_timeout(20)  # time for LibreOffice itself
        self.assertEqual(self.send(url).text, "preview ready")
