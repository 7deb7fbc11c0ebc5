"""DDP on CPU with gloo on loopback: torchrun's 2 processes reach one process's weights, and
a distributed run resumes bit for bit (2 processes forked from the test, to save imports).

Why equality holds: with ``--batch-size 32`` each of the 2 processes takes 16 samples per
step, and DistributedSampler gives process r the positions r, r+2, ... of the epoch's
permutation, so together they see exactly the single process's batch; DDP averages the
two mean-loss gradients, which is the mean over all 32. The model is the MLP at
``--precision fp32`` with dropout 0: no BatchNorm (DDP keeps per-process batch statistics
on CPU, where SyncBatchNorm does not exist), no random masks that would differ per
process, and no ternary thresholds where a last-bit difference in the all-reduced sum
could flip a trit. What remains is summation order, hence a float tolerance.
"""

from __future__ import annotations

import csv
import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.tritondsl.train.conftest import MLP, tiny
from tritondsl.train import TrainConfig, Trainer

ARGS = ["--param", "hidden=[16]", "--param", "dropout=0", "--precision", "fp32",
        "--optimizer", "sgd", "--momentum", "0", "--lr", "0.1", "--batch-size", "32",
        "--limit-train", "256", "--limit-test", "64", "--epochs", "2", "--device", "cpu",
        "--no-progress"]  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(*args: str) -> str:
    """Run ``tritondsl train ARGS`` in 2 gloo processes on loopback; return their log (stderr)."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "tritondsl", "train", MLP, *args,
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    logged = torchrun(*ARGS, "--output", str(tmp_path / "ddp"))
    assert "over 2 process(es)" in logged
    assert logged.count("epoch 2/2: train loss") == 1  # only rank 0 reports (and writes)

    single = tiny(tmp_path / "one", params={"hidden": [16], "dropout": 0}, precision="fp32",
                  momentum=0.0, lr=0.1, limit_test=64, device="cpu")  # fmt: skip
    history = Trainer(single).fit()
    ddp = load_file(tmp_path / "ddp" / "checkpoints" / "last" / "model.safetensors")
    one = load_file(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")
    assert ddp.keys() == one.keys()
    for name in one:
        assert torch.allclose(ddp[name], one[name], rtol=1e-5, atol=1e-6), name
    # The weights moved (so the comparison means something) and the logs agree too.
    init = Trainer(tiny(tmp_path / "init", params={"hidden": [16], "dropout": 0},
                        precision="fp32")).model.state_dict()  # fmt: skip
    assert not torch.allclose(init["out.weight"], one["out.weight"], atol=1e-3)
    rows = list(csv.DictReader((tmp_path / "ddp" / "metrics.csv").open()))
    assert float(rows[-1]["test_acc"]) == history[-1]["test_acc"]
    assert float(rows[-1]["train_loss"]) == pytest.approx(history[-1]["train_loss"], rel=1e-5)


def _worker(rank: int, port: int, config: TrainConfig) -> None:
    """One forked DDP process: torchrun's environment variables, then the Trainer."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": "lo"})  # fmt: skip
    torch.set_num_threads(1)
    Trainer(config).fit()
    # A forked process ends in os._exit anyway; ending here, before the Trainer is collected,
    # skips the DDP reducer's ProcessGroupGloo destructor, whose thread join once hung a
    # whole CI run after training had finished and written its checkpoints.
    os._exit(0)


def fork_ddp(config: TrainConfig) -> None:
    """Train ``config`` in 2 gloo processes forked from this one (no new torch imports)."""
    mp.start_processes(_worker, args=(free_port(), config), nprocs=2, start_method="fork")


@pytest.mark.slow
def test_distributed_resume_is_bit_exact_with_dropout(tmp_path: Path) -> None:
    # Each process has its own dropout stream; the checkpoint keeps all of them.
    fork_ddp(tiny(tmp_path / "straight", limit_train=128, limit_test=32, device="cpu"))
    fork_ddp(tiny(tmp_path / "split", limit_train=128, limit_test=32, device="cpu", stop_after=1))
    fork_ddp(tiny(tmp_path / "split", limit_train=128, limit_test=32, device="cpu",
                  resume=tmp_path / "split"))  # fmt: skip
    for name in ("model.safetensors", "rng.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "last" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "last" / name)
        assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    assert not torch.equal(a["rank0.torch"], a["rank1.torch"])


@pytest.mark.slow
def test_a_checkpoint_resumes_on_another_number_of_processes(tmp_path: Path) -> None:
    # The fp32 MLP without dropout or momentum: 2 processes compute what 1 does (see the top),
    # so 1 epoch on 2 processes + 1 on 1, and 1 on 1 + 1 on 2, both reach 2 epochs on 1.
    config = functools.partial(tiny, params={"hidden": [16], "dropout": 0}, precision="fp32",
                               momentum=0.0, lr=0.1, limit_test=64, device="cpu")  # fmt: skip
    Trainer(config(tmp_path / "one")).fit()
    fork_ddp(config(tmp_path / "two_then_one", stop_after=1))
    history = Trainer(config(tmp_path / "two_then_one", resume=tmp_path / "two_then_one")).fit()
    assert [record["epoch"] for record in history] == [1, 2]
    Trainer(config(tmp_path / "one_then_two", stop_after=1)).fit()
    fork_ddp(config(tmp_path / "one_then_two", resume=tmp_path / "one_then_two"))
    one = load_file(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")
    for run in ("two_then_one", "one_then_two"):
        other = load_file(tmp_path / run / "checkpoints" / "last" / "model.safetensors")
        assert other.keys() == one.keys()
        for name in one:
            assert torch.allclose(other[name], one[name], rtol=1e-5, atol=1e-6), (run, name)
    rng = load_file(tmp_path / "one_then_two" / "checkpoints" / "last" / "rng.safetensors")
    assert {key.split(".")[0] for key in rng} == {"rank0", "rank1"}
