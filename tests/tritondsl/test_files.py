"""Atomic writes: a reader sees the old version or the new, and a failure leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritondsl.files import OutputError, open_atomically, replace_dir, write_atomically


def names(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden temporary ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_write_replaces_the_file_whole_with_plain_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.py"
    target.write_text("old")
    write_atomically(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert names(tmp_path) == ["out.py"]


def test_a_failure_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), open_atomically(target) as file:
        file.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/out.py", r"the folder .*missing does not exist"),
        (".", "it is a folder; give a file path"),
        ("a_file/out.py", "a_file is a file, not a folder"),
    ],
)
def test_an_impossible_target_is_one_error_in_words(tmp_path: Path, where: str,
                                                    message: str) -> None:  # fmt: skip
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match=message):
        write_atomically(tmp_path / where, "data")
    assert names(tmp_path) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_folder_without_write_permission_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="no permission to write in"):
        write_atomically(locked / "out.py", "data")


def test_a_folder_is_swapped_in_whole_and_kept_when_filling_fails(tmp_path: Path) -> None:
    final = tmp_path / "hub"
    replace_dir(final, lambda tmp: (tmp / "a.txt").write_text("one"))
    assert (final / "a.txt").read_text() == "one"

    def fail_halfway(tmp: Path) -> None:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        replace_dir(final, fail_halfway)
    assert names(tmp_path) == ["hub", "hub/a.txt"]
    replace_dir(final, lambda tmp: (tmp / "c.txt").write_text("two"))
    assert names(tmp_path) == ["hub", "hub/c.txt"]
