"""Benchmark of previews as a user sees them: seconds from upload to preview
on screen, for an image, a PDF and a Word document.

::

    .venv/bin/python -m asynctasks_benchmarks.previews
        [--uploads 10] [--json var/bench-previews.json] [--root CHECKOUT]

Starts what ``make run`` runs, each a real process: a private
``redis-server``, a Plone instance (``runwsgi``) on a FileStorage built by
the checkout's ``scripts/create_site.py``, a Celery worker with the
package's defaults (prefork, 2 processes, the queues ``celery`` and
``high``) and the push server. Headless Chromium, logged in as the site's
admin, adds each file through Plone's add form; the time runs from the click
on Save to the moment the preview's picture is loaded on the page the form
led to. It includes the upload, the debounce of
:class:`~ploneintranet.asynctasks.tasks.GeneratePreview` (2 s), the worker,
the conversion (an image scale; ``pdftoppm``; LibreOffice and ``pdftoppm``),
the push message, the snippet and the picture. Each file has new bytes, so
no stored outcome is reused. The first upload of each kind is a warm-up,
reported apart; then ``--uploads`` of each kind give the median and p95.

Needs Debian's ``chromium``, ``poppler-utils`` and LibreOffice.
"""

import argparse
from asynctasks_benchmarks.measure import percentile
from asynctasks_benchmarks.services import BenchStack
from asynctasks_benchmarks.services import WorkerSettings
import io
import json
import os
from pathlib import Path
from PIL import Image
from PIL import ImageDraw
from playwright.sync_api import sync_playwright
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import start_push_server
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.tests import office_files
from ploneintranet.asynctasks.tests.test_push_browser import CHROMIUM
from ploneintranet.asynctasks.tests.test_push_browser import CHROMIUM_ARGS
import shutil
import statistics
import sys
import tempfile
import time


#: The worker of ``make run``: the package's defaults, every queue a preview may use.
WORKER = WorkerSettings("previews", ("celery", "high"))
#: Milliseconds a page or a preview may take.
TIMEOUT = 120_000
NO_PREVIEW = ".async-preview.none"
#: True once the preview's picture is loaded, or the page says "no preview".
SHOWN = (
    f"() => {{ if (document.querySelector('{NO_PREVIEW}')) return true;"
    " const img = document.querySelector('.async-preview.ready img');"
    " return img !== null && img.complete && img.naturalWidth > 0; }"
)


def photo(number):
    """A 1200x800 JPEG (about 30 KB), different for each ``number``."""
    image = Image.new("RGB", (1200, 800), (number * 37 % 256, 120, 200))
    ImageDraw.Draw(image).text((40, 40), f"Photo {number}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def report_pdf(number):
    """A PDF of one A4 page with a line of text (as Pillow writes one)."""
    page = Image.new("RGB", (1240, 1754), "white")
    ImageDraw.Draw(page).text((100, 100), f"Quarterly report {number}", fill="black")
    out = io.BytesIO()
    page.save(out, "PDF", resolution=150)
    return out.getvalue()


#: kind: (portal type, file field, file name, content type, bytes of upload ``n``)
KINDS = {
    "image": ("Image", "image", "photo-{n}.jpg", "image/jpeg", photo),
    "pdf": ("File", "file", "report-{n}.pdf", "application/pdf", report_pdf),
    "docx": (
        "File",
        "file",
        "memo-{n}.docx",
        office_files.CONTENT_TYPES["docx"],
        lambda n: office_files.docx(f"Memo number {n}"),
    ),
}


def log_in(page, portal_url, password):
    page.goto(f"{portal_url}/login")
    page.fill('input[name="__ac_name"]', "admin")
    page.fill('input[name="__ac_password"]', password)
    with page.expect_navigation():
        page.click('[name="buttons.login"]')
    if not any(cookie["name"] == "__ac" for cookie in page.context.cookies()):
        raise RuntimeError("the benchmark could not log in as admin")


def upload_seconds(page, portal_url, kind, number):
    """Add upload ``number`` of ``kind`` through the add form; return the
    seconds from the click on Save until its preview's picture is loaded."""
    portal_type, field, filename, content_type, make = KINDS[kind]
    name = filename.format(n=number)
    page.goto(f"{portal_url}/++add++{portal_type}")
    page.set_input_files(
        f'input[type=file][name="form.widgets.{field}"]',
        files=[{"name": name, "mimeType": content_type, "buffer": make(number)}],
    )
    started = time.perf_counter()
    with page.expect_navigation():
        page.click('[name="form.buttons.save"]')
    page.wait_for_function(SHOWN, polling="raf", timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    if page.query_selector(NO_PREVIEW) is not None:
        raise RuntimeError(f"{name} got no preview: see the Plone log")
    return seconds


def measure(portal_url, password, uploads):
    """Upload a warm-up and ``uploads`` files of each kind; return the figures."""
    figures = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT)
            log_in(page, portal_url, password)
            for kind in KINDS:
                first = upload_seconds(page, portal_url, kind, 0)
                seconds = [upload_seconds(page, portal_url, kind, n) for n in range(1, uploads + 1)]
                figures[kind] = {
                    "uploads": uploads,
                    "first_s": round(first, 2),
                    "median_s": round(statistics.median(seconds), 2),
                    "p95_s": round(percentile(seconds, 0.95), 2),
                    "max_s": round(max(seconds), 2),
                    "seconds": [round(value, 3) for value in seconds],
                }
                say(
                    f"previews: {kind:5}  median {figures[kind]['median_s']:.2f} s, "
                    f"p95 {figures[kind]['p95_s']:.2f} s over {uploads} uploads "
                    f"(first {first:.2f} s)"
                )
        finally:
            browser.close()
    return figures


def say(message):
    print(message, flush=True)


def run(checkout, uploads):
    """Start the processes, measure, stop them all; return the figures."""
    for command in (CHROMIUM, "soffice", "pdftoppm"):
        if shutil.which(command) is None:
            raise SystemExit(f"{command} is missing: run 'make chromium libreoffice' first")
    directory = tempfile.mkdtemp(prefix="asynctasks-bench-previews-")
    push_port = free_port()
    os.environ["ASYNC_PUSH_PORT"] = str(push_port)  # Plone's pages connect there
    try:
        with BenchStack(directory, checkout, workers=(WORKER,)) as stack:
            push = start_push_server(push_port, stack.portal_url, stack.redis_url, directory)
            try:
                say(f"previews: Plone {stack.portal_url}, push server on port {push_port}")
                figures = measure(stack.portal_url, stack.password, uploads)
            finally:
                stop_process(push)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"load_after": round(os.getloadavg()[0], 2), "kinds": figures}


def main(argv=None):
    """Run the previews benchmark with the command line ``argv``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m asynctasks_benchmarks.previews", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--uploads", type=int, default=10, help="measured uploads of each kind")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        metavar="CHECKOUT",
        help="the git checkout whose scripts/ build the site (default: the current directory)",
    )
    parser.add_argument(
        "--json", type=Path, help="where to write the figures (default: CHECKOUT/var/bench-previews.json)"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "scripts" / "create_site.py").is_file():
        parser.error(f"{root} is not a checkout of ploneintranet.asynctasks: pass --root")
    figures = run(root, args.uploads)
    target = args.json or root / "var" / "bench-previews.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
