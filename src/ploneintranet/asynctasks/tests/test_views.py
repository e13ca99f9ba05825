"""Worker views keep CSRF protection: only a verified POST writes."""

from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.tests.base import PipelineTestCase
import re
import transaction
from zope.annotation.interfaces import IAnnotations


def authenticator_in(html):
    match = re.search(r'name="_authenticator"\s+value="([0-9a-f]+)"', html)
    return match and match.group(1)


class TestReindexObjectView(PipelineTestCase):
    def setUp(self):
        super().setUp()
        self.doc.title = "Walrus memo"  # changed without reindexing
        transaction.commit()
        self.url = f"{self.doc_url}/@@reindex_object"

    def test_get_renders_a_confirmation_form_and_writes_nothing(self):
        response = self.get(self.url, auth=self.owner)
        self.assertEqual(response.status_code, 200)
        self.assertIn("Run this async job?", response.text)
        self.assertTrue(authenticator_in(response.text))
        self.assertEqual(self.catalog_titles("Walrus"), [])

    def test_post_without_authenticator_writes_nothing(self):
        response = self.post(self.url, auth=self.owner, data={"attributes": "Title"})
        self.assertEqual(response.status_code, 200)
        self.assertIn("Run this async job?", response.text)
        # the form carries the posted fields on, for the user to confirm
        self.assertIn('name="attributes" value="Title"', response.text)
        self.assertEqual(self.catalog_titles("Walrus"), [])

    def test_post_with_forged_authenticator_is_refused(self):
        response = self.post(self.url, auth=self.owner, data={"_authenticator": "f" * 40})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.catalog_titles("Walrus"), [])

    def test_confirming_the_form_runs_the_job(self):
        form = self.get(self.url, auth=self.owner)
        token = authenticator_in(form.text)
        response = self.post(self.url, auth=self.owner, data={"_authenticator": token, "attributes": "Title"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.text, "reindexed")
        self.assertEqual(self.catalog_titles("Walrus"), ["Walrus memo"])

    def test_anonymous_is_sent_to_login(self):
        response = self.post(self.url, data={"_authenticator": "f" * 40})
        self.assertIn(response.status_code, (302, 401))
        self.assertEqual(self.catalog_titles("Walrus"), [])


class TestCheckTaskView(PipelineTestCase):
    def test_verified_post_stores_the_checksum_and_get_shows_it(self):
        url = f"{self.portal_url}/@@async-checktask"
        token = authenticator_in(self.get(url, auth=self.owner).text)
        response = self.post(url, auth=self.owner, data={"_authenticator": token, "checksum": "c0ffee"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY), "c0ffee")
        self.assertIn("c0ffee", self.get(url, auth=self.owner).text)

    def test_forged_post_stores_nothing(self):
        url = f"{self.portal_url}/@@async-checktask"
        response = self.post(url, auth=self.owner, data={"_authenticator": "0" * 40, "checksum": "bad"})
        self.assertEqual(response.status_code, 403)
        self.assertIsNone(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY))
