"""The site of ``make run`` looks like a Classic Plone site, in headless
Chromium: a Manager logs in, the pages are styled by Plone's Classic UI theme
(Barceloneta), and ``@@async-status`` is a readable table.

The site is made by ``scripts/create_site.py``, the script that makes the
site of ``make run``, ``make run-zeo`` and the benchmarks with the profiles
of Plone's own "Create a Classic Plone site" form. Needs Debian's
``chromium`` (``make chromium``), as ``test_push_browser``.
"""

import importlib.util
from pathlib import Path
from playwright.sync_api import sync_playwright
import plone.app.contenttypes
from plone.app.testing import PLONE_FIXTURE
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import FunctionalTesting
from plone.app.testing import PloneSandboxLayer
from plone.testing import zope
from plone.testing.zope import WSGIServer
import ploneintranet.asynctasks
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
from ploneintranet.asynctasks.tests.test_push_browser import CHROMIUM
from ploneintranet.asynctasks.tests.test_push_browser import CHROMIUM_ARGS
from ploneintranet.asynctasks.tests.test_push_browser import PAGE_TIMEOUT
from ploneintranet.asynctasks.tests.test_status import CHECKS
import shutil
import unittest


#: The checkout's scripts/create_site.py (an editable install: src/ is in the checkout).
CREATE_SITE = Path(ploneintranet.asynctasks.__file__).resolve().parents[3] / "scripts" / "create_site.py"


def load_create_site():
    """The module ``scripts/create_site.py`` (scripts/ is no package)."""
    if not CREATE_SITE.is_file():
        raise RuntimeError(f"{CREATE_SITE} is missing: run the tests in a checkout (make test)")
    spec = importlib.util.spec_from_file_location("create_site", CREATE_SITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class MakeRunSiteLayer(PloneSandboxLayer):
    """The site of ``make run``, made by ``create_site.ensure_site`` beside
    the fixture's own site (which plone.app.testing themes in any case), with
    the Manager ``boss``; resource ``make_run_site``: its id."""

    defaultBases = (PLONE_FIXTURE,)

    def setUpZope(self, app, configurationContext):
        self.loadZCML(package=plone.app.contenttypes)
        self.loadZCML(package=ploneintranet.asynctasks)
        create_site = load_create_site()
        zope.login(app["acl_users"], SITE_OWNER_NAME)
        try:
            create_site.ensure_site(app)
        finally:
            zope.logout()
        site = app[create_site.SITE_ID]
        site.acl_users.userFolderAddUser("boss", "secret-boss", ["Manager"], [])
        self["make_run_site"] = create_site.SITE_ID

    def tearDownZope(self, app):
        del self["make_run_site"]


MAKE_RUN_SITE_FIXTURE = MakeRunSiteLayer()

#: A WSGI server of its own, started after the site (see restapi_layers).
MAKE_RUN_SITE_WSGI_SERVER = WSGIServer(
    bases=(MAKE_RUN_SITE_FIXTURE,), name="ploneintranet.asynctasks:MakeRunSiteWSGIServer"
)

MAKE_RUN_SITE_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, MAKE_RUN_SITE_WSGI_SERVER),
    name="ploneintranet.asynctasks:MakeRunSite",
)

#: The computed styles of an element the test looks at, by a CSS selector.
STYLE_OF = """selector => {
    const style = getComputedStyle(document.querySelector(selector));
    return {position: style.position, display: style.display,
            paddingLeft: parseFloat(style.paddingLeft),
            borderBottomWidth: parseFloat(style.borderBottomWidth)};
}"""
#: The urls of the page's stylesheets that the browser loaded and applied.
APPLIED_STYLESHEETS = """() => Array.from(document.styleSheets)
    .filter(sheet => sheet.href && !sheet.disabled && sheet.cssRules.length > 0)
    .map(sheet => sheet.href)"""


class TestMakeRunSiteIsStyled(unittest.TestCase):
    layer = MAKE_RUN_SITE_TESTING

    def setUp(self):
        if not shutil.which(CHROMIUM):
            raise RuntimeError(f"{CHROMIUM} is missing: run 'make chromium' (or 'apt-get install chromium' as root)")
        site = self.layer["app"][self.layer["make_run_site"]]
        self.portal_url = site.absolute_url()
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.page = self.browser.new_context().new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT)

    def tearDown(self):
        self.browser.close()
        self.playwright.stop()

    def log_in(self):
        page = self.page
        page.goto(f"{self.portal_url}/login")
        page.fill('input[name="__ac_name"]', "boss")
        page.fill('input[name="__ac_password"]', "secret-boss")
        with page.expect_navigation():
            page.click('[name="buttons.login"]')
        self.assertTrue(any(cookie["name"] == "__ac" for cookie in page.context.cookies()), "boss could not log in")

    def test_the_pages_have_the_classic_ui_theme(self):
        self.log_in()
        self.page.goto(self.portal_url)
        sheets = self.page.evaluate(APPLIED_STYLESHEETS)
        self.assertTrue(any("++theme++barceloneta" in href for href in sheets), sheets)
        # the toolbar is the fixed bar at the side, not a list at the top of the page
        toolbar = self.page.evaluate(STYLE_OF, "#edit-zone")
        self.assertEqual(toolbar["position"], "fixed", toolbar)
        self.assertTrue(self.page.is_visible("#edit-zone"))

    def test_the_async_status_page_is_a_readable_table(self):
        self.log_in()
        self.page.goto(f"{self.portal_url}/@@async-status")
        self.page.wait_for_selector("#async-status-checks")
        cell = self.page.evaluate(STYLE_OF, "#async-status-checks td")
        self.assertGreaterEqual(cell["paddingLeft"], 4, cell)
        self.assertGreater(cell["borderBottomWidth"], 0, cell)
        self.assertEqual(self.page.evaluate(STYLE_OF, "#async-status-checks")["display"], "table")
        self.assertEqual(
            self.page.locator("#async-status-checks tbody tr").count(),
            len(CHECKS),
            "the table shows every check",
        )
        self.assertEqual(
            self.page.locator("#async-status-summary").inner_text(),
            "All checks OK so far: run the round trips to test a job end to end",
        )
