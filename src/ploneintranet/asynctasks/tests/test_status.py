"""``@@async-status`` proves the deployment works, for people and monitors."""

from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import pas
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_views import authenticator_in
import redis
import time
import transaction
from zope.annotation.interfaces import IAnnotations


CHECKS = ["credentials", "broker", "waiting jobs", "worker", "task round trip", "http round trip", "lost jobs"]


class TestAsyncStatus(PipelineTestCase):
    def status(self, method="GET", **form):
        return getattr(self, method.lower())(
            f"{self.portal_url}/@@async-status",
            auth=self.owner,
            **({"params": form} if method == "GET" else {"data": form}),
        )

    def test_json_reports_every_check_ok(self):
        report = self.status(format="json").json()
        token = report["authenticator"]
        response = self.status("POST", format="json", _authenticator=token)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.headers["Content-Type"], "application/json")
        report = response.json()
        self.assertEqual([c["name"] for c in report["checks"]], CHECKS)
        self.assertEqual([c["status"] for c in report["checks"]], ["OK"] * len(CHECKS), report)
        self.assertIs(report["ok"], True)
        self.assertIs(report["round_trips"], True)
        self.assertIn(self.layer["redis_url"].rsplit("/", 1)[0], report["checks"][1]["message"])
        # the round trip really wrote through the worker view
        self.assertEqual(len(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY, "")), 32)

    def test_a_get_sends_no_job(self):
        """A link to the view (the page or its JSON) queues nothing: the round
        trips carry the Manager's identity, so they need a POST."""
        IAnnotations(self.portal).pop(CHECKSUM_KEY, None)
        transaction.commit()
        for form in ({}, {"format": "json"}):
            response = self.status(**form)
            self.assertEqual(response.status_code, 200, response.text)
        report = response.json()
        self.assertIs(report["ok"], True)
        self.assertIs(report["round_trips"], False)
        self.assertEqual(
            [c["status"] for c in report["checks"]],
            ["OK", "OK", "OK", "OK", "NOT RUN", "NOT RUN", "OK"],
            report,
        )
        self.assertIsNone(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY))

    def test_a_post_with_a_forged_authenticator_is_refused(self):
        IAnnotations(self.portal).pop(CHECKSUM_KEY, None)
        transaction.commit()
        for form in ({}, {"_authenticator": "f" * 40}):
            response = self.status("POST", format="json", **form)
            self.assertEqual(response.status_code, 403, response.text[:300])
        self.assertIsNone(IAnnotations(self.fresh(self.portal)).get(CHECKSUM_KEY))

    def test_html_shows_every_check(self):
        page = self.status()
        self.assertEqual(page.status_code, 200)
        self.assertIn("All checks OK so far", page.text)
        self.assertEqual(page.text.count('class="async-check-status">NOT RUN<'), 2)
        token = authenticator_in(page.text)
        response = self.status("POST", _authenticator=token)
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
        self.assertEqual([c["status"] for c in report["checks"][3:]], ["FAIL"] * 4)

    def test_needs_manage_portal(self):
        member = self.add_user("member")
        response = self.get(f"{self.portal_url}/@@async-status?format=json", auth=member)
        self.assertIn(response.status_code, (302, 401, 403))

    def test_a_job_being_sent_again_is_a_warning(self):
        client = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        # what a sweep notes for a job found neither waiting nor taken
        client.hset(ledger.JOBS, "vanished-job", "{}")
        client.hset(ledger.MISSING, "vanished-job", time.time())
        try:
            response = self.get(f"{self.portal_url}/@@async-status?format=json", auth=self.owner)
        finally:
            client.hdel(ledger.JOBS, "vanished-job")
            client.hdel(ledger.MISSING, "vanished-job")
            client.close()
        self.assertEqual(response.status_code, 503)
        lost = response.json()["checks"][-1]
        self.assertEqual(lost["name"], "lost jobs")
        self.assertEqual(lost["status"], "WARN")
        # the status view's own http round trip may still be in flight
        self.assertRegex(lost["message"], r"^1 of \d+ job\(s\) in flight vanished")

    def test_a_site_without_the_job_token_plugin_is_told_to_upgrade(self):
        pas.uninstall(self.portal.acl_users)
        transaction.commit()
        report = self.status(format="json").json()
        credentials = report["checks"][0]
        self.assertEqual(credentials["status"], "FAIL", report)
        self.assertIn("run the upgrade steps", credentials["message"])
