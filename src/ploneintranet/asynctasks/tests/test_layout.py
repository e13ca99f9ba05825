"""The house stays shallow and the worker side Zope-free (STYLE.md).

Read from the source: the imports between the package's modules form no
cycle, none hides inside a function, and no chain from a worker view down to
the settings is longer than five modules. Run in a fresh interpreter: the
Celery worker's module and the push server load no Zope or Plone module.
"""

import ast
from pathlib import Path
import subprocess
import sys
import unittest


PACKAGE = Path(__file__).resolve().parent.parent
PREFIX = "ploneintranet.asynctasks"
#: Where a job's work is done in Plone, and what runs in the worker process.
TOPS = ("browser.views", "previews.browser", "push.browser", "celerytasks", "push.server", "push.__main__")
LONGEST = 5
#: Top-level packages a worker or the push server has no business importing.
ZOPE = {
    "zope",
    "Zope2",
    "ZPublisher",
    "ZODB",
    "OFS",
    "App",
    "Products",
    "AccessControl",
    "Acquisition",
    "plone",
    "persistent",
    "transaction",
    "zExceptions",
    "five",
    "z3c",
}


def modules():
    """``{dotted name below the package: parsed module}``, tests left out."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "tests":
            continue
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return found


def imported(tree, known):
    """The package's modules that ``tree`` imports at module level."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
            base = node.module[len(PREFIX) :].lstrip(".")
            for alias in node.names:
                name = f"{base}.{alias.name}".lstrip(".")
                names.add(name if name in known else base)
        elif isinstance(node, ast.Import):
            names |= {alias.name[len(PREFIX) + 1 :] for alias in node.names if alias.name.startswith(PREFIX + ".")}
    return names & set(known)


class TestImports(unittest.TestCase):
    def setUp(self):
        self.trees = modules()
        self.graph = {name: imported(tree, self.trees) for name, tree in self.trees.items()}

    def longest_chain(self, name, path=()):
        if name in path:
            self.fail("import cycle: " + " -> ".join(path + (name,)))
        chains = [self.longest_chain(other, path + (name,)) for other in self.graph[name]]
        return max(chains, key=len, default=()) + (name,)

    def test_no_cycle_and_no_long_chain_from_a_worker_view(self):
        for name in self.graph:
            chain = self.longest_chain(name)[::-1]
            if name in TOPS:
                self.assertLessEqual(len(chain), LONGEST, " -> ".join(chain))

    def test_no_import_inside_a_function(self):
        for name, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    inner = [n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                    self.assertEqual(inner, [], f"{name}.{node.name} imports inside itself")


class TestWorkerSideIsZopeFree(unittest.TestCase):
    def test_celery_worker_and_push_server_import_no_zope(self):
        code = (
            "import sys\n"
            f"import {PREFIX}.celerytasks, {PREFIX}.push.server, {PREFIX}.push.__main__\n"
            "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
        )
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertIn("celery", loaded.stdout.split())  # it did import them
        self.assertEqual(sorted(ZOPE & set(loaded.stdout.split())), [])
