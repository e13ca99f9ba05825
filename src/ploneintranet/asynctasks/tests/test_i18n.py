"""Translations: ``@@async-status`` and the control panel in Dutch and German,
negotiated from the browser's ``Accept-Language``, in Classic UI and through
plone.restapi; and the catalogs in sync with the code."""

import lxml.html
from pathlib import Path
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.restapi_layers import RESTAPI_TESTING
from ploneintranet.asynctasks.tests.test_status import CHECKS
import requests
import subprocess
import sys
import transaction
import unittest


CHECKOUT = Path(__file__).resolve().parents[4]

#: What the page says in each language: the table's head, the check names,
#: the statuses of a GET (the round trips not run), the summary, the button.
PAGES = {
    "nl": {
        "head": ["Controle", "Status", "Details"],
        "titles": [
            "inloggegevens",
            "broker",
            "wachtende jobs",
            "worker",
            "roundtrip van een taak",
            "HTTP-roundtrip",
            "verloren jobs",
        ],
        "statuses": ["OK", "OK", "OK", "OK", "NIET UITGEVOERD", "NIET UITGEVOERD", "OK"],
        "summary": "Alle controles tot nu toe in orde: voer de roundtrips uit om een job van begin tot eind te testen",
        "button": "Roundtrips uitvoeren",
        "broker": "bereikbaar op ",
    },
    "de": {
        "head": ["Prüfung", "Status", "Details"],
        "titles": [
            "Anmeldedaten",
            "Broker",
            "wartende Jobs",
            "Worker",
            "Task-Roundtrip",
            "HTTP-Roundtrip",
            "verlorene Jobs",
        ],
        "statuses": ["OK", "OK", "OK", "OK", "NICHT AUSGEFÜHRT", "NICHT AUSGEFÜHRT", "OK"],
        "summary": (
            "Alle Prüfungen bisher OK: führen Sie die Roundtrips aus, um einen Job von Anfang bis Ende zu testen"
        ),
        "button": "Roundtrips ausführen",
        "broker": "erreichbar unter ",
    },
    "en": {
        "head": ["Check", "Status", "Details"],
        "titles": CHECKS,
        "statuses": ["OK", "OK", "OK", "OK", "NOT RUN", "NOT RUN", "OK"],
        "summary": "All checks OK so far: run the round trips to test a job end to end",
        "button": "Run the round trips",
        "broker": "reachable at ",
    },
}


def offer_languages():
    """English, Dutch and German, the browser's language chosen, as a site
    administrator sets it up in Site Setup > Language."""
    api.portal.set_registry_record("plone.available_languages", ["en", "nl", "de"])
    api.portal.set_registry_record("plone.use_request_negotiation", True)
    transaction.commit()


class TestTranslatedPages(PipelineTestCase):
    """The Classic UI pages in the browser's language."""

    def setUp(self):
        super().setUp()
        offer_languages()

    def open(self, view, language, **params):
        response = self.get(
            f"{self.portal_url}/{view}",
            auth=self.owner,
            params=params,
            headers={"Accept-Language": language},
        )
        self.assertEqual(response.status_code, 200, response.text[:500])
        return response

    def test_the_status_page_in_each_language(self):
        for language, expected in PAGES.items():
            with self.subTest(language=language):
                page = lxml.html.fromstring(self.open("@@async-status", language).text)
                table = page.get_element_by_id("async-status-checks")
                rows = table.xpath("tbody/tr")
                self.assertEqual([th.text_content().strip() for th in table.xpath("thead//th")], expected["head"])
                self.assertEqual([row.xpath("string(td[1])") for row in rows], expected["titles"])
                self.assertEqual([row.xpath("string(td[2])").strip() for row in rows], expected["statuses"])
                self.assertTrue(rows[1].xpath("string(td[3])").startswith(expected["broker"]))
                self.assertEqual(page.get_element_by_id("async-status-summary").text_content(), expected["summary"])
                self.assertEqual(page.xpath('string(//form[@id="async-status-run"]//button)'), expected["button"])
                # what scripts and styles use stays the same in every language
                self.assertEqual([row.get("data-check") for row in rows], CHECKS)
                self.assertEqual(
                    [row.get("class") for row in rows],
                    [f"async-check-{status}" for status in PAGES["en"]["statuses"]],
                )

    def test_the_json_keeps_what_monitors_parse_in_english(self):
        redis_url = self.layer["redis_url"].rsplit("/", 1)[0]
        for language in ("nl", "de"):
            with self.subTest(language=language):
                report = self.open("@@async-status", language, format="json").json()
                self.assertIs(report["ok"], True)
                checks = report["checks"]
                self.assertEqual([check["name"] for check in checks], CHECKS)
                self.assertEqual([check["status"] for check in checks], PAGES["en"]["statuses"])
                self.assertEqual(checks[1]["message"], f"reachable at {redis_url}/0")
                # and what people read in their language
                self.assertEqual([check["title"] for check in checks], PAGES[language]["titles"])
                self.assertEqual(checks[1]["text"], PAGES[language]["broker"] + f"{redis_url}/0")

    def test_the_control_panel_in_dutch(self):
        page = lxml.html.fromstring(self.open("@@async-tasks-controlpanel", "nl").text)
        self.assertEqual(page.xpath("string(//h1)").strip(), "Asynchrone taken")
        labels = " ".join(page.xpath('//form[@id="form"]//label//text()'))
        self.assertIn("Vervanging van de portal-url", labels)
        self.assertIn("Voorbeelden maken van geüploade afbeeldingen en bestanden", labels)
        section = page.get_element_by_id("async-environment")
        self.assertEqual(section.xpath("string(h2)"), "Ingesteld door de omgeving")
        rows = section.xpath(".//tbody/tr")
        self.assertEqual(
            [row.xpath("string(th)") for row in rows],
            [
                "Broker (BROKER_URL)",
                "Resultaat-backend (CELERY_RESULT_BACKEND)",
                "Celery-worker",
                "Wachtrijen (ASYNC_QUEUES)",
                "Toegestane bestemmingen van jobs",
            ],
        )
        self.assertTrue(rows[0].xpath("string(td[1])").startswith("bereikbaar op redis://"))
        self.assertEqual(rows[2].xpath("string(td[2])").strip(), "OK")


