"""The model zoo: .tdsl programs shipped inside the package, found by name.

Every ``*.tdsl`` file here (``resnet18``, ``mobilenetv2``, ...) and in the packaged examples
(``fashion_mnist``, ``ternary_mlp``, ...) is a zoo name, so an installed wheel runs
``tritondsl check resnet18`` or ``tritondsl train fashion_mnist`` without the repository.
Torch-free: ``tritondsl check`` resolves names through this module.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Other spellings users type for a zoo model.
ALIASES = {"mobilenet_v2": "mobilenetv2"}
_PACKAGES = ("tritondsl.models", "tritondsl.examples")


def _scan() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in _PACKAGES:
        folder = resources.files(package)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".tdsl"):
                found.setdefault(entry.name.removesuffix(".tdsl").lower(), Path(str(entry)))
    for alias, name in ALIASES.items():
        if name in found:
            found[alias] = found[name]
    return found


ZOO: dict[str, Path] = _scan()  # name -> packaged .tdsl file


def zoo_path(name: str) -> Path:
    """Path of a zoo model's .tdsl file inside the installed package."""
    return ZOO[name.lower()]


def resolve(name_or_path: str | Path) -> Path:
    """An existing file as is, else the zoo file of that name, else the path (the caller's
    read then fails with "cannot read file")."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path).lower() not in ZOO:
        return path
    return zoo_path(str(name_or_path))


def zoo_names() -> str:
    """The zoo names, comma-separated, for messages and --help."""
    return ", ".join(sorted(ZOO))
