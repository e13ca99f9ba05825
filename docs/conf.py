"""Sphinx configuration of the ploneintranet.asynctasks documentation.

Build it with ``make docs`` (warnings are errors); the HTML lands in
``docs/_build/html``.
"""

from importlib.metadata import version as _version

project = "ploneintranet.asynctasks"
author = "the ploneintranet.asynctasks contributors"
copyright = "the ploneintranet.asynctasks contributors"
release = _version("ploneintranet.asynctasks")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinxcontrib.zopeext.autointerface",
    # Documents Celery task objects as functions marked "(task)".
    "celery.contrib.sphinx",
]

# sphinxcontrib-zopeext and celery.contrib.sphinx build on the class-based
# autodoc that Sphinx 9 keeps behind this switch.
autodoc_use_legacy_class_based = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"

graphviz_output_format = "svg"

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {
    "description": "Slow Plone work, done later, as the same user",
    "fixed_sidebar": True,
}
html_static_path = []


def setup(app):
    # sphinxcontrib-zopeext adds an inline script that restyles interfaces as
    # classes with jQuery, which Sphinx no longer ships; in the browser it
    # would only raise "$ is not defined". Leave it out.
    app.registry.js_files = [
        (name, attributes)
        for name, attributes in app.registry.js_files
        if "$(document).ready" not in attributes.get("body", "")
    ]
