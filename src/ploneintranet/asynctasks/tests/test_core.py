"""The engine's Plone side: url resolution, credential capture, enqueueing."""

from datetime import datetime
from datetime import timedelta
from datetime import timezone
from plone import api
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import login
from plone.app.testing import logout
from plone.app.testing import setRoles
from plone.keyring.interfaces import IKeyManager
from plone.protect.authenticator import _verify_request
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks import pas
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.core import AsyncTaskError
from ploneintranet.asynctasks.core import capture_credentials
from ploneintranet.asynctasks.interfaces import IAsyncTask
from ploneintranet.asynctasks.jobqueue import jobs_of_transaction
from ploneintranet.asynctasks.testing import ASYNC_INTEGRATION_TESTING
from ploneintranet.asynctasks.urls import REPLACEMENT_MAPPING_RECORD
from ploneintranet.asynctasks.urls import resolve_url
from ploneintranet.asynctasks.wire import TOKEN_HEADER
from ploneintranet.asynctasks.wire import masked_url
import time
import transaction
import unittest
from zope.component import getUtility
from zope.interface.verify import verifyObject


class CoreTestCase(unittest.TestCase):
    layer = ASYNC_INTEGRATION_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        self.request = self.layer["request"]
        setRoles(self.portal, "test_user_1_", ["Manager"])
        self.portal.invokeFactory("Folder", "folder")
        self.folder = self.portal.folder
        self.request.cookies["__ac"] = "ticket-of-test-user"
        self.request.cookies["_ga"] = "analytics"
        login(self.portal, TEST_USER_NAME)
        # the test request's site is http://nohost: configured as a sysadmin would
        self.configure(ASYNC_ALLOWED_ORIGINS=["http://nohost"])

    def configure(self, **settings):
        """Change celeryconfig settings for this test."""
        for name, value in settings.items():
            self.addCleanup(setattr, celeryconfig, name, getattr(celeryconfig, name))
            setattr(celeryconfig, name, value)

    def tearDown(self):
        transaction.abort()


class TestResolveUrl(CoreTestCase):
    def test_no_url_is_the_context(self):
        self.assertEqual(resolve_url(self.folder, None), "http://nohost/plone/folder")

    def test_relative_urls_are_relative_to_the_context(self):
        for url in ("@@view", "/@@view"):
            self.assertEqual(resolve_url(self.folder, url), "http://nohost/plone/folder/@@view")

    def test_absolute_url_on_the_portal_is_kept(self):
        url = "http://nohost/plone/other/@@view?x=1"
        self.assertEqual(resolve_url(self.folder, url), url)

    def test_other_origins_and_schemes_are_refused(self):
        for url in (
            "http://evil.example/plone/@@view",
            "https://nohost/plone/@@view",
            "http://nohost:8080/plone/@@view",
            "http://evil@nohost/plone/@@view",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://169.254.169.254/latest/meta-data",
        ):
            with self.subTest(url=url), self.assertRaises(AsyncTaskError) as raised:
                resolve_url(self.folder, url)
            self.assertIn("relative", str(raised.exception))

    def test_without_allowed_origins_only_this_machine_on_plones_port(self):
        self.configure(ASYNC_ALLOWED_ORIGINS=[])
        with self.assertRaises(AsyncTaskError) as raised:
            resolve_url(self.folder, "@@view", own_port="80")
        self.assertIn("add it to ASYNC_ALLOWED_ORIGINS", str(raised.exception))
        self.request.setServerURL("http", "localhost", "8080")
        self.assertEqual(
            resolve_url(self.folder, "@@view", own_port="8080"),
            "http://localhost:8080/plone/folder/@@view",
        )
        # another port of this machine is another service, not this Plone
        with self.assertRaises(AsyncTaskError):
            resolve_url(self.folder, "@@view", own_port="9090")

    def test_portal_url_is_moved_to_the_internal_address(self):
        internal = "http://127.0.0.1:8080/VirtualHostBase/http/nohost:80/plone/VirtualHostRoot"
        self.configure(ASYNC_ALLOWED_ORIGINS=["http://nohost", "http://127.0.0.1:8080"])
        api.portal.set_registry_record(REPLACEMENT_MAPPING_RECORD, {"http://nohost/plone": internal})
        self.assertEqual(resolve_url(self.folder, "@@view"), internal + "/folder/@@view")
        # the check is on the public url: the internal one is not accepted as input
        with self.assertRaises(AsyncTaskError):
            resolve_url(self.folder, internal + "/folder/@@view")
        # an internal url that is not allowed is refused too
        self.configure(ASYNC_ALLOWED_ORIGINS=["http://nohost"])
        with self.assertRaises(AsyncTaskError) as raised:
            resolve_url(self.folder, "@@view")
        self.assertIn("http://127.0.0.1:8080", str(raised.exception))


class TestCaptureCredentials(CoreTestCase):
    def test_only_the_auth_cookie_is_taken(self):
        cookies, headers = capture_credentials(self.request)
        self.assertEqual(cookies, {"__ac": "ticket-of-test-user"})
        self.assertEqual(headers, {})

    def test_authorization_header_is_taken(self):
        self.request._auth = "Bearer eyJhbGciOi"
        cookies, headers = capture_credentials(self.request)
        self.assertEqual(headers, {"Authorization": "Bearer eyJhbGciOi"})


