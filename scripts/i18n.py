"""Keep the translations of ploneintranet.asynctasks in sync with the code.

    python scripts/i18n.py           (make i18n) rewrite locales/*.pot, merge it into every .po
    python scripts/i18n.py --check   exit 1, saying what to do, if they are out of sync

The messages of the domain ``ploneintranet.asynctasks`` are found in
``_("...")`` calls of the package's Python modules (tests left out), in the
``i18n:translate`` and ``i18n:attributes`` of its page templates (read by
zope.tal, as zope.app.locales' i18nextract does) and in the
``i18n:attributes`` of its GenericSetup profiles. Merging keeps every
translation whose message is still used, adds the new messages untranslated
and drops the ones no longer used. ``--check`` fails when the ``.pot`` lacks
a message of the code or has one the code no longer uses, and when a ``.po``
lacks a translation or changes a message's ``${name}`` placeholders.
The ``.mo`` files are not kept: Plone compiles them at start-up.
"""

import argparse
import ast
from pathlib import Path
import re
import sys
from xml.etree import ElementTree
from zope.app.locales.extract import tal_strings


DOMAIN = "ploneintranet.asynctasks"
PACKAGE = Path(__file__).resolve().parent.parent / "src" / "ploneintranet" / "asynctasks"
LOCALES = PACKAGE / "locales"
POT = LOCALES / f"{DOMAIN}.pot"
I18N_NS = "{http://xml.zope.org/namespaces/i18n}"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
#: Languages and their names, written in each ``.po``'s header.
LANGUAGE_NAMES = {"nl": "Nederlands", "de": "Deutsch"}

HEADER = """\
msgid ""
msgstr ""
"Project-Id-Version: {domain}\\n"
"MIME-Version: 1.0\\n"
"Content-Type: text/plain; charset=utf-8\\n"
"Content-Transfer-Encoding: 8bit\\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\\n"
"Language-Code: {code}\\n"
"Language-Name: {name}\\n"
"Preferred-Encodings: utf-8 latin1\\n"
"Domain: {domain}\\n"
{language}
"""


def relative(path):
    return Path(path).resolve().relative_to(PACKAGE).as_posix()


def python_calls():
    """``(location, msgid or None)`` of every ``_(...)`` call of the package;
    ``None`` when its first argument is not a string literal."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "tests" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
                first = node.args[0] if node.args else None
                literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
                yield f"{relative(path)}:{node.lineno}", first.value if literal else None


def python_messages():
    """``{msgid: [location]}`` of the ``_("...")`` calls of the package."""
    found = {}
    for location, msgid in python_calls():
        if msgid is not None:
            found.setdefault(msgid, []).append(location)
    return found


def template_messages():
    """``{msgid: [location]}`` of the page templates, in the domain."""
    found = {}
    for msgid, locations in tal_strings(str(PACKAGE), domain=DOMAIN).items():
        found[str(msgid)] = [f"{relative(path)}:{line}" for path, line in locations]
    return found


def profile_messages():
    """``{msgid: [location]}`` of the ``i18n:attributes`` of the profiles."""
    found = {}

    def walk(element, domain, path):
        domain = element.get(f"{I18N_NS}domain", domain)
        if domain == DOMAIN:
            for name in element.get(f"{I18N_NS}attributes", "").replace(";", " ").split():
                if element.get(name):
                    found.setdefault(element.get(name), []).append(relative(path))
        for child in element:
            walk(child, domain, path)

    for path in sorted((PACKAGE / "profiles").rglob("*.xml")):
        walk(ElementTree.parse(path).getroot(), None, path)
    return found


def extract():
    """``{msgid: sorted locations}`` of every message of the domain."""
    catalog = {}
    for found in (python_messages(), template_messages(), profile_messages()):
        for msgid, locations in found.items():
            catalog.setdefault(msgid, set()).update(locations)
    return {msgid: sorted(locations) for msgid, locations in catalog.items()}


def order(location):
    """Sort key of ``path:line``: by path, then by line number."""
    path, _, line = location.partition(":")
    return (path, int(line or 0))


def quote(text):
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def unquote(literal):
    body = literal.strip()[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def read_po(path):
    """``{msgid: msgstr}`` of a ``.po`` or ``.pot`` file, its header left out."""
    entries, msgid, msgstr, current = {}, None, None, None

    def flush():
        if msgid:
            entries[msgid] = msgstr or ""

    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("msgid "):
            flush()
            msgid, msgstr, current = unquote(line[6:]), None, "msgid"
        elif line.startswith("msgstr "):
            msgstr, current = unquote(line[7:]), "msgstr"
        elif line.startswith('"') and current == "msgid":
            msgid += unquote(line)
        elif line.startswith('"') and current == "msgstr":
            msgstr += unquote(line)
        else:  # a comment or the blank line between entries
            current = None
    flush()
    return entries


def render(catalog, translations=None, language=None):
    """The text of the ``.pot`` (no ``language``) or of a language's ``.po``."""
    header = HEADER.format(
        domain=DOMAIN,
        code=language or "en",
        name=LANGUAGE_NAMES.get(language, "English"),
        language=f'"Language: {language}\\n"' if language else "",
    ).replace("\n\n", "\n")
    entries = [header]
    for msgid in sorted(catalog, key=lambda m: (order(catalog[m][0]), m)):
        lines = [f"#: {location}" for location in catalog[msgid]]
        lines.append(f"msgid {quote(msgid)}")
        lines.append(f"msgstr {quote((translations or {}).get(msgid, ''))}")
        entries.append("\n".join(lines) + "\n")
    return "\n".join(entries)


