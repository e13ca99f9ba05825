"""Write versions.cfg, buildout's [versions], from constraints.txt.

constraints.txt is the one list of pinned versions; buildout.cfg extends the
versions.cfg this script writes from it, so pip and buildout install the same
set. Run it after every change to constraints.txt and commit both files::

    python3 scripts/versions_cfg.py          # write versions.cfg
    python3 scripts/versions_cfg.py --check  # exit 1 if versions.cfg is stale

``make buildout-check`` runs ``--check`` first. Only the standard library is
used, so any Python 3 runs it.
"""

import argparse
from pathlib import Path
import re
import sys


ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
VERSIONS_CFG = ROOT / "versions.cfg"

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(#.*)?$")

HEADER = """\
# Generated from constraints.txt by scripts/versions_cfg.py: do not edit.
# Change constraints.txt, then run:  python3 scripts/versions_cfg.py
[versions]
"""


def read_pins(path=CONSTRAINTS):
    """Return ``[(name, version)]`` of every ``name==version`` line."""
    pins, seen = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if not match:
            sys.exit(f"{path.name}:{number}: not a 'name==version' pin: {line!r}")
        name, version = match.group(1), match.group(2)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            sys.exit(f"{path.name}:{number}: {name} is pinned twice (also line {seen[key]})")
        seen[key] = number
        pins.append((name, version))
    return pins


def render(pins):
    width = max(len(name) for name, _ in pins)
    return HEADER + "".join(f"{name:<{width}} = {version}\n" for name, version in pins)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if versions.cfg differs")
    args = parser.parse_args(argv)
    text = render(read_pins())
    current = VERSIONS_CFG.read_text(encoding="utf-8") if VERSIONS_CFG.exists() else ""
    if args.check:
        if current != text:
            print(
                "versions.cfg does not match constraints.txt: run "
                "'python3 scripts/versions_cfg.py' and commit versions.cfg",
                file=sys.stderr,
            )
            return 1
        print(f"versions.cfg matches constraints.txt ({text.count(chr(10)) - 3} pins)")
        return 0
    if current != text:
        VERSIONS_CFG.write_text(text, encoding="utf-8")
        print(f"wrote versions.cfg ({text.count(chr(10)) - 3} pins)")
    else:
        print("versions.cfg is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
