"""Packaging for ploneintranet.asynctasks."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent

setup(
    name="ploneintranet.asynctasks",
    version="1.0.0.dev0",
    description=(
        "Run slow Plone work outside the user's request: Celery jobs that "
        "POST back into Plone as the same user, CSRF-protected."
    ),
    long_description=(HERE / "README.rst").read_text(encoding="utf-8")
    + "\n\n"
    + (HERE / "CHANGES.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Plone",
        "Framework :: Plone :: 6.2",
        "Framework :: Plone :: Addon",
        "Framework :: Celery",
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    keywords="Plone Celery async Redis",
    license="GPL-2.0-only",
    packages=find_namespace_packages("src", include=["ploneintranet.*"]),
    package_dir={"": "src"},
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.10, <3.14",
    install_requires=[
        "Products.CMFPlone>=6.2",
        "plone.protect",
        "plone.api",
        "plone.registry",
        "celery[redis]>=5.4,<6",
        "redis",
        "requests",
        "setuptools",
        # the websocket push server (ploneintranet.asynctasks.push)
        "tornado>=6",
        "zope.interface",
    ],
    extras_require={
        "test": [
            "plone.app.testing",
            "plone.testing",
            "plone.app.contenttypes",
            "pytest",
            "zope.pytestlayer",
            # tests/test_routing.py runs two instances on a ZEO server, and
            # on RelStorage in a private PostgreSQL database.
            "ZEO",
            "RelStorage",
            "psycopg2-binary",
            # tests/test_push_browser.py drives Debian's chromium (make chromium).
            "playwright",
            # tests/test_restapi.py: the REST endpoints, registered only when
            # plone.restapi is installed (Products.CMFPlone does not need it).
            "plone.restapi",
        ],
        "run": [
            "plone.app.contenttypes",
            "supervisor",
        ],
        # The production-like server of `make run-zeo` (RELSTORAGE_DSN:
        # on RelStorage instead of ZEO).
        "zeo": [
            "ZEO",
            "flower",
            "RelStorage",
            "psycopg2-binary",
        ],
        # Instances on RelStorage in PostgreSQL instead of ZEO.
        "relstorage": [
            "RelStorage",
            "psycopg2-binary",
        ],
        # make lint (part of make test) and make dist-check.
        "lint": [
            "build",
            "check-manifest",
            "ruff",
        ],
        "docs": [
            "sphinx",
            "sphinxcontrib-zopeext",
        ],
    },
    entry_points={
        "z3c.autoinclude.plugin": ["target = plone"],
        "console_scripts": [
            "asynctasks-push = ploneintranet.asynctasks.push.__main__:main",
        ],
    },
)
