"""Fail unless the running Python sees exactly the versions a requirements file pins.

    python scripts/check_pins.py constraints-min.txt

``make test-min`` runs it in .venv-min, which layers over .venv: it proves the tests that
follow import the lowest declared versions, not the newer ones underneath.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


def main(path: str) -> int:
    """Compare every ``name==version`` line with the installed distribution."""
    wrong = []
    for line in Path(path).read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and metadata.version(name) != version:
            wrong.append(f"{name}: {metadata.version(name)} installed, {version} pinned")
    for problem in wrong:
        print(problem, file=sys.stderr)
    if not wrong:
        print(f"{path}: every pinned version is the one imported")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
