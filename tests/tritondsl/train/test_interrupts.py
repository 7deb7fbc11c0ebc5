"""Ctrl-C: every SIGINT stops training (exit 130 in a shell), and no write is left half done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.tritondsl.train.conftest import MLP, tiny
from tritondsl.train import Trainer, interrupts
from tritondsl.train import checkpoint as ckpt


def sigint() -> None:
    """Send SIGINT to this process and give the handler the moment it needs to run."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        time.sleep(0.001)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (the atomic writers' ``.NAME.tmp*``, ``.NAME.old``)."""
    return [str(p) for p in folder.rglob(".*") if ".tmp" in p.name or p.name.endswith(".old")]


def test_a_swallowed_interrupt_is_raised_again_at_the_next_check() -> None:
    swallowed = False
    with pytest.raises(KeyboardInterrupt), interrupts.catching():
        try:
            sigint()
        except KeyboardInterrupt:
            swallowed = True  # as a finalizer or a library's `except BaseException` would
        interrupts.check()
        pytest.fail("check() let a remembered interrupt pass")
    assert swallowed


def test_a_deferred_block_runs_to_its_end_and_the_interrupt_follows() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.catching(), interrupts.deferred():
        sigint()
        interrupts.check()  # inside the block: still held back
        done.append(True)
    assert done == [True]


def test_an_error_after_an_interrupt_is_reported_as_the_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.catching(), interrupts.deferred():
        sigint()
        raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")


def test_the_previous_handler_comes_back_and_no_interrupt_outlives_its_block() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupts.catching():
        sigint()
    assert signal.getsignal(signal.SIGINT) is before
    with interrupts.catching():
        interrupts.check()  # the earlier interrupt is not pending in a new run


@pytest.mark.slow
def test_an_interrupt_during_the_checkpoint_write_waits_for_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []
    real_write = ckpt.write

    def write_interrupted(folder: Path, *args: object, **kwargs: object) -> None:
        # The signal lands after the first file of the checkpoint is on disk.
        real_save = ckpt.save_file

        def save_then_interrupt(*a: object, **k: object) -> None:
            real_save(*a, **k)  # type: ignore[arg-type]
            sigint()

        monkeypatch.setattr(ckpt, "save_file", save_then_interrupt)
        real_write(folder, *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(ckpt, "save_file", real_save)
        written.append(folder)

    monkeypatch.setattr(ckpt, "write", write_interrupted)
    trainer = Trainer(tiny(tmp_path / "run", epochs=3))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert len(written) == 1, "training went on after the interrupt"
    assert ckpt.read(tmp_path / "run").state["epoch"] == 1
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_at_many_moments_of_a_run_exits_130_and_leaves_nothing_half_written(
    tmp_path: Path,
) -> None:
    # From the imports through data loading, the first epochs, checkpoint writes and plots.
    delays = (0.4, 0.9, 1.4, 1.9, 2.3, 2.8, 3.4, 4.1, 5.0, 6.5)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i, delay in enumerate(delays):
        out = tmp_path / f"run{i}"
        command = [sys.executable, "-m", "tritondsl", "train", MLP, "--data", "synthetic",
                   "--param", "hidden=[16]", "--epochs", "100000", "--limit-train", "64",
                   "--limit-test", "32", "--batch-size", "32", "-o", str(out),
                   "--no-progress"]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"SIGINT after {delay} s did not stop the run within 60 s")
        # 130 from tritondsl's handler, or death by SIGINT, which a shell reports as 130 too.
        # CI saw the latter once in 10 (no traceback printed); the likely, unconfirmed cause
        # is CPython's exit path, which re-raises SIGINT when it recorded a KeyboardInterrupt
        # in code run through its C API even though Python code caught it afterwards.
        assert process.returncode in (130, -signal.SIGINT), f"SIGINT after {delay} s:\n{output}"
        assert "Traceback" not in output, output
        if out.exists():
            assert leftovers(out) == [], f"SIGINT after {delay} s"
            if (out / "checkpoints" / "last").exists():
                ckpt.read(out)  # whole, or not there at all
