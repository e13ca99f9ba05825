"""Previews: what the GeneratePreview job makes, what the page shows, and
the limits a converter runs under."""

import hashlib
import io
import os
from PIL import Image
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from plone.namedfile.file import NamedBlobFile
from plone.namedfile.file import NamedBlobImage
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.previews.browser import PreviewViewlet
from ploneintranet.asynctasks.testing import ASYNC_INTEGRATION_TESTING
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_views import authenticator_in
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import transaction
import unittest
import zlib
from zope.interface import alsoProvides
from zope.interface import noLongerProvides


def picture(kind="PNG", colour=(20, 120, 200)):
    out = io.BytesIO()
    Image.new("RGB", (120, 80), colour).save(out, kind)
    return out.getvalue()


def slow_pdf(triangles=20000):
    """A PDF of about 2 KB whose one page takes pdftoppm minutes: thousands of
    overlapping page-sized triangles (10,000 took 49 s on the 2-core machine)."""
    content = zlib.compress(b"0 0 m 600 800 l 600 0 l h B\n" * triangles, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    pdf, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return pdf + b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref


def running(pid):
    """True while process ``pid`` runs (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class CommandsOnPath:
    """Test helpers that change what the converter finds on the PATH."""

    def use_path(self, directory):
        saved = os.environ["PATH"]
        os.environ["PATH"] = directory
        self.addCleanup(os.environ.__setitem__, "PATH", saved)

    def count_runs(self, command="pdftoppm"):
        """Put a ``command`` first on the PATH that counts its runs in a file
        and runs the real one; return a function that reads the count."""
        real = shutil.which(command)
        directory = tempfile.mkdtemp(prefix="asynctasks-test-path-")
        self.addCleanup(shutil.rmtree, directory)
        runs = os.path.join(directory, "runs")
        with open(os.path.join(directory, command), "w") as script:
            script.write(f'#!/bin/sh\necho run >> "{runs}"\nexec "{real}" "$@"\n')
        os.chmod(os.path.join(directory, command), 0o755)
        self.use_path(f"{directory}:{os.environ['PATH']}")

        def count():
            if not os.path.exists(runs):
                return 0
            with open(runs) as lines:
                return len(lines.readlines())

        return count

    def set_timeout(self, seconds):
        saved = celeryconfig.ASYNC_PREVIEW_TIMEOUT
        celeryconfig.ASYNC_PREVIEW_TIMEOUT = seconds
        self.addCleanup(setattr, celeryconfig, "ASYNC_PREVIEW_TIMEOUT", saved)


class TestPreviews(CommandsOnPath, unittest.TestCase):
    layer = ASYNC_INTEGRATION_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.image = api.content.create(
            container=self.portal,
            type="Image",
            id="photo",
            title="Photo",
            image=NamedBlobImage(picture(), filename="photo.png"),
        )
        transaction.savepoint(optimistic=True)  # gives the file an oid

    def add_file(self, data, filename, content_type):
        item = api.content.create(
            container=self.portal,
            type="File",
            id=filename,
            file=NamedBlobFile(data, filename=filename, contentType=content_type),
        )
        transaction.savepoint(optimistic=True)
        return item

    def test_nothing_is_shown_for_an_item_never_queued(self):
        self.assertIsNone(previews.state(self.image))
        self.assertEqual(previews.preview_html(self.image), "")

    def test_a_pending_preview_is_a_placeholder_naming_its_snippet(self):
        previews.mark_pending(self.image)
        html = previews.preview_html(self.image)
        self.assertIn(f'id="{previews.target_id(self.image)}"', html)
        self.assertIn(f'data-pat-push="{self.image.absolute_url()}/@@async-preview-snippet"', html)

    def test_an_image_preview_is_its_preview_scale(self):
        previews.mark_pending(self.image)
        self.assertEqual(previews.generate(self.image), previews.READY)
        html = previews.preview_html(self.image)
        self.assertIn("<img", html)
        self.assertIn("@@images", html)
        self.assertNotIn("data-pat-push", html)

    def test_new_or_replaced_files_need_a_preview_others_not(self):
        self.assertTrue(previews.needs_preview(self.image))
        previews.generate(self.image)
        self.assertFalse(previews.needs_preview(self.image))  # e.g. the title changed
        self.image.image = NamedBlobImage(picture("JPEG"), filename="other.jpg")
        self.assertTrue(previews.needs_preview(self.image))

    def test_a_pdf_preview_is_its_first_page(self):
        pdf = self.add_file(picture("PDF"), "report.pdf", "application/pdf")
        self.assertEqual(previews.generate(pdf), previews.READY)
        image = previews.record(pdf)["image"]
        self.assertEqual(image.data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertIn("@@async-preview-image", previews.preview_html(pdf))

    def test_other_files_have_no_preview(self):
        text = self.add_file(b"just text", "notes.txt", "text/plain")
        self.assertEqual(previews.generate(text), previews.NO_PREVIEW)
        self.assertIn("No preview", previews.preview_html(text))
        self.assertNotIn("data-pat-push", previews.preview_html(text))

    def viewlet(self, item):
        return PreviewViewlet(item, self.layer["request"], None, None).render()

    def test_switched_off_nothing_is_shown_and_the_previews_made_are_kept(self):
        self.assertEqual(previews.generate(self.image), previews.READY)
        shown = self.viewlet(self.image)
        self.assertIn("async-preview ready", shown)
        api.portal.set_registry_record(previews.ENABLED_RECORD, False)
        self.assertFalse(previews.enabled())
        self.assertEqual(self.viewlet(self.image), "")
        self.assertEqual(previews.state(self.image), previews.READY)
        api.portal.set_registry_record(previews.ENABLED_RECORD, True)
        self.assertEqual(self.viewlet(self.image), shown)

    def test_a_site_without_the_switch_makes_and_shows_previews(self):
        # not upgraded to 1003 yet: the record is missing
        del api.portal.get_tool("portal_registry").records[previews.ENABLED_RECORD]
        self.assertTrue(previews.enabled())
        previews.mark_pending(self.image)
        self.assertIn("async-preview pending", self.viewlet(self.image))

    def test_no_job_without_the_add_on_layer_or_without_credentials(self):
        # the test request has neither the browser layer nor a login cookie
        api.content.create(
            container=self.portal,
            type="Image",
            id="quiet",
            image=NamedBlobImage(picture(), filename="quiet.png"),
        )
        self.assertIsNone(previews.state(self.portal["quiet"]))
        alsoProvides(self.layer["request"], IPloneintranetAsyncLayer)
        api.content.create(
            container=self.portal,
            type="Image",
            id="refused",
            image=NamedBlobImage(picture(), filename="refused.png"),
        )
        self.assertIsNone(previews.state(self.portal["refused"]))

    def test_a_file_next_to_an_item_named_image_previews_its_own_file(self):
        # acquisition would find the Image "photo"'s sibling by name
        api.content.create(container=self.portal, type="Document", id="image")
        text = self.add_file(b"just text", "notes.txt", "text/plain")
        self.assertEqual(previews.source(text), ("file", text.file))
        self.assertEqual(previews.source(self.portal["image"]), (None, None))

    def test_the_same_pdf_bytes_are_converted_once(self):
        runs = self.count_runs()
        first = self.add_file(picture("PDF"), "first.pdf", "application/pdf")
        pasted = self.add_file(picture("PDF"), "pasted.pdf", "application/pdf")
        self.assertEqual(previews.generate(first), previews.READY)
        self.assertEqual(previews.generate(pasted), previews.READY)
        self.assertEqual(runs(), 1)
        self.assertEqual(previews.record(pasted)["image"].data[:8], b"\x89PNG\r\n\x1a\n")
        other = self.add_file(picture("PDF", (200, 0, 0)), "other.pdf", "application/pdf")
        self.assertEqual(previews.generate(other), previews.READY)
        self.assertEqual(runs(), 2)  # other bytes, another conversion

    def test_a_pdf_too_slow_to_render_is_a_final_no_preview_for_its_bytes(self):
        self.set_timeout(1)
        runs = self.count_runs()
        slow = self.add_file(slow_pdf(), "slow.pdf", "application/pdf")
        again = self.add_file(slow_pdf(), "again.pdf", "application/pdf")
        started = time.monotonic()
        self.assertEqual(previews.generate(slow), previews.NO_PREVIEW)
        self.assertEqual(previews.generate(again), previews.NO_PREVIEW)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(runs(), 1)  # the stored timeout is not tried again
        self.assertIn("ASYNC_PREVIEW_TIMEOUT", previews.no_preview_reason(again))
        self.assertIn("No preview", previews.preview_html(again))

    def test_the_site_remembers_a_bounded_number_of_conversions(self):
        self.patch_remembered_max(2)
        colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
        for number, colour in enumerate(colours):
            item = self.add_file(picture("PDF", colour), f"{number}.pdf", "application/pdf")
            previews.generate(item)
        results = previews.remembered()["results"]
        self.assertEqual(len(results), 2)
        self.assertNotIn(hashlib.sha256(picture("PDF", colours[0])).hexdigest(), results)

    def test_without_a_network_namespace_no_converter_runs_and_nothing_is_remembered(self):
        directory = tempfile.mkdtemp(prefix="asynctasks-test-path-")
        self.addCleanup(shutil.rmtree, directory)
        for command in ("prlimit", "pdftoppm"):  # all but unshare
            os.symlink(shutil.which(command), os.path.join(directory, command))
        self.use_path(directory)
        pdf = self.add_file(picture("PDF"), "report.pdf", "application/pdf")
        self.assertEqual(previews.generate(pdf), previews.NO_PREVIEW)
        self.assertIn("apt-get install util-linux", previews.no_preview_reason(pdf))
        self.assertEqual(len(previews.remembered()["results"]), 0)

    def patch_remembered_max(self, value):
        saved = previews.REMEMBERED_MAX
        previews.REMEMBERED_MAX = value
        self.addCleanup(setattr, previews, "REMEMBERED_MAX", saved)


class TestRunConverter(unittest.TestCase):
    """What :func:`previews.run_converter` guarantees, with real commands."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-test-converter-")
        self.addCleanup(shutil.rmtree, self.directory)

    def python(self, code):
        return [sys.executable, "-I", "-c", code]

    def test_a_command_above_the_memory_limit_fails(self):
        allocate = self.python("bytearray(300 * 2**20)")
        previews.run_converter(allocate, self.directory, timeout=20, memory_mb=1024)
        with self.assertRaises(previews.ConversionFailed) as failed:
            previews.run_converter(allocate, self.directory, timeout=20, memory_mb=150)
        self.assertIn("MemoryError", str(failed.exception))
        self.assertIn("ASYNC_PREVIEW_MEMORY_MB", str(failed.exception))

    def test_a_command_gets_no_network(self):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(0)
            connect = self.python(
                f"import socket; socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=5)"
            )
            subprocess.run(connect, check=True, timeout=20)  # outside, it connects
            listener.accept()[0].close()
            with self.assertRaises(previews.ConversionFailed) as failed:
                previews.run_converter(connect, self.directory, timeout=20)
            self.assertIn("Network is unreachable", str(failed.exception))
            with self.assertRaises(BlockingIOError):
                listener.accept()

    def test_a_command_past_its_time_is_killed_with_its_children(self):
        sleeper = ["sh", "-c", "sleep 60 & echo $! > child; sleep 60"]
        started = time.monotonic()
        with self.assertRaises(previews.ConversionFailed) as failed:
            previews.run_converter(sleeper, self.directory, timeout=2)
        self.assertLess(time.monotonic() - started, 7)
        self.assertIn("took longer than 2 s (ASYNC_PREVIEW_TIMEOUT)", str(failed.exception))
        with open(os.path.join(self.directory, "child")) as child:
            pid = int(child.read())
        wait_until(lambda: not running(pid), 5, message=f"the sleeping child {pid} to end")


