"""Code written for upstream's ploneintranet.async / ploneintranet.asynctasks
7.2 runs unchanged: the add-on in ``upstream_addon`` (its own task,
preprocessor, worker view and ZCML, loaded by a real worker with ``-I``) and
each upstream name, used the way upstream's code does."""

from celery.result import AsyncResult
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_ID
from plone.app.testing import FunctionalTesting
from plone.app.testing import PloneSandboxLayer
from plone.app.testing import login
from plone.app.testing import logout
from plone.app.testing import setRoles
from plone.base.interfaces import INavigationRoot
from plone.namedfile.file import NamedBlobImage
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks import testing
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.core import AbstractPost
from ploneintranet.asynctasks.core import AsyncTaskError
from ploneintranet.asynctasks.tasks import Post
from ploneintranet.asynctasks.tests.test_push import PNG
from ploneintranet.asynctasks.tests.test_views import authenticator_in
import ploneintranet.asynctasks.tests.upstream_addon
from ploneintranet.asynctasks.tests.upstream_addon import tasks as addon_tasks
from ploneintranet.asynctasks.tests.upstream_addon.views import NOTE_KEY
import requests
import time
import transaction
from zope.annotation.interfaces import IAnnotations
from zope.interface import alsoProvides


class UpstreamAddonLayer(PloneSandboxLayer):
    defaultBases = (testing.FIXTURE,)

    def setUpZope(self, app, configurationContext):
        self.loadZCML(package=ploneintranet.asynctasks.tests.upstream_addon)


class AddonWorkerLayer(testing.CeleryWorkerLayer):
    """A worker that also knows the add-on's task, as ``celery -I`` loads it."""

    imports = ("ploneintranet.asynctasks.tests.upstream_addon.celerytasks",)


