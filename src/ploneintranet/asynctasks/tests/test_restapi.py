"""plone.restapi, as Volto uses it: a JWT from ``@login``, a ``PATCH`` with
``Authorization: Bearer ...`` whose save queues a job, and ``@async-status``."""

from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.tests import restapi_addon
from ploneintranet.asynctasks.tests.restapi_layers import RESTAPI_TESTING
from ploneintranet.asynctasks.tests.test_status import CHECKS
import requests
import transaction
import unittest


#: What a GET answers when all is well: the round trips send jobs, so they wait for a POST.
GET_STATUSES = ["OK", "OK", "OK", "OK", "NOT RUN", "NOT RUN", "OK"]


class RestApiTestCase(unittest.TestCase):
    """Users ``alice`` (may edit the Document ``memo``), ``bob`` (a Member)
    and ``boss`` (a Manager), each with the password ``secret-<name>``."""

    layer = RESTAPI_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        self.portal_url = self.portal.absolute_url()
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.doc = api.content.create(container=self.portal, type="Document", id="memo", title="Memo")
        for name, roles in (("alice", ["Member"]), ("bob", ["Member"]), ("boss", ["Manager"])):
            api.user.create(email=f"{name}@example.com", username=name, password=f"secret-{name}", roles=roles)
        api.user.grant_roles(username="alice", obj=self.doc, roles=["Editor"])
        transaction.commit()
        self.doc_url = self.doc.absolute_url()
        del restapi_addon.JOB_REQUESTS[:]
        del restapi_addon.QUEUED[:]

    def login(self, name):
        """A JWT for ``name`` from plone.restapi's ``@login``, as Volto gets one."""
        response = requests.post(
            f"{self.portal_url}/@login",
            timeout=60,
            headers={"Accept": "application/json"},
            json={"login": name, "password": f"secret-{name}"},
        )
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()["token"]

    def call(self, method, url, token=None, **kwargs):
        """A REST request with the JWT ``token`` as Bearer, as Volto sends it."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, url, headers=headers, timeout=60, allow_redirects=False, **kwargs)


class TestBearerJobs(RestApiTestCase):
    def test_a_bearer_patch_queues_a_job_that_runs_as_its_user(self):
        token = self.login("alice")
        response = self.call("PATCH", self.doc_url, token, json={"title": "Walrus memo"})
        self.assertEqual(response.status_code, 204, response.text)
        self.assertEqual(len(set(restapi_addon.QUEUED)), 1, "the save queued no job, or more than one")
        result = celerytasks.app.AsyncResult(restapi_addon.QUEUED[0])
        self.assertEqual(result.get(timeout=30), 200)

        # the worker's POST reached the worker view as alice, after her save committed
        self.assertEqual(
            restapi_addon.JOB_REQUESTS,
            [
                {
                    "url": f"{self.doc_url}/@@reindex_object",
                    "task": celerytasks.reindex_object.name,
                    "user": "alice",
                    "title": "Walrus memo",
                }
            ],
        )
        transaction.abort()
        brains = self.portal.portal_catalog.unrestrictedSearchResults(Title="Walrus")
        self.assertEqual([brain.Title for brain in brains], ["Walrus memo"])

    def test_a_bearer_patch_without_the_right_to_edit_queues_nothing(self):
        response = self.call("PATCH", self.doc_url, self.login("bob"), json={"title": "Walrus memo"})
        self.assertEqual(response.status_code, 401, response.text)
        self.assertEqual(restapi_addon.QUEUED, [])


class TestAsyncStatusService(RestApiTestCase):
    def status(self, token=None):
        return self.call("GET", f"{self.portal_url}/@async-status", token)

    def test_a_manager_gets_the_checks_of_the_status_page(self):
        token = self.login("boss")
        response = self.status(token)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.headers["Content-Type"], "application/json")
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        report = response.json()
        self.assertEqual(sorted(report), ["authenticator", "checks", "ok", "round_trips"])
        self.assertEqual([check["name"] for check in report["checks"]], CHECKS)
        self.assertEqual([check["status"] for check in report["checks"]], GET_STATUSES, report)
        self.assertIs(report["ok"], True)
        self.assertIs(report["round_trips"], False)
        self.assertIn(self.layer["redis_url"].rsplit("/", 1)[0], report["checks"][1]["message"])

        # the page's JSON, with the same token, is the same report
        page = self.call("GET", f"{self.portal_url}/@@async-status?format=json", token).json()
        self.assertEqual(
            [(c["name"], c["status"]) for c in page["checks"]],
            [(c["name"], c["status"]) for c in report["checks"]],
        )
        # and the answer's authenticator runs the round trips there, as documented
        response = self.call(
            "POST",
            f"{self.portal_url}/@@async-status",
            token,
            data={"format": "json", "_authenticator": report["authenticator"]},
        )
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual([c["status"] for c in response.json()["checks"]], ["OK"] * len(CHECKS))

    def test_503_when_a_check_fails(self):
        saved = celerytasks.app.conf.broker_url
        closed = f"redis://127.0.0.1:{free_port()}/0"
        celerytasks.app.conf.broker_url = closed
        try:
            response = self.status(self.login("boss"))
        finally:
            celerytasks.app.conf.broker_url = saved
        self.assertEqual(response.status_code, 503, response.text)
        report = response.json()
        self.assertIs(report["ok"], False)
        self.assertEqual([c["status"] for c in report["checks"]], ["OK", "FAIL", "OK"] + ["FAIL"] * 4)
        self.assertIn(closed, report["checks"][1]["message"])

    def test_a_member_and_anonymous_are_refused(self):
        for token in (self.login("bob"), None):
            response = self.status(token)
            self.assertIn(response.status_code, (401, 403), response.text)
            self.assertNotIn("checks", response.text)


class TestControlpanelsEndpoint(RestApiTestCase):
    """``@controlpanels/async-tasks``: Site Setup > Async tasks for Volto."""

    def panel_url(self):
        return f"{self.portal_url}/@controlpanels/async-tasks"

    def test_a_manager_reads_and_changes_the_settings(self):
        token = self.login("boss")
        listing = self.call("GET", f"{self.portal_url}/@controlpanels", token).json()
        self.assertIn(
            {"title": "Async tasks", "group": "Add-on Configuration"},
            [{"title": panel["title"], "group": panel["group"]} for panel in listing],
        )
        panel = self.call("GET", self.panel_url(), token).json()
        self.assertEqual(panel["data"], {"portal_url_replacement_mapping": {}, "previews_enabled": True})
        self.assertEqual(sorted(panel["schema"]["properties"]), ["portal_url_replacement_mapping", "previews_enabled"])
        internal = self.portal_url.replace("localhost", "127.0.0.1")
        response = self.call(
            "PATCH",
            self.panel_url(),
            token,
            json={
                "previews_enabled": False,
                "portal_url_replacement_mapping": {"https://intranet.example.com": internal},
            },
        )
        self.assertEqual(response.status_code, 204, response.text)
        transaction.abort()
        self.assertIs(api.portal.get_registry_record("ploneintranet.asynctasks.previews_enabled"), False)
        self.assertEqual(
            api.portal.get_registry_record("ploneintranet.asynctasks.portal_url_replacement_mapping"),
            {"https://intranet.example.com": internal},
        )

    def test_a_mapping_to_a_url_jobs_may_not_go_to_is_refused(self):
        response = self.call(
            "PATCH",
            self.panel_url(),
            self.login("boss"),
            json={"portal_url_replacement_mapping": {"https://intranet.example.com": "http://evil.example"}},
        )
        self.assertEqual(response.status_code, 400, response.text)
        self.assertIn("jobs may not be sent to http://evil.example", response.text)
        transaction.abort()
        self.assertEqual(api.portal.get_registry_record("ploneintranet.asynctasks.portal_url_replacement_mapping"), {})

    def test_a_site_administrator_may_not_read_or_change_them(self):
        api.user.create(email="sam@example.com", username="sam", password="secret-sam", roles=["Site Administrator"])
        transaction.commit()
        token = self.login("sam")
        listing = self.call("GET", f"{self.portal_url}/@controlpanels", token)
        self.assertEqual(listing.status_code, 200, listing.text)
        self.assertNotIn("Async tasks", [panel["title"] for panel in listing.json()])
        self.assertIn(self.call("GET", self.panel_url(), token).status_code, (401, 403))
        response = self.call("PATCH", self.panel_url(), token, json={"previews_enabled": False})
        self.assertIn(response.status_code, (401, 403), response.text)
        transaction.abort()
        self.assertIs(api.portal.get_registry_record("ploneintranet.asynctasks.previews_enabled"), True)
