"""Regenerate tests/golden/*.py from models/*.tdsl and examples/*.tdsl.

    python scripts/regenerate_golden.py

Run it after an intended change to the code generator, then review the diff.
"""

from __future__ import annotations

from pathlib import Path

from tritondsl.compiler.check import check_file
from tritondsl.compiler.codegen import generate

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def sources() -> list[Path]:
    """Every .tdsl file that has a golden file."""
    return sorted([*(ROOT / "models").glob("*.tdsl"), *(ROOT / "examples").glob("*.tdsl")])


def golden_path(source: Path) -> Path:
    """Where the generated code of ``source`` is kept."""
    return GOLDEN / f"{source.stem}.py"


def render(source: Path) -> str:
    """The generated code, with the path as the repository names it (stable across machines)."""
    return generate(check_file(source.relative_to(ROOT)))


def main() -> None:
    """Rewrite every golden file."""
    GOLDEN.mkdir(exist_ok=True)
    for source in sources():
        golden_path(source).write_text(render(source))
        print(f"wrote {golden_path(source).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