class TestSwitch(PipelineTestCase):
    """The site administrator's switch, with uploads that really queue jobs
    (the request has the add-on's layer and a logged-in user) and the worker."""

    def upload(self, name):
        """Add an Image ``name`` in this request and commit; return it."""
        image = api.content.create(
            container=self.portal,
            type="Image",
            id=name,
            image=NamedBlobImage(picture(), filename=f"{name}.png"),
        )
        transaction.commit()
        return image

    def page(self, item):
        """The HTML of the item's page (its url alone would give the image)."""
        response = self.get(f"{item.absolute_url()}/view", auth=self.owner)
        self.assertEqual(response.status_code, 200)
        self.assertIn(f"{item.getId()}.png", response.text)  # the item's own page
        return response.text

    def test_switched_off_an_upload_queues_no_job_and_on_again_it_does(self):
        alsoProvides(self.layer["request"], IPloneintranetAsyncLayer)
        api.portal.set_registry_record(previews.ENABLED_RECORD, False)
        transaction.commit()
        off = self.upload("off")
        self.assertIsNone(previews.state(off))
        self.assertNotIn("async-preview", self.page(off))  # no placeholder

        api.portal.set_registry_record(previews.ENABLED_RECORD, True)
        transaction.commit()
        on = self.upload("on")
        self.assertEqual(previews.state(on), previews.PENDING)
        self.wait_for(lambda: previews.state(self.fresh(on)) == previews.READY, "the preview of /plone/on")
        self.assertIn("async-preview ready", self.page(on))
        # the job for "on" ran; none was ever queued for "off", uploaded first
        log = self.celery_log()
        self.assertIn("/plone/on/@@async-generate-preview", log)
        self.assertNotIn("/plone/off/", log)
        self.assertIsNone(previews.state(self.fresh(off)))
        self.assertNotIn("async-preview", self.page(off))


