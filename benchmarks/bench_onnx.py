"""ONNX Runtime latency of INT2 ternary files vs fp32 files, ResNet18 and MobileNetV2, on CPU.

For each model, exports the ternary model with ``weights="int2"`` and the same architecture
at ``precision="fp32"`` (every layer float) with the same exporter, then times one
``session.run`` of each alternately (the starting file rotates every round, so machine
noise hits both alike) and prints medians, the int2 / fp32 ratio (target <= 1.10) and
file sizes.

The int2 runner sets ``session.disable_quant_qdq=1`` (``onnx_verify.create_session``):
without it onnxruntime keeps the DequantizeLinear nodes and dequantizes every weight on
every run. The "int2, DQ kept" column measures that default for comparison.

    python benchmarks/bench_onnx.py [--full] [--rounds 30] [--size 224] [--threads N]

``--full`` adds batch 32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from timing import interleaved  # type: ignore[import-not-found]

from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_verify import create_session
from tritondsl.program import load_model

MODELS = ("resnet18", "mobilenetv2")
TARGET = 1.10


def _export(name: str, folder: Path, size: int) -> dict[str, Path]:
    example = torch.randn(1, 3, size, size)
    paths = {"int2": folder / f"{name}-int2.onnx", "fp32": folder / f"{name}-fp32.onnx"}
    export_onnx(load_model(name), paths["int2"], example, "int2")
    export_onnx(load_model(name, precision="fp32"), paths["fp32"], example, "float")
    return paths


def _measure(
    paths: dict[str, Path], batch: int, size: int, rounds: int, threads: int | None
) -> dict[str, float]:
    """Median seconds per run of each session, measured round-robin."""
    sessions = {
        "fp32": create_session(paths["fp32"], threads=threads),
        "int2": create_session(paths["int2"], threads=threads),
        "int2, DQ kept": create_session(
            paths["int2"], fold_weight_dequantize=False, threads=threads
        ),
    }
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    return {name: median for name, (_, median) in interleaved(sessions, feeds, rounds).items()}


def measure(quick: bool = False) -> list[tuple[str, float, float, int, int]]:
    """(label, fp32 s, int2 s, fp32 file bytes, int2 file bytes) for run_all.py."""
    size, rounds, batches = (64, 5, (1,)) if quick else (224, 30, (1, 32))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            paths = _export(name, Path(tmp), size)
            fp32_bytes, int2_bytes = (paths[k].stat().st_size for k in ("fp32", "int2"))
            for batch in batches:
                med = _measure(paths, batch, size, rounds, None)
                rows.append((f"{name} batch {batch} {size}x{size}", med["fp32"], med["int2"],
                             fp32_bytes, int2_bytes))
    return rows


def main() -> None:
    """Export, measure and print a table of medians, ratios and file sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also batch 32")
    parser.add_argument("--rounds", type=int, default=30, help="timed runs per session")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    batches = (1, 32) if args.full else (1,)
    print(
        f"onnxruntime CPU, {os.cpu_count()} cores, threads={args.threads or 'default'}, "
        f"input {args.size}x{args.size}, {args.rounds} alternating rounds, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = f"{'model':<12} {'batch':>5} {'fp32 ms':>9} {'int2 ms':>9} {'int2/fp32':>9} "
    print(header + f"{'int2, DQ kept ms':>17} {'ratio':>6}")
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            paths = _export(name, Path(tmp), args.size)
            fp32_mb, int2_mb = (paths[k].stat().st_size / 1e6 for k in ("fp32", "int2"))
            sizes.append((name, fp32_mb, int2_mb))
            for batch in batches:
                med = _measure(paths, batch, args.size, args.rounds, args.threads)
                ratio = med["int2"] / med["fp32"]
                flag = "" if ratio <= TARGET else "  (above target)"
                kept = med["int2, DQ kept"]
                print(
                    f"{name:<12} {batch:>5} {1e3 * med['fp32']:>9.2f} {1e3 * med['int2']:>9.2f} "
                    f"{ratio:>8.2f}x {1e3 * kept:>17.2f} {kept / med['fp32']:>5.2f}x{flag}"
                )
    print(f"target: int2 / fp32 <= {TARGET:.2f}x with session.disable_quant_qdq=1")
    for name, fp32_mb, int2_mb in sizes:
        print(
            f"{name:<12} file sizes: fp32 {fp32_mb:.2f} MB, int2 {int2_mb:.2f} MB "
            f"({fp32_mb / int2_mb:.1f}x smaller)"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
