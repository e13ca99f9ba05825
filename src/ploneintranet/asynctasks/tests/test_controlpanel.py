"""Site Setup > Async tasks: the per-site settings in a form, the settings
of the environment read-only beside them."""

import lxml.html
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from plone.testing.zope import Browser
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.previews.settings import ENABLED_RECORD
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.tests.restapi_layers import RESTAPI_TESTING
from ploneintranet.asynctasks.urls import REPLACEMENT_MAPPING_RECORD
import requests
import transaction
import unittest
from urllib.parse import urlsplit


MAPPING = "form.widgets.portal_url_replacement_mapping"


class TestControlPanel(unittest.TestCase):
    layer = RESTAPI_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.portal_url = self.portal.absolute_url()
        self.panel_url = f"{self.portal_url}/@@async-tasks-controlpanel"
        self.browser = Browser(self.layer["app"])
        self.browser.handleErrors = False
        self.browser.addHeader("Authorization", f"Basic {SITE_OWNER_NAME}:{SITE_OWNER_PASSWORD}")

    def environment(self):
        """The read-only table: ``{setting: (value, status)}``."""
        page = lxml.html.fromstring(self.browser.contents)
        rows = page.xpath('//table[@id="async-environment-settings"]/tbody/tr')
        return {
            row.xpath("string(th)").strip(): (row.xpath("string(td[1])").strip(), row.xpath("string(td[2])").strip())
            for row in rows
        }

    def test_site_setup_links_to_it(self):
        self.browser.open(f"{self.portal_url}/@@overview-controlpanel")
        self.browser.getLink("Async tasks").click()
        self.assertEqual(self.browser.url, self.panel_url)
        self.assertIn("Portal url replacement mapping", self.browser.contents)
        self.assertIn("Make previews of uploaded Images and Files", self.browser.contents)

    def test_the_environment_is_shown_beside_the_form(self):
        self.browser.open(self.panel_url)
        environment = self.environment()
        redis_url = self.layer["redis_url"]
        self.assertEqual(environment["Broker (BROKER_URL)"], (f"reachable at {redis_url}", "OK"))
        self.assertEqual(environment["Result backend (CELERY_RESULT_BACKEND)"], (redis_url, ""))
        worker, status = environment["Celery worker"]
        self.assertEqual(status, "OK")
        self.assertRegex(worker, r"^1 answered: asynctasks-test-\d+-\d+@localhost$")
        self.assertEqual(environment["Queues (ASYNC_QUEUES)"][0].split(", ")[0], "celery")
        self.assertIn("ASYNC_ALLOWED_ORIGINS", environment["Jobs may go to"][0])
        # read-only: the form has no field of them
        names = self.form_names()
        self.assertIn("form.widgets.previews_enabled:list", names)
        self.assertIn(f"{MAPPING}.count", names)
        self.assertEqual(
            [
                name
                for name in names
                if any(word in name.lower() for word in ("broker", "backend", "worker", "queue", "origin"))
            ],
            [],
        )

    def form_names(self):
        page = lxml.html.fromstring(self.browser.contents)
        return set(page.xpath('//form[@id="form"]//*[@name]/@name'))

    def test_the_broker_password_is_masked(self):
        saved = celerytasks.app.conf.broker_url
        secret = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
        celerytasks.app.conf.broker_url = secret
        try:
            self.browser.open(self.panel_url)
        finally:
            celerytasks.app.conf.broker_url = saved
        self.assertNotIn("s3cret", self.browser.contents)
        broker, status = self.environment()["Broker (BROKER_URL)"]
        self.assertEqual(status, "FAIL")
        self.assertIn("redis://:***@127.0.0.1:", broker)
        self.assertEqual(self.environment()["Celery worker"], ("not asked: the broker is unreachable", "FAIL"))

    def test_saving_the_form_changes_the_records(self):
        self.browser.open(self.panel_url)
        self.browser.getControl(name="form.widgets.previews_enabled:list").controls[0].selected = False
        self.browser.getControl(name=f"{MAPPING}.buttons.add").click()
        port = urlsplit(self.portal_url).port  # jobs may go to this machine, on Plone's port
        internal = f"http://127.0.0.1:{port}/VirtualHostBase/https/intranet.example.com:443/plone/VirtualHostRoot"
        self.browser.getControl(name=f"{MAPPING}.key.0").value = "https://intranet.example.com"
        self.browser.getControl(name=f"{MAPPING}.0").value = internal
        self.browser.getControl(name="form.buttons.save").click()
        self.assertIn("Changes saved", self.browser.contents)
        transaction.abort()
        self.assertIs(api.portal.get_registry_record(ENABLED_RECORD), False)
        self.assertEqual(
            api.portal.get_registry_record(REPLACEMENT_MAPPING_RECORD),
            {"https://intranet.example.com": internal},
        )

    def test_a_mapping_jobs_could_not_use_is_refused_with_what_to_do(self):
        self.browser.open(self.panel_url)
        self.browser.getControl(name=f"{MAPPING}.buttons.add").click()
        self.browser.getControl(name=f"{MAPPING}.key.0").value = "https://intranet.example.com"
        self.browser.getControl(name=f"{MAPPING}.0").value = "http://evil.example/plone"
        self.browser.getControl(name="form.buttons.save").click()
        self.assertNotIn("Changes saved", self.browser.contents)
        self.assertIn("jobs may not be sent to http://evil.example", self.browser.contents)
        self.assertIn("add that origin to ASYNC_ALLOWED_ORIGINS", self.browser.contents)
        transaction.abort()
        self.assertEqual(api.portal.get_registry_record(REPLACEMENT_MAPPING_RECORD), {})

    def test_a_site_administrator_may_not_open_it(self):
        api.user.create(email="sam@example.com", username="sam", password="secret-sam", roles=["Site Administrator"])
        transaction.commit()
        response = requests.get(self.panel_url, auth=("sam", "secret-sam"), timeout=60, allow_redirects=False)
        self.assertIn(response.status_code, (302, 401, 403))
        self.assertNotIn("Portal url replacement mapping", response.text)
