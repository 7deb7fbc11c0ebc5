"""W1.58A8 on onnxruntime's int8 kernels vs fp32: zoo CNNs and 2-bit MatMulNBits, on CPU.

CNNs (ResNet18, MobileNetV2, 224x224, batch 1 and 8, 1 and 2 threads): the ternary zoo
model exported with ``activations="int8"`` (BatchNorm folded, trits 2-bit on disk, input
scales calibrated on a few random batches: latency does not depend on their values) and the
same architecture at ``precision="fp32"`` exported ``weights="float"``, both opened with
``tritondsl.onnx_session`` (and the int8 file once more in a plain onnxruntime session,
without the loader's rewrite). Each round runs every session once, the starting session rotating,
so machine noise hits both alike; the report gives the min and median of each series and the
ratio of the minima (this host is noisy: the minimum is what the kernels can do). The int8
file is also profiled (onnxruntime's profiler, one thread, batch 1): the share of time per
operator type says where the time goes when a goal is missed.

Linear (M = 1 and 16; K = N = 1024, 2048, 4096): one ``MatMulNBits`` node (bits=2, the
lookup-table kernel through ``onnx_session``) vs one fp32 ``MatMul``, interleaved the same way.

    python benchmarks/bench_int8.py [--rounds 40] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from timing import interleaved  # type: ignore[import-not-found]

from tritondsl.export.api import to_onnx
from tritondsl.export.matmul_nbits import DOMAIN, matmul_nbits
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_session import onnx_session
from tritondsl.program import load_model

MODELS = ("resnet18", "mobilenetv2")
# Issue 14's goals at batch 1: int8 latency / fp32 latency, and fp32 file / int8 file.
LATENCY_GOAL = {"resnet18": 0.30, "mobilenetv2": 0.65}
SIZE_GOAL = {"resnet18": 12, "mobilenetv2": 6}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of the instruction sets int8 speed depends on this CPU has."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    return [f for f in CPU_FLAGS if f in flags]


def _export_cnn(name: str, folder: Path, size: int) -> dict[str, Path]:
    paths = {"fp32": folder / f"{name}-fp32.onnx", "int8": folder / f"{name}-int8.onnx"}
    export_onnx(load_model(name, precision="fp32"), paths["fp32"], torch.randn(1, 3, size, size),
                "float")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, 3, size, size, generator=gen) for _ in range(2)]
    to_onnx(load_model(name), paths["int8"], calibration[0][:1], verify=False,
            activations="int8", calibration=calibration)  # fmt: skip
    return paths


def _plain_session(path: Path, threads: int) -> ort.InferenceSession:
    """The int8 file in onnxruntime as it comes, without onnx_session's rewrite."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile(path: Path, size: int, runs: int = 20) -> list[tuple[str, float]]:
    """Share of onnxruntime's node time per operator type (one thread, batch 1), largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = onnx_session(path, sess_options=options, threads=1)
        x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in per_op.items()), key=lambda x: -x[1])


def measure_cnns(rounds: int, quick: bool) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Latency rows (model, batch, threads, min/median of fp32 and int8, file bytes) and each
    model's int8 profile."""
    size = 64 if quick else 224
    batches, all_threads = ((1,), (2,)) if quick else ((1, 8), (1, 2))
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            paths = _export_cnn(name, Path(tmp), size)
            sizes = {k: p.stat().st_size for k, p in paths.items()}
            for threads in all_threads:
                sessions = {k: onnx_session(p, threads=threads) for k, p in paths.items()}
                sessions["plain"] = _plain_session(paths["int8"], threads)
                for batch in batches:
                    x = np.random.default_rng(1).standard_normal(
                        (batch, 3, size, size), dtype=np.float32)
                    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
                    t = interleaved(sessions, feeds, rounds)
                    rows.append({"model": name, "batch": batch, "threads": threads, "size": size,
                                 "fp32": t["fp32"], "int8": t["int8"], "plain": t["plain"],
                                 "fp32_bytes": sizes["fp32"], "int8_bytes": sizes["int8"]})
            profiles[name] = profile(paths["int8"], size)
    return rows, profiles


def _linear_model(m: int, k: int, n: int, nbits: bool) -> bytes:
    rng = np.random.default_rng(0)
    trits = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    scale = np.full(n, 0.01, np.float32)
    if nbits:
        node, inits = matmul_nbits("fc", "A", "Y", trits, scale)
    else:
        weight = (trits.astype(np.float32) * scale[:, None]).T.copy()
        inits = [numpy_helper.from_array(weight, "W")]
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def measure_linear(rounds: int, quick: bool, threads: int = 2) -> list[dict[str, Any]]:
    """MatMulNBits (2-bit, lookup table) vs fp32 MatMul: (M, K=N, min/median of each)."""
    dims, ms = ((1024,), (1,)) if quick else ((1024, 2048, 4096), (1, 16))
    rows = []
    for d in dims:
        for m in ms:
            sessions = {"fp32": onnx_session(_linear_model(m, d, d, False), threads=threads),
                        "nbits": onnx_session(_linear_model(m, d, d, True), threads=threads)}
            a = np.random.default_rng(2).standard_normal((m, d), dtype=np.float32)
            t = interleaved(sessions, {k: {"A": a} for k in sessions}, rounds)
            rows.append({"m": m, "k": d, "n": d, "threads": threads, **t})
    return rows


