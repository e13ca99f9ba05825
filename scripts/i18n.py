"""Keep the translations of ploneintranet.asynctasks in sync with the code.

    python scripts/i18n.py           (make i18n) rewrite locales/*.pot, merge it into every .po
    python scripts/i18n.py --check   exit 1, saying what to do, if they are out of sync

i18ndude, Plone's own tool, does the work: ``rebuild-pot`` finds the messages
of the domain ``ploneintranet.asynctasks`` in the ``_("...")`` calls, the page
templates, the ZCML (profile titles) and the GenericSetup profiles; ``sync``
merges the ``.pot`` into every ``.po`` (new messages untranslated, unused ones
dropped). ``--check`` rebuilds the ``.pot`` in a temporary file and fails when
its messages differ from the committed one, when a ``_()`` is given no string
literal (it can never be translated), when a language of ``LANGUAGES`` has no
``.po`` and when a ``.po`` lacks a translation or changes a message's
``${name}`` placeholders. The ``.mo`` files are not kept: Plone compiles them
at start-up.
"""

import argparse
import ast
from i18ndude.catalog import MessageCatalog
from pathlib import Path
import re
import subprocess
import sys
import tempfile


DOMAIN = "ploneintranet.asynctasks"
PACKAGE = Path(__file__).resolve().parent.parent / "src" / "ploneintranet" / "asynctasks"
LOCALES = PACKAGE / "locales"
POT = LOCALES / f"{DOMAIN}.pot"
#: The languages that must be translated completely.
LANGUAGES = ("nl", "de")
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
I18NDUDE = Path(sys.executable).with_name("i18ndude")


def i18ndude(*arguments):
    subprocess.run([str(I18NDUDE), *map(str, arguments)], check=True, stdout=subprocess.DEVNULL)


def rebuild_pot(path):
    """Write the messages of the code into the ``.pot`` at ``path``; return them."""
    i18ndude("rebuild-pot", "--pot", path, "--create", DOMAIN, PACKAGE)
    return MessageCatalog(filename=str(path))


def po_files():
    return sorted(LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def update():
    """Rewrite the ``.pot`` and merge it into every ``.po``; say what is left to translate."""
    catalog = rebuild_pot(POT)
    print(f"{POT.relative_to(PACKAGE)}: {len(catalog)} messages")
    i18ndude("sync", "--pot", POT, *po_files())
    for path in po_files():
        for msgid in untranslated(path, catalog):
            print(f"{path.relative_to(PACKAGE)}: to translate: {msgid!r}")


def untranslated(path, catalog):
    translations = MessageCatalog(filename=str(path))
    return [msgid for msgid in catalog if msgid not in translations or not translations[msgid].msgstr]


def literal_problems():
    """The ``_()`` calls of the package whose text is not a string literal."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "tests" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
                first = node.args[0] if node.args else None
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    yield (
                        f"{path.relative_to(PACKAGE)}:{node.lineno}: _() needs the text as a string literal "
                        '(no f-string), ${names} for what changes: _("found ${names}", mapping={"names": ...})'
                    )


def problems():
    """What is out of sync, one sentence each (empty when all is well)."""
    found = list(literal_problems())
    if not POT.exists():
        return [*found, f"{POT.relative_to(PACKAGE)} is missing: run make i18n"]
    with tempfile.TemporaryDirectory() as temp:
        code = rebuild_pot(Path(temp) / f"{DOMAIN}.pot")
    committed = MessageCatalog(filename=str(POT))
    found += [f"the .pot lacks {msgid!r}: run make i18n" for msgid in code if msgid not in committed]
    found += [f"the .pot has {msgid!r}, no longer used: run make i18n" for msgid in committed if msgid not in code]
    for language in LANGUAGES:
        if not (LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po").exists():
            found.append(f"locales/{language} has no {DOMAIN}.po: run make i18n after copying the .pot there")
    for path in po_files():
        name = path.relative_to(PACKAGE)
        translations = MessageCatalog(filename=str(path))
        found += [f"{name} has no translation of {msgid!r} (make i18n adds it)" for msgid in untranslated(path, code)]
        for msgid in code:
            text = translations[msgid].msgstr if msgid in translations else ""
            if text and sorted(PLACEHOLDER.findall(text)) != sorted(PLACEHOLDER.findall(msgid)):
                found.append(f"{name}: the translation of {msgid!r} must use the placeholders of the message")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check, change nothing")
    args = parser.parse_args(argv)
    if not args.check:
        update()
        return 0
    found = problems()
    for problem in found:
        print(problem)
    if not found:
        print(f"{POT.relative_to(PACKAGE)} and {len(po_files())} .po files are in sync with the code")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
