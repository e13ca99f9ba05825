"""A broker outage does not block editing: an Image uploaded through Plone's
add form while Redis is stopped is saved, its preview job waits in the site's
outbox, and the preview is made once Redis is back
(:mod:`ploneintranet.asynctasks.outbox`)."""

from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import outbox
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_previews import picture
import re
from unittest import mock


class TestUploadWhileRedisIsDown(PipelineTestCase):
    def add_image(self, title, data):
        """Add an Image through Plone's add form, as an editor's browser does;
        return the response (a redirect to the new item when it was saved)."""
        form_url = f"{self.portal_url}/++add++Image"
        page = self.get(form_url, auth=self.owner)
        self.assertEqual(page.status_code, 200, page.text[:500])
        token = re.search(r'<input[^>]*name="_authenticator"[^>]*>', page.text).group(0)
        fields = {
            "_authenticator": re.search(r'value="([0-9a-f]+)"', token).group(1),
            "form.buttons.save": "Save",
        }
        title_field = re.search(r'name="(form\.widgets\.[\w.]*title)"', page.text).group(1)
        fields[title_field] = title
        return self.post(
            form_url,
            auth=self.owner,
            data=fields,
            files={"form.widgets.image": ("picture.png", data, "image/png")},
        )

    def test_the_upload_is_saved_and_its_preview_made_after_redis_is_back(self):
        with mock.patch.object(celeryconfig, "ASYNC_OUTBOX_RETRY", 0):
            REDIS_SERVER_FIXTURE.stop_server()
            try:
                saved = self.add_image("Uploaded while down", picture())
                self.assertEqual(saved.status_code, 302, saved.text[:500])
                # the new item's url, or its /view
                item_id = saved.headers["Location"].removesuffix("/view").rstrip("/").rsplit("/", 1)[-1]
                image = self.fresh(self.portal)[item_id]
                self.assertEqual(image.Title(), "Uploaded while down")
                self.assertEqual(previews.state(image), previews.PENDING)
                self.assertEqual(outbox.waiting(self.fresh(self.portal))[0], 1)
                status = self.get(f"{self.portal_url}/@@async-status?format=json", auth=self.owner)
                self.assertEqual(status.status_code, 503)
                waiting = {c["name"]: c for c in status.json()["checks"]}["waiting jobs"]
                self.assertEqual(waiting["status"], "WARN")
                self.assertRegex(waiting["message"], r"^1 job\(s\) of saves made while the broker")
            finally:
                REDIS_SERVER_FIXTURE.start_server()
            # the first request after Redis is back sends the waiting job
            self.assertEqual(self.get(self.portal_url, auth=self.owner).status_code, 200)
        self.wait_for(
            lambda: previews.state(self.fresh(image)) == previews.READY,
            f"the preview of {image.absolute_url()}",
        )
        self.assertEqual(outbox.waiting(self.fresh(self.portal)), (0, None))
        self.assertIn(f"{image.absolute_url_path()}/@@async-generate-preview", self.celery_log())