def tables(cnn: list[dict[str, Any]], profiles: dict[str, list], linear: list[dict[str, Any]]
           ) -> list[str]:  # fmt: skip
    """Markdown for RESULTS.md: latency, file bytes against the goals, profiles, MatMulNBits."""
    out = [f"CPU flags: {', '.join(cpu_flags()) or 'none of ' + ', '.join(CPU_FLAGS)}.", "",
           "W1.58A8 runs through `tritondsl.onnx_session`; *plain onnxruntime* is the same file "
           "in `onnxruntime.InferenceSession` without its rewrite.", "",
           "| model, input | threads | fp32 min / median | W1.58A8 min / median | "
           "min ratio | goal (batch 1) | plain onnxruntime min / median |",
           "|---|---|---|---|---|---|---|"]
    for r in cnn:
        ratio = r["int8"][0] / r["fp32"][0]
        goal = LATENCY_GOAL[r["model"]]
        verdict = "" if r["batch"] != 1 else (
            f"<= {goal:.2f}: met" if ratio <= goal else
            f"<= {goal:.2f}: missed by {ratio / goal - 1:.0%}")
        out.append(f"| {r['model']} batch {r['batch']} {r['size']}x{r['size']} | {r['threads']} "
                   f"| {r['fp32'][0] * 1e3:.1f} / {r['fp32'][1] * 1e3:.1f} ms "
                   f"| {r['int8'][0] * 1e3:.1f} / {r['int8'][1] * 1e3:.1f} ms "
                   f"| {ratio:.2f}x | {verdict} "
                   f"| {r['plain'][0] * 1e3:.1f} / {r['plain'][1] * 1e3:.1f} ms |")
    out += ["", "| model | fp32 ONNX | W1.58A8 ONNX | smaller by | goal |", "|---|---|---|---|---|"]
    for name in MODELS:
        r = next(r for r in cnn if r["model"] == name)
        by = r["fp32_bytes"] / r["int8_bytes"]
        verdict = "met" if by >= SIZE_GOAL[name] else "missed"
        out.append(f"| {name} | {r['fp32_bytes']:,} B | {r['int8_bytes']:,} B | {by:.1f}x "
                   f"| >= {SIZE_GOAL[name]}x: {verdict} |")
    out += ["", "Where the W1.58A8 time goes (onnxruntime profiler, 1 thread, batch 1; share of "
            "node time):", "", "| model | operators |", "|---|---|"]
    for name, shares in profiles.items():
        top = ", ".join(f"{op} {share:.0%}" for op, share in shares[:6])
        out.append(f"| {name} | {top} |")
    out += ["", "| M, K = N | threads | fp32 MatMul min / median | MatMulNBits 2-bit min / median "
            "| min ratio |", "|---|---|---|---|---|"]
    for r in linear:
        out.append(f"| {r['m']}, {r['k']} | {r['threads']} "
                   f"| {r['fp32'][0] * 1e6:.0f} / {r['fp32'][1] * 1e6:.0f} us "
                   f"| {r['nbits'][0] * 1e6:.0f} / {r['nbits'][1] * 1e6:.0f} us "
                   f"| {r['nbits'][0] / r['fp32'][0]:.2f}x |")
    return out


def measure(quick: bool = False, rounds: int = 40) -> tuple[list[str], dict[str, float]]:
    """RESULTS.md lines and chart ratios, for run_all.py."""
    warnings.simplefilter("ignore")
    ort.set_default_logger_severity(3)  # its notes on folded constants are not results
    cnn, profiles = measure_cnns(5 if quick else rounds, quick)
    linear = measure_linear(5 if quick else rounds, quick)
    chart = {f"ORT W1.58A8/fp32 {r['model']} batch {r['batch']} {r['threads']}t (min)":
             r["int8"][0] / r["fp32"][0] for r in cnn if r["batch"] == 1}  # fmt: skip
    chart.update({f"MatMulNBits/fp32 MatMul M={r['m']} K=N={r['k']} (min)":
                  r["nbits"][0] / r["fp32"][0] for r in linear})  # fmt: skip
    return tables(cnn, profiles, linear), chart


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds per series")
    parser.add_argument("--quick", action="store_true", help="64x64, few rounds (a smoke run)")
    args = parser.parse_args()
    lines, _ = measure(args.quick, args.rounds)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