UPSTREAM_ADDON_FIXTURE = UpstreamAddonLayer()
ADDON_WORKER_FIXTURE = AddonWorkerLayer(name="ploneintranet.asynctasks.tests:AddonWorker")
UPSTREAM_ADDON_TESTING = FunctionalTesting(
    bases=(ADDON_WORKER_FIXTURE, UPSTREAM_ADDON_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks.tests:UpstreamAddon",
)


class AddonTestCase(testing.FunctionalTestCase):
    """Upstream's base test case, on the add-on's layer."""

    layer = UPSTREAM_ADDON_TESTING

    def setUp(self):
        super().setUp()
        self.assertTrue(self.redis_running())
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.doc = api.content.create(container=self.portal, type="Document", id="doc", title="Doc")
        api.user.create(email="eddie@example.com", username="eddie", password="secret-eddie")
        api.user.grant_roles(username="eddie", obj=self.doc, roles=["Editor"])
        transaction.commit()
        self.view_url = f"{self.doc.absolute_url()}/@@write-note"
        self.ed = ("eddie", "secret-eddie")

    def note(self):
        transaction.abort()
        return IAnnotations(self.doc).get(NOTE_KEY)

    def http(self, method, url, **kwargs):
        return requests.request(method, url, auth=self.ed, timeout=60, allow_redirects=False, **kwargs)


class TestUpstreamAddon(AddonTestCase):
    def test_the_addon_runs_end_to_end(self):
        response = self.http("GET", f"{self.doc.absolute_url()}/@@queue-note", params={"note": "ported"})
        self.assertEqual(response.status_code, 200, response.text[:300])
        result = AsyncResult(response.text, app=celerytasks.app)
        self.waitfor(result, timeout=30)
        self.assertTrue(result.successful(), result.result)
        self.assertEqual(self.note(), "ported")

    def test_a_get_shows_the_form_with_the_additional_parameters(self):
        page = self.http("GET", self.view_url)
        self.assertEqual(page.status_code, 200)
        self.assertIn('name="note" type="text"', page.text)
        self.assertIn("Run this async job?", page.text)
        # upstream ran the job for any _authenticator, also in a GET
        page = self.http("GET", self.view_url, params={"_authenticator": authenticator_in(page.text), "note": "by GET"})
        self.assertIn("Run this async job?", page.text)
        self.assertIsNone(self.note())

    def test_a_forged_authenticator_writes_nothing(self):
        response = self.http("POST", self.view_url, data={"_authenticator": "f" * 40, "note": "forged"})
        self.assertEqual(response.status_code, 403)
        self.assertIsNone(self.note())

    def test_the_confirmation_form_runs_the_job(self):
        token = authenticator_in(self.http("GET", self.view_url).text)
        response = self.http("POST", self.view_url, data={"_authenticator": token, "note": "by hand"})
        self.assertEqual(response.status_code, 200)
        self.assertIn("Action confirmed and executed.", response.text)
        self.assertEqual(self.note(), "by hand")


class RedirectedNote(addon_tasks.WriteNote):
    """Upstream's url hook, overridden."""

    target = "@@write-note"

    def transform_url(self, url):
        return f"{self.context.absolute_url()}/{self.target}"


class SeedsGeneratePreview(AbstractPost):
    """The seed's preview job: its task and url names."""

    task = celerytasks.generate_and_add_preview
    url = "/@@generate-previews"


class TestUpstreamNames(AddonTestCase):
    def enqueue(self, job_class, **kwargs):
        login(self.portal, "eddie")
        try:
            result = job_class(self.doc, self.request)(url="@@ignored", **kwargs)
            transaction.commit()
            return result
        finally:
            logout()

    def test_transform_url_decides_where_the_job_goes(self):
        result = self.enqueue(RedirectedNote, data={"note": "transformed"})
        self.waitfor(result, timeout=30)
        self.assertEqual(self.note(), "transformed")

    def test_transform_url_cannot_send_a_job_off_site(self):
        class OffSite(RedirectedNote):
            def transform_url(self, url):
                return "http://evil.invalid/@@write-note"

        with self.assertRaises(AsyncTaskError) as raised:
            self.enqueue(OffSite)
        self.assertIn("jobs may not be sent to http://evil.invalid", str(raised.exception))

    def test_add_takes_upstreams_delay(self):
        started = time.monotonic()
        result = celerytasks.add.apply_async((2, 3), {"delay": 1})
        self.waitfor(result, timeout=30)
        self.assertEqual(result.get(), 5)
        self.assertGreaterEqual(time.monotonic() - started, 1)
        self.assertEqual(celerytasks.add(2, 3, delay=0), 5)

    def test_the_seeds_preview_task_and_view(self):
        image = api.content.create(
            container=self.portal,
            type="Image",
            id="photo",
            title="Photo",
            image=NamedBlobImage(PNG, filename="photo.png"),
        )
        api.user.grant_roles(username="eddie", obj=image, roles=["Editor"])
        transaction.commit()
        login(self.portal, "eddie")
        try:
            result = SeedsGeneratePreview(image, self.request)()
            transaction.commit()
        finally:
            logout()
        self.assertEqual(result.get(timeout=30), 200)
        with open(self.layer["celery_log"], errors="replace") as log:
            self.assertIn("/plone/photo/@@generate-previews as eddie -> 200", log.read())
        transaction.abort()
        self.assertEqual(previews.state(image), previews.READY)

    def test_upstreams_status_view_names(self):
        from ploneintranet.asynctasks.browser.status import CheckTaskView
        from ploneintranet.asynctasks.browser.status import StatusView

        view = StatusView(self.portal, self.request)
        self.assertEqual([c["name"] for c in view.run_checks(round_trips=False)][:2], ["credentials", "broker"])
        self.assertIsNone(CheckTaskView(self.portal, self.request).stored_checksum())

    def test_status_views_on_a_subsite(self):
        folder = api.content.create(container=self.portal, type="Folder", id="sub", title="Sub")
        alsoProvides(folder, INavigationRoot)
        transaction.commit()
        owner = (SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
        status = f"{folder.absolute_url()}/@@async-status"
        token = requests.get(status, params={"format": "json"}, auth=owner, timeout=60).json()["authenticator"]
        report = requests.post(status, data={"format": "json", "_authenticator": token}, auth=owner, timeout=60).json()
        self.assertTrue(report["ok"], report)
        transaction.abort()
        self.assertEqual(len(IAnnotations(folder).get("ploneintranet.asynctasks.checksum", "")), 32)


class TestUpstreamIntegrationLayer(testing.IntegrationTestCase):
    def test_a_preprocessor_as_upstreams_tests_make_one(self):
        job = Post(self.portal, self.request)
        self.assertTrue(job.data["_authenticator"])
        self.assertEqual(job.headers["X-celery-task-name"], celerytasks.post.name)


class TestUpstreamFunctionalLayer(testing.FunctionalTestCase):
    def test_a_post_round_trip_as_upstreams_tests_make_one(self):
        self.assertIn(testing.CELERY_FIXTURE, testing.FUNCTIONAL_TESTING.__bases__)
        self.assertTrue(self.redis_running())
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        result = Post(self.portal, self.request)("@@async-checktask", {"checksum": "c0ffee"})
        transaction.commit()
        self.waitfor(result, timeout=30)
        transaction.abort()
        self.assertEqual(IAnnotations(self.portal)[CHECKSUM_KEY], "c0ffee")
