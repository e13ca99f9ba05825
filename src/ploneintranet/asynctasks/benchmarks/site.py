"""Build the benchmark's Plone site; run in its own process by
:mod:`~ploneintranet.asynctasks.benchmarks.services`.

Usage::

    python -m ploneintranet.asynctasks.benchmarks.site ZOPE_CONF PASSWORD_FILE

In one transaction, scripts/create_site.py's steps make the site ``Plone``
and the Zope admin (its password from ``PASSWORD_FILE``); then this adds
what the measurements need: the Plone user :data:`USER` (an Editor, with the
same password), the small page :data:`SMALL_PAGE` and the large page
:data:`LARGE_PAGE` (about :data:`LARGE_PAGE_BYTES` of text).
"""

from pathlib import Path
import sys


#: The checkout's scripts/, where create_site.py and zopeconfig.py live.
SCRIPTS = Path(__file__).resolve().parents[4] / "scripts"
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


def require_scripts():
    """Make scripts/ importable; say what to do when it is not there."""
    if not (SCRIPTS / "create_site.py").exists():
        raise SystemExit(
            f"the benchmark needs the checkout's scripts/ ({SCRIPTS} has no "
            "create_site.py): run it from a git checkout with `make bench`"
        )
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))


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
    from plone import api
    from plone.app.textfield.value import RichTextValue
    from ploneintranet.asynctasks.benchmarks.views import add_counter

    if site.acl_users.getUserById(USER) is None:
        site.acl_users._doAddUser(USER, password, ["Member", "Editor"], [])
    for page_id, title, text in (
        (SMALL_PAGE, "A plain page", "<p>A short page, rendered as the plain Plone page.</p>"),
        (LARGE_PAGE, "A large page", large_text()),
    ):
        if page_id not in site.objectIds():
            api.content.create(
                container=site, type="Document", id=page_id, title=title,
                text=RichTextValue(text, "text/html", "text/x-html-safe"),
            )
    add_counter(site[SMALL_PAGE])


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    zope_conf, password_file = argv[1:]
    password = Path(password_file).read_text(encoding="utf-8").strip()
    require_scripts()
    import create_site

    create_site.build(zope_conf, password, then=lambda site: add_bench_content(site, password))
    print("benchmark site: done")


if __name__ == "__main__":
    main(sys.argv)
