"""Build the wheel, install it into a fresh venv, and use it from the repository root.

    python scripts/check_wheel.py        # `make test-wheel`; part of `make test`

Proves the layout: at the repository root (where ``compiler/``, ``backend/`` and the other
mapped folders live) ``import tritondsl`` and the ``tritondsl`` command use the installed
wheel, not the source tree, and the wheel carries its package data (grammar, code template,
zoo, examples, the bundled Fashion-MNIST subset). The venv installs the wheel alone; its
third-party packages (torch among them) come from the running venv through a plain path in a
``.pth`` file, which adds that folder without running its ``.pth`` files, so the editable
tritondsl installed there stays out of sight. That keeps the check to a few seconds and
downloads nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "wheel-check"
# Package data the wheel must hold (paths inside the wheel).
DATA = [
    "tritondsl/compiler/tdsl.lark",
    "tritondsl/compiler/templates/module.py.jinja",
    "tritondsl/models/resnet18.tdsl",
    "tritondsl/models/mobilenetv2.tdsl",
    "tritondsl/examples/mixed_precision.tdsl",
    "tritondsl/train/fashion_mnist_5k/t10k-labels-idx1-ubyte.gz",
]
# Run by the venv's Python from the repository root: every package must come from the venv.
PROBE = """
import importlib, importlib.resources, sys
from pathlib import Path
venv = Path(sys.prefix).resolve()
names = ["tritondsl", "tritondsl.compiler", "tritondsl.backend", "tritondsl.kernels",
         "tritondsl.models", "tritondsl.examples", "tritondsl.cli", "tritondsl.export",
         "tritondsl.train"]
for name in names:
    path = Path(importlib.import_module(name).__file__).resolve()
    assert path.is_relative_to(venv), f"{name} comes from {path}, not from the wheel in {venv}"
grammar = importlib.resources.files("tritondsl.compiler") / "tdsl.lark"
assert Path(str(grammar)).resolve().is_relative_to(venv), grammar
print("ok", len(names), "packages from", venv)
"""


def run(command: list[str | Path], **kwargs: object) -> str:
    """Run ``command``; its output, or exit with it shown when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def build_wheel() -> Path:
    """Build the wheel from a clean copy of the tree (no isolation: setuptools from here).

    A copy, because setuptools reuses what earlier builds left beside the sources (build/,
    *.egg-info): a file the package data no longer lists could ride along from there.
    """
    shutil.rmtree(WORK, ignore_errors=True)
    source = WORK / "source"
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():  # a deleted file is still in the index until committed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = WORK / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", out, source])  # fmt: skip
    (wheel,) = out.glob("tritondsl-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    """Only the tritondsl package at the top of site-packages, with its package data."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    extra = {t for t in tops if t != "tritondsl" and not t.endswith(".dist-info")}
    if extra:
        sys.exit(f"{wheel.name} installs more than tritondsl at the top: {sorted(extra)}")
    missing = [path for path in DATA if path not in names]
    if missing:
        sys.exit(f"{wheel.name} lacks package data: {missing}")


def make_venv(wheel: Path) -> Path:
    """A new venv with the wheel installed and this venv's third-party packages visible."""
    env_dir = WORK / "venv"
    venv.create(env_dir, clear=True, with_pip=False)  # this venv's pip installs into it
    python = env_dir / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # Every site-packages folder this Python sees (a venv may layer over another), the
    # repository's own .venv included: a plain path in a .pth adds the folder without running
    # the .pth files in it, so the editable install's finder stays out and the wheel wins.
    folders = [p for p in sys.path if "site-packages" in p]
    (Path(site.strip()) / "_third_party.pth").write_text("\n".join(folders) + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel])
    return python


def main() -> None:
    """Build, check, install and use the wheel; exit non-zero with the reason on failure."""
    wheel = build_wheel()
    check_contents(wheel)
    python = make_venv(wheel)
    print(run([python, "-c", PROBE], cwd=ROOT).strip())
    command = python.parent / "tritondsl"
    out = run([command, "check", "models/resnet18.tdsl"], cwd=ROOT)
    if "ResNet18" not in out:
        sys.exit(f"tritondsl check printed no ResNet18:\n{out}")
    run([command, "check", "resnet18"], cwd=ROOT)  # the zoo name: package data
    print(f"ok: {wheel.name} installed in {python.parent.parent} works from {ROOT}")


if __name__ == "__main__":
    main()
