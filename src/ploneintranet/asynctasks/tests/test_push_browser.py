"""End to end in headless Chromium: an uploaded image's or Word document's
placeholder is replaced by its preview through push, without a reload;
another logged-in user's browser receives nothing, nor does a tab whose user
logged out in another tab. ``pat-push`` is a
Patternslib pattern loaded by Plone's resource registry, and initialises on
content that pat-inject brings later.

Needs Debian's ``chromium`` (``make chromium``, part of ``make test``) and,
for the Word document, LibreOffice (``make libreoffice``); the Python package
``playwright`` drives Chromium (its own browser download is not used).
"""

import io
import os
from PIL import Image
from playwright.sync_api import sync_playwright
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from ploneintranet.asynctasks.push import messages
from ploneintranet.asynctasks.testing import ASYNC_PUSH_TESTING
from ploneintranet.asynctasks.testing import PUSH_SERVER_FIXTURE
from ploneintranet.asynctasks.tests import office_files
from ploneintranet.asynctasks.tests.test_office_previews import require_soffice
import shutil
import signal
import transaction
import unittest


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Milliseconds the browser may take for a page, and for a preview to arrive.
PAGE_TIMEOUT = 60_000
PREVIEW_TIMEOUT = 45_000


#: Added to a page before Patternslib scans it, as a template would render
#: it: a pat-inject link that brings the preview element of another page.
INJECT_LINK = """
document.addEventListener("DOMContentLoaded", () => {
  const link = document.createElement("a");
  link.id = "show-preview";
  link.className = "pat-inject";
  link.href = "%(href)s#%(target)s";
  link.dataset.patInject = "source: #%(target)s::element; target: #inject-here";
  link.textContent = "Show the preview";
  const here = document.createElement("div");
  here.id = "inject-here";
  document.body.prepend(link, here);
});
"""


def png(size=(64, 48)):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


