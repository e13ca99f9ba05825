"""Build the benchmark's Plone site; run in its own process by
:mod:`~asynctasks_benchmarks.services`.

Usage::

    python -m asynctasks_benchmarks.site CHECKOUT ZOPE_CONF PASSWORD_FILE

In one transaction, the steps of ``CHECKOUT/scripts/create_site.py`` make
the site ``Plone`` and the Zope admin (its password from ``PASSWORD_FILE``);
then this adds what the measurements need: the Plone user :data:`USER` (an Editor, with the
same password), the small page :data:`SMALL_PAGE` and the large page
:data:`LARGE_PAGE` (about :data:`LARGE_PAGE_BYTES` of text).
"""

import importlib.util
from pathlib import Path
import sys


#: The site that scripts/create_site.py makes.
SITE_ID = "Plone"
USER = "bench-editor"
SMALL_PAGE = "plain-page"
LARGE_PAGE = "large-page"
LARGE_PAGE_BYTES = 200_000
WORDS = (
    "intranet colleague meeting agenda budget review project deadline customer "
    "report holiday policy office travel expense training workshop release "
    "roadmap feedback summary decision minutes quarter planning"
).split()


def load_script(checkout, name):
    """The module ``scripts/<name>.py`` of the git checkout ``checkout``
    (scripts/ is no package: the module is loaded from its file)."""
    path = Path(checkout) / "scripts" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(
            f"the benchmark needs {path}: run it from the root of a git "
            "checkout of ploneintranet.asynctasks (`make bench`), or name "
            "the checkout with --root"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def large_text(size=LARGE_PAGE_BYTES, marker=""):
    """About ``size`` bytes of HTML paragraphs of ordinary words; ``marker``
    (a word) is put in the first paragraph, so a search can find this version."""
    paragraphs = []
    length = 0
    index = 0
    while length < size:
        words = [WORDS[(index * 7 + n * 3) % len(WORDS)] + str(index % 97 + n) for n in range(60)]
        paragraph = "<p>" + " ".join(words) + "</p>"
        paragraphs.append(paragraph)
        length += len(paragraph)
        index += 1
    if marker:
        paragraphs[0] = f"<p>{marker}</p>" + paragraphs[0]
    return "\n".join(paragraphs)


def add_bench_content(site, password):
    """Add the user :data:`USER` with ``password`` and the two pages."""
    from asynctasks_benchmarks.views import add_counter
    from plone import api
    from plone.app.textfield.value import RichTextValue

    if site.acl_users.getUserById(USER) is None:
        site.acl_users._doAddUser(USER, password, ["Member", "Editor"], [])
    for page_id, title, text in (
        (SMALL_PAGE, "A plain page", "<p>A short page, rendered as the plain Plone page.</p>"),
        (LARGE_PAGE, "A large page", large_text()),
    ):
        if page_id not in site.objectIds():
            api.content.create(
                container=site,
                type="Document",
                id=page_id,
                title=title,
                text=RichTextValue(text, "text/html", "text/x-html-safe"),
            )
    add_counter(site[SMALL_PAGE])


def main(argv):
    """Build the site: ``argv`` is ``[program, CHECKOUT, ZOPE_CONF, PASSWORD_FILE]``."""
    if len(argv) != 4:
        raise SystemExit(__doc__)
    checkout, zope_conf, password_file = argv[1:]
    password = Path(password_file).read_text(encoding="utf-8").strip()
    create_site = load_script(checkout, "create_site")
    create_site.build(zope_conf, password, then=lambda site: add_bench_content(site, password))
    print("benchmark site: done")


if __name__ == "__main__":
    main(sys.argv)
