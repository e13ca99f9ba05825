"""``@@async-status`` proves the deployment works, for people and monitors."""

from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from zope.annotation.interfaces import IAnnotations


CHECKS = ["credentials", "broker", "worker", "task round trip", "http round trip"]


class TestAsyncStatus(PipelineTestCase):
    def test_json_reports_every_check_ok(self):
        response = self.get(f"{self.portal_url}/@@async-status?format=json", auth=self.owner)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.headers["Content-Type"], "application/json")
        report = response.json()
        self.assertEqual([c["name"] for c in report["checks"]], CHECKS)
        self.assertEqual(
            [c["status"] for c in report["checks"]], ["OK"] * len(CHECKS), report
        )
        self.assertIs(report["ok"], True)
        self.assertIn(self.layer["redis_url"].rsplit("/", 1)[0], report["checks"][1]["message"])
        # the round trip really wrote through the worker view
        self.assertEqual(
            len(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY, "")), 32
        )

    def test_html_shows_every_check(self):
        response = self.get(f"{self.portal_url}/@@async-status", auth=self.owner)
        self.assertEqual(response.status_code, 200)
        self.assertIn("All checks OK", response.text)
        self.assertEqual(response.text.count('class="async-check-status">OK<'), len(CHECKS))

    def test_unreachable_broker_fails_with_503_and_says_where(self):
        saved = celerytasks.app.conf.broker_url
        closed = f"redis://127.0.0.1:{free_port()}/0"
        celerytasks.app.conf.broker_url = closed
        try:
            response = self.get(f"{self.portal_url}/@@async-status?format=json", auth=self.owner)
        finally:
            celerytasks.app.conf.broker_url = saved
        self.assertEqual(response.status_code, 503)
        report = response.json()
        self.assertIs(report["ok"], False)
        broker = report["checks"][1]
        self.assertEqual(broker["status"], "FAIL")
        self.assertIn(closed, broker["message"])
        self.assertIn("BROKER_URL", broker["message"])
        self.assertEqual([c["status"] for c in report["checks"][2:]], ["FAIL"] * 3)

    def test_needs_manage_portal(self):
        member = self.add_user("member")
        response = self.get(f"{self.portal_url}/@@async-status?format=json", auth=member)
        self.assertIn(response.status_code, (302, 401, 403))
