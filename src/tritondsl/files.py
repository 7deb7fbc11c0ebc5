"""Writing files and folders atomically: a reader sees the old version or the new, never half.

Everything tritondsl writes (generated modules, logs, plots, checkpoints, artifacts) goes
through here: data goes to a temporary name in the same folder, is flushed to disk, and is
renamed over the target with ``os.replace``; the folder is then fsynced so the rename itself
survives a crash. On any error the temporary file or folder is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class OutputError(OSError):
    """A file or folder tritondsl was asked to write cannot be written there (in words)."""


def check_output_file(path: str | Path) -> Path:
    """``path`` as a Path if a file can be created or replaced there; OutputError if not."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; give a file path")
    if not target.parent.exists():
        raise OutputError(f"cannot write {target}: the folder {target.parent} does not exist")
    if not target.parent.is_dir():
        raise OutputError(f"cannot write {target}: {target.parent} is a file, not a folder")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"cannot write {target}: no permission to write in {target.parent}")
    return target


def _in_words(error: OSError, target: Path) -> OutputError:
    reason = error.strerror or str(error)
    return OutputError(f"cannot write {target}: {reason[0].lower()}{reason[1:]}")


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8)."""
    payload = data.encode() if isinstance(data, str) else data
    with open_atomically(path) as file:
        file.write(payload)


@contextlib.contextmanager
def open_atomically(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through; it replaces ``path`` when the block ends."""
    target = check_output_file(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:  # a read-only file system, a full disk
        raise _in_words(error, target) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise (error if isinstance(error, OutputError) else _in_words(error, target)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def replace_dir(final: str | Path, fill: Callable[[Path], object]) -> None:
    """Build a folder with ``fill(tmp)`` under a temporary name, then put it at ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
    old = final.with_name(f".{final.name}.old")
    try:
        fill(tmp)
        umask = _umask()
        # mkdtemp makes the folder private (0700); give it the modes a plain mkdir would.
        tmp.chmod(0o777 & ~umask)
        for item in tmp.rglob("*"):
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)
            if item.is_file():
                _fsync_file(item)
        _fsync_dir(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)  # put the previous version back
        raise
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final.parent)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync_file(path: Path) -> None:
    with path.open("rb") as file:
        os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    # Not every platform or file system can fsync a directory; the data itself is synced.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
