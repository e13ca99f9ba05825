"""Previews: what the GeneratePreview job makes, and what the page shows."""

import io
from PIL import Image
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from plone.namedfile.file import NamedBlobFile
from plone.namedfile.file import NamedBlobImage
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.testing import ASYNC_INTEGRATION_TESTING
import shutil
import transaction
import unittest
from zope.interface import alsoProvides


def picture(kind="PNG"):
    out = io.BytesIO()
    Image.new("RGB", (120, 80), (20, 120, 200)).save(out, kind)
    return out.getvalue()


class TestPreviews(unittest.TestCase):
    layer = ASYNC_INTEGRATION_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.image = api.content.create(
            container=self.portal, type="Image", id="photo", title="Photo",
            image=NamedBlobImage(picture(), filename="photo.png"),
        )
        transaction.savepoint(optimistic=True)  # gives the file an oid

    def add_file(self, data, filename, content_type):
        item = api.content.create(
            container=self.portal, type="File", id=filename,
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

    @unittest.skipUnless(shutil.which("pdftoppm"), "pdftoppm is not installed (make chromium)")
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

    def test_no_job_without_the_add_on_layer_or_without_credentials(self):
        # the test request has neither the browser layer nor a login cookie
        api.content.create(
            container=self.portal, type="Image", id="quiet",
            image=NamedBlobImage(picture(), filename="quiet.png"),
        )
        self.assertIsNone(previews.state(self.portal["quiet"]))
        alsoProvides(self.layer["request"], IPloneintranetAsyncLayer)
        api.content.create(
            container=self.portal, type="Image", id="refused",
            image=NamedBlobImage(picture(), filename="refused.png"),
        )
        self.assertIsNone(previews.state(self.portal["refused"]))