class TestPreviewArrivesByPush(unittest.TestCase):
    layer = ASYNC_PUSH_TESTING

    def setUp(self):
        if not shutil.which(CHROMIUM):
            raise RuntimeError(f"{CHROMIUM} is missing: run 'make chromium' (or 'apt-get install chromium' as root)")
        self.portal = self.layer["portal"]
        self.portal_url = self.portal.absolute_url()
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        self.folder = api.content.create(container=self.portal, type="Folder", id="uploads")
        for username in ("alice", "bob"):
            api.user.create(
                email=f"{username}@example.com",
                username=username,
                password=f"secret-{username}",
                roles=["Member"],
            )
        api.user.grant_roles(username="alice", obj=self.folder, roles=["Contributor", "Editor"])
        transaction.commit()
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

    def tearDown(self):
        self.browser.close()
        self.playwright.stop()

    def logged_in_page(self, username):
        page = self.browser.new_context().new_page()
        page.set_default_timeout(PAGE_TIMEOUT)
        page.goto(f"{self.portal_url}/login")
        page.fill('input[name="__ac_name"]', username)
        page.fill('input[name="__ac_password"]', f"secret-{username}")
        with page.expect_navigation():
            page.click('[name="buttons.login"]')
        self.assertTrue(
            any(cookie["name"] == "__ac" for cookie in page.context.cookies()),
            f"{username} could not log in",
        )
        return page

    def wait_for_socket(self, page):
        page.wait_for_selector("body[data-push-state=open]", state="attached")

    def upload_with_worker_paused(self, upload):
        """Call ``upload``, which returns the page of a new item, while the
        worker is paused until that page listens: its preview can only come
        by push. Return the page, its placeholder checked pending."""
        worker = self.layer["celery_worker"]
        os.killpg(worker.pid, signal.SIGSTOP)
        try:
            page = upload()
            placeholder = page.wait_for_selector(".async-preview", state="attached")
            self.assertIn("pending", placeholder.get_attribute("class"))
            page.evaluate("window.loadedOnce = true")  # gone if the page reloads
            self.wait_for_socket(page)
            page.wait_for_timeout(500)  # its catch-up fetch found the preview pending
            self.assertTrue(page.is_visible(".async-preview.pending"))
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        return page

    def test_placeholder_is_replaced_by_the_preview_without_reload(self):
        bob = self.logged_in_page("bob")
        bob.goto(self.portal_url)
        self.wait_for_socket(bob)

        alice = self.upload_with_worker_paused(lambda: self.upload_image("alice"))
        preview = alice.wait_for_selector(".async-preview.ready img", timeout=PREVIEW_TIMEOUT)
        self.assertIn("@@images", preview.get_attribute("src"))
        self.assertTrue(alice.evaluate("window.loadedOnce === true"), "the page was reloaded")
        received = alice.evaluate("window.ploneintranetPush.received")
        self.assertEqual([message["status"] for message in received], ["done"])

        bob.wait_for_timeout(1000)
        self.assertEqual(bob.evaluate("window.ploneintranetPush.received"), [])
        self.assertEqual(bob.get_attribute("body", "data-push-state"), "open")

    def test_an_uploaded_word_document_shows_its_first_page_without_reload(self):
        require_soffice()
        alice = self.upload_with_worker_paused(
            lambda: self.upload_file(
                "alice", "memo.docx", office_files.docx("Quarterly memo"), office_files.CONTENT_TYPES["docx"]
            )
        )
        preview = alice.wait_for_selector(".async-preview.ready img", timeout=PREVIEW_TIMEOUT)
        self.assertIn("@@async-preview-image", preview.get_attribute("src"))
        alice.wait_for_function(  # the page's picture itself arrived
            "document.querySelector('.async-preview.ready img').naturalWidth > 0"
        )
        self.assertTrue(alice.evaluate("window.loadedOnce === true"), "the page was reloaded")

    def test_pat_push_is_a_pattern_of_a_bundle_for_logged_in_users(self):
        bob = self.logged_in_page("bob")
        bob.goto(self.portal_url)
        self.wait_for_socket(bob)
        scripts = bob.eval_on_selector_all(
            'script[src*="pat-push.js"]', "found => found.map(s => [s.dataset.bundle, s.defer])"
        )
        self.assertEqual(scripts, [["ploneintranet-asynctasks-push", True]])  # only the bundle's
        self.assertEqual(bob.evaluate("window.__patternslib_registry.push.trigger"), ".pat-push")
        self.assertTrue(bob.evaluate("window.__patternslib_registry_initialized"))
        anonymous = self.browser.new_context().new_page()
        anonymous.goto(self.portal_url)
        self.assertEqual(anonymous.locator('script[src*="pat-push.js"]').count(), 0)
        self.assertEqual(anonymous.locator('meta[name="ploneintranet-push"]').count(), 0)

    def test_a_preview_arrives_in_content_that_pat_inject_brought_late(self):
        """pat-inject fetches the image's page while its preview is pending,
        and the answer arrives only after the push message did: the pattern,
        initialised by Patternslib on the injected placeholder, fetches the
        finished preview itself."""
        worker = self.layer["celery_worker"]
        os.killpg(worker.pid, signal.SIGSTOP)
        try:
            image_page = self.upload_image("alice")
            target = image_page.get_attribute(".async-preview.pending", "id")
            page = image_page.context.new_page()  # alice's second tab
            page.set_default_timeout(PAGE_TIMEOUT)
            page.add_init_script(INJECT_LINK % {"href": image_page.url, "target": target})
            page.goto(self.folder.absolute_url())
            self.wait_for_socket(page)
            held = []
            page.route(
                lambda url: "/uploads/sunset" in url and "@@" not in url,
                lambda route: held.append((route, route.fetch())),
            )
            page.evaluate("window.loadedOnce = true")
            page.click("#show-preview")  # pat-inject's request: answered, then held
            while not held:  # Playwright runs the route's handler while we wait
                page.wait_for_timeout(100)
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        page.wait_for_function(
            "target => window.ploneintranetPush.received.some(m => m.target === target)",
            arg=target,
            timeout=PREVIEW_TIMEOUT,
        )
        self.assertEqual(page.locator("#inject-here .async-preview").count(), 0)
        route, pending_answer = held[0]
        self.assertIn("async-preview pending pat-push", pending_answer.text())
        route.fulfill(response=pending_answer)  # the injection, after the message

        preview = page.wait_for_selector("#inject-here .async-preview.ready img", timeout=PREVIEW_TIMEOUT)
        self.assertIn("@@images", preview.get_attribute("src"))
        self.assertIn(target, page.evaluate("window.ploneintranetPush.bound"))
        self.assertTrue(page.evaluate("window.loadedOnce === true"), "the page was reloaded")

    def test_logging_out_in_one_tab_closes_the_socket_of_the_other(self):
        first = self.logged_in_page("alice")
        second = first.context.new_page()  # the same browser: the same cookie
        second.set_default_timeout(PAGE_TIMEOUT)
        second.goto(self.portal_url)
        self.wait_for_socket(second)
        first.goto(f"{self.portal_url}/logout")
        second.wait_for_selector("body[data-push-state=closed]", state="attached", timeout=5000)
        second.wait_for_timeout(3000)  # it tries again, without the login cookie: refused
        self.assertEqual(second.get_attribute("body", "data-push-state"), "closed")
        self.assertEqual(messages.publish("alice", "t", "done", "", "nowhere"), 0)
        self.assertEqual(second.evaluate("window.ploneintranetPush.received"), [])

    def test_pages_reconnect_when_the_push_server_comes_back(self):
        bob = self.logged_in_page("bob")
        bob.goto(self.portal_url)
        self.wait_for_socket(bob)
        PUSH_SERVER_FIXTURE.stop_server()
        try:
            bob.wait_for_selector("body[data-push-state=closed]", state="attached")
        finally:
            PUSH_SERVER_FIXTURE.start_server()
        self.wait_for_socket(bob)  # retried with backoff, without a reload
        messages.publish("bob", "t", "done", "", "nowhere")
        bob.wait_for_function("window.ploneintranetPush.received.length === 1")

    def upload_image(self, username):
        """Add an Image through the add form as ``username``; return the page
        of the new image."""
        page = self.logged_in_page(username)
        page.goto(f"{self.folder.absolute_url()}/++add++Image")
        page.fill('input[name="form.widgets.title"]', "Sunset")
        page.set_input_files(
            'input[type=file][name="form.widgets.image"]',
            files=[{"name": "sunset.png", "mimeType": "image/png", "buffer": png()}],
        )
        with page.expect_navigation():
            page.click('[name="form.buttons.save"]')
        self.assertIn("/uploads/sunset", page.url)
        return page

    def upload_file(self, username, filename, data, content_type):
        """Add a File through the add form as ``username``; return the page
        of the new file."""
        page = self.logged_in_page(username)
        page.goto(f"{self.folder.absolute_url()}/++add++File")
        page.set_input_files(
            'input[type=file][name="form.widgets.file"]',
            files=[{"name": filename, "mimeType": content_type, "buffer": data}],
        )
        with page.expect_navigation():
            page.click('[name="form.buttons.save"]')
        self.assertIn(f"/uploads/{filename}", page.url)
        if not page.url.rstrip("/").endswith("/view"):
            page.goto(f"{self.folder.absolute_url()}/{filename}/view")  # a File's url downloads it
        return page