class TestAbstractPost(CoreTestCase):
    def test_provides_the_documented_interface(self):
        self.assertTrue(verifyObject(IAsyncTask, tasks.ReindexObject(self.folder, self.request)))

    def test_a_job_carries_a_token_for_its_url_not_the_login(self):
        job = tasks.ReindexObject(self.folder, self.request)
        self.assertEqual((job.cookies, job.headers.get("Authorization")), ({}, None))
        job()
        (queued,) = jobs_of_transaction().jobs.values()
        self.assertEqual(queued.cookies, {})
        secrets = list(getUtility(IKeyManager)[jobtoken.RING])
        token = queued.headers[TOKEN_HEADER]
        self.assertEqual(jobtoken.verify(token, secrets, "/plone/folder/@@reindex_object"), "test_user_1_")
        self.assertIsNone(jobtoken.verify(token, secrets, "/plone/@@reindex_object"))
        self.assertIsNone(
            jobtoken.verify(token, secrets, "/plone/folder/@@reindex_object", now=time.time() + 6 * 3600 + 1)
        )

    def test_without_the_token_plugin_enqueueing_says_to_upgrade(self):
        pas.uninstall(self.portal.acl_users)
        with self.assertRaises(AsyncTaskError) as raised:
            tasks.ReindexObject(self.folder, self.request)
        self.assertIn("upgrade steps", str(raised.exception))

    def test_forwarding_prepares_credentials_authenticator_and_routing_header(self):
        self.configure(ASYNC_CREDENTIALS="forward")
        job = tasks.ReindexObject(self.folder, self.request)
        self.assertEqual(job.cookies, {"__ac": "ticket-of-test-user"})
        self.assertEqual(job.headers["X-celery-task-name"], celerytasks.reindex_object.name)
        self.request.form["_authenticator"] = job.data["_authenticator"]
        self.assertTrue(_verify_request(self.request))

    def test_forwarding_a_logged_in_user_without_credentials_is_an_error(self):
        self.configure(ASYNC_CREDENTIALS="forward")
        del self.request.cookies["__ac"]
        with self.assertRaises(AsyncTaskError) as raised:
            tasks.ReindexObject(self.folder, self.request)
        self.assertIn("test_user_1_", str(raised.exception))

    def test_anonymous_job_needs_no_credentials(self):
        logout()
        del self.request.cookies["__ac"]
        job = tasks.Post(self.folder, self.request)
        self.assertEqual(job.cookies, {})

    def test_data_that_is_not_json_fails_at_enqueue_naming_it(self):
        job = tasks.Post(self.folder, self.request)
        with self.assertRaises(AsyncTaskError) as raised:
            job(url="@@x", data={"items": [1, self.folder]})
        self.assertIn("data['items'][1]", str(raised.exception))

    def test_delay_past_the_visibility_timeout_is_refused(self):
        job = tasks.Post(self.folder, self.request)
        late = datetime.now(timezone.utc) + timedelta(hours=2)
        for options in ({"countdown": 4000}, {"eta": late}):
            with self.subTest(options=options), self.assertRaises(AsyncTaskError) as raised:
                job(url="@@x", **options)
            self.assertIn("ASYNC_VISIBILITY_TIMEOUT", str(raised.exception))
        self.assertTrue(job(url="@@x", countdown=60).id)

    def test_oversized_job_is_refused(self):
        job = tasks.Post(self.folder, self.request)
        with self.assertRaises(AsyncTaskError) as raised:
            job(url="@@x", data={"blob": "x" * 1_000_001})
        self.assertIn("ASYNC_MAX_JOB_BYTES", str(raised.exception))

    def test_identical_jobs_of_a_transaction_share_one_task_id(self):
        first = tasks.ReindexObject(self.folder, self.request)()
        second = tasks.ReindexObject(self.folder, self.request)()
        other = tasks.ReindexObject(self.folder, self.request)(data={"attributes": ["Title"]})
        self.assertEqual(first.id, second.id)
        self.assertNotEqual(first.id, other.id)

    def test_unknown_options_reach_celery(self):
        job = tasks.Post(self.folder, self.request)
        result = job(url="@@x", countdown=5)
        (queued,) = jobs_of_transaction().jobs.values()
        self.assertEqual(queued.options["countdown"], 5)
        self.assertEqual(queued.id, result.id)
        self.assertEqual(queued.url, "http://nohost/plone/folder/@@x")


class TestMaskedUrl(unittest.TestCase):
    def test_password_is_masked_and_the_rest_kept(self):
        self.assertEqual(masked_url("redis://:s3cret@redis.lan:6380/1"), "redis://:***@redis.lan:6380/1")
        self.assertEqual(masked_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0")


class TestJobsOfTransaction(CoreTestCase):
    def test_jobs_queued_after_a_rolled_back_savepoint_are_dropped(self):
        first = tasks.Post(self.folder, self.request)(url="@@first")
        savepoint = transaction.savepoint()
        tasks.Post(self.folder, self.request)(url="@@second")
        self.assertEqual(len(jobs_of_transaction().jobs), 2)
        savepoint.rollback()
        (queued,) = jobs_of_transaction().jobs.values()
        self.assertEqual(queued.id, first.id)

    def test_user_id_outside_latin1_is_quoted_in_the_header(self):
        self.portal.acl_users.userFolderAddUser("jos\u00e9", "secret", ["Member"], [])
        login(self.portal, "jos\u00e9")
        job = tasks.Post(self.folder, self.request)
        self.assertEqual(job.headers["X-Async-User"], "jos%C3%A9")