def po_files():
    return sorted(LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def update():
    """Rewrite the ``.pot`` and merge it into every ``.po``; report changes."""
    catalog = extract()
    LOCALES.mkdir(exist_ok=True)
    POT.write_text(render(catalog), encoding="utf-8")
    print(f"{relative(POT)}: {len(catalog)} messages")
    for path in po_files():
        language = path.parent.parent.name
        translations = read_po(path)
        path.write_text(render(catalog, translations, language), encoding="utf-8")
        missing = [msgid for msgid in catalog if not translations.get(msgid)]
        dropped = sorted(set(translations) - set(catalog))
        print(f"{relative(path)}: {len(missing)} to translate, {len(dropped)} no longer used")
        for msgid in missing:
            print(f"    to translate: {msgid!r}")


def problems():
    """What is out of sync, one sentence each (empty when all is well)."""
    catalog = extract()
    found = []
    if not POT.exists():
        return [f"{relative(POT)} is missing: run make i18n"]
    pot = read_po(POT)
    for location, msgid in python_calls():
        if msgid is None:
            found.append(
                f"{location}: _() needs the text as a string literal (no f-string), "
                '${names} for what changes: _("found ${names}", mapping={"names": ...})'
            )
    for msgid in sorted(set(catalog) - set(pot)):
        found.append(f"{relative(POT)} lacks {msgid!r} ({catalog[msgid][0]}): run make i18n")
    for msgid in sorted(set(pot) - set(catalog)):
        found.append(f"{relative(POT)} has {msgid!r}, which the code no longer uses: run make i18n")
    for language in LANGUAGE_NAMES:
        path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        if not path.exists():
            found.append(f"{relative(path)} is missing: copy the .pot there and translate it")
    for path in po_files():
        translations = read_po(path)
        for msgid in sorted(catalog):
            text = translations.get(msgid)
            if not text:
                found.append(f"{relative(path)} has no translation of {msgid!r}: translate it (make i18n adds it)")
            elif sorted(PLACEHOLDER.findall(text)) != sorted(PLACEHOLDER.findall(msgid)):
                found.append(f"{relative(path)}: the translation of {msgid!r} must use the placeholders of the message")
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
        print(f"{relative(POT)} and {len(po_files())} .po files are in sync with the code")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