class TestTranslatedRestApi(unittest.TestCase):
    """What Volto gets through plone.restapi, in the browser's language."""

    layer = RESTAPI_TESTING

    def setUp(self):
        self.portal_url = self.layer["portal"].absolute_url()
        setRoles(self.layer["portal"], TEST_USER_ID, ["Manager"])
        api.user.create(email="baas@example.com", username="baas", password="secret-baas", roles=["Manager"])
        offer_languages()
        response = requests.post(
            f"{self.portal_url}/@login",
            json={"login": "baas", "password": "secret-baas"},
            headers={"Accept": "application/json"},
            timeout=60,
        )
        self.assertEqual(response.status_code, 200, response.text)
        self.headers = {"Accept": "application/json", "Authorization": f"Bearer {response.json()['token']}"}

    def call(self, method, path, language, **kwargs):
        headers = dict(self.headers, **{"Accept-Language": language})
        return requests.request(method, f"{self.portal_url}/{path}", headers=headers, timeout=60, **kwargs)

    def test_async_status_in_dutch(self):
        report = self.call("GET", "@async-status", "nl").json()
        self.assertEqual([check["name"] for check in report["checks"]], CHECKS)
        self.assertEqual([check["title"] for check in report["checks"]], PAGES["nl"]["titles"])
        self.assertEqual(report["checks"][4]["status"], "NOT RUN")
        self.assertTrue(report["checks"][4]["message"].startswith("sends a job: press Run the round trips"))
        self.assertTrue(report["checks"][4]["text"].startswith("stuurt een job: druk op Roundtrips uitvoeren"))

    def test_the_control_panel_in_german(self):
        listing = self.call("GET", "@controlpanels", "de").json()
        self.assertIn("Asynchrone Aufgaben", [panel["title"] for panel in listing])
        schema = self.call("GET", "@controlpanels/async-tasks", "de").json()["schema"]["properties"]
        self.assertEqual(schema["portal_url_replacement_mapping"]["title"], "Ersetzung der Portal-URL")
        self.assertEqual(schema["previews_enabled"]["title"], "Vorschauen hochgeladener Bilder und Dateien erstellen")
        refused = self.call(
            "PATCH",
            "@controlpanels/async-tasks",
            "de",
            json={"portal_url_replacement_mapping": {"https://intranet.example.com": "http://evil.example"}},
        )
        self.assertEqual(refused.status_code, 400, refused.text)
        self.assertIn("Jobs dürfen nicht an http://evil.example gesendet werden", refused.json()["message"])


class TestCatalogs(unittest.TestCase):
    def test_the_catalogs_are_in_sync_with_the_code(self):
        """Every message of the code is in the .pot, translated in every .po
        with the same ${placeholders}, and no message is left over
        (scripts/i18n.py --check; make i18n fixes the .pot)."""
        result = subprocess.run(
            [sys.executable, str(CHECKOUT / "scripts" / "i18n.py"), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("2 .po files are in sync", result.stdout)