class TestPreviewViews(CommandsOnPath, PipelineTestCase):
    """The preview views over HTTP: 404 where they do not apply, and a
    conversion out of time is a job done, answered at once."""

    def test_preview_views_answer_404_where_they_do_not_apply(self):
        folder = api.content.create(container=self.portal, type="Folder", id="folder")
        transaction.commit()
        contexts = [self.portal, folder, self.doc, self.portal.portal_catalog, self.portal.acl_users]
        for context in contexts:
            for view in ("@@async-preview-snippet", "@@async-preview-image"):
                url = f"{context.absolute_url()}/{view}"
                with self.subTest(url=url):
                    self.assertEqual(self.get(url, auth=self.owner).status_code, 404)

    def test_the_snippet_of_an_image_is_found(self):
        image = api.content.create(
            container=self.portal,
            type="Image",
            id="photo",
            image=NamedBlobImage(picture(), filename="photo.png"),
        )
        transaction.commit()
        url = f"{image.absolute_url()}/@@async-preview-snippet"
        self.assertEqual(self.get(url, auth=self.owner).status_code, 200)

    def test_a_pdf_out_of_time_is_a_finished_job_without_preview(self):
        self.set_timeout(1)
        # this test sends the job itself: the upload queues none to run alongside
        noLongerProvides(self.layer["request"], IPloneintranetAsyncLayer)
        item = api.content.create(
            container=self.portal,
            type="File",
            id="slow.pdf",
            file=NamedBlobFile(slow_pdf(), filename="slow.pdf", contentType="application/pdf"),
        )
        transaction.commit()
        self.assertIsNone(previews.state(item))
        url = f"{self.portal_url}/slow.pdf/@@async-generate-preview"
        token = authenticator_in(self.get(url, auth=self.owner).text)
        started = time.monotonic()
        with self.assertLogs("ploneintranet.asynctasks", "WARNING") as logged:
            response = self.post(url, auth=self.owner, data={"_authenticator": token})
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual((response.status_code, response.text), (200, "preview none"))
        self.assertEqual(
            [line for line in logged.output if "slow.pdf" in line],
            [
                "WARNING:ploneintranet.asynctasks:no preview of /plone/slow.pdf: pdftoppm took "
                "longer than 1 s (ASYNC_PREVIEW_TIMEOUT) and was killed"
            ],
        )
        item = self.fresh(self.portal)["slow.pdf"]
        self.assertIn("took longer than 1 s", previews.no_preview_reason(item))
