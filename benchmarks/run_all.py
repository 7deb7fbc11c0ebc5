"""Every benchmark side by side in one run, reported as ratios; writes RESULTS.md and a chart.

    python benchmarks/run_all.py            # full run (about 40 minutes on 2 cores, most
                                            # of it training: bench_finetune.py, bench_lm.py)
    python benchmarks/run_all.py --quick    # small sizes, a smoke test of the whole pipeline
    python benchmarks/run_all.py --reuse-training   # re-measure all but the training sections
    python benchmarks/run_all.py --reuse-training accuracy lm   # ... and re-train "finetune"

Each comparison alternates its variants run by run and reports medians, so machine noise
hits both sides alike. Ratios are what to read; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import tritondsl
from tritondsl.progress import task

ROOT = Path(__file__).resolve().parent.parent
ZOO = ("resnet18", "mobilenetv2")
# compile time and sizes cover the whole CNN zoo; latency and training steps stay on ZOO
CNNS = (*ZOO, "resnet50", "vgg11_bn", "mobilenet_v3_small", "mobilenet_v3_large",
              "efficientnet_b0", "unet")


def alternate(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each variant, running them in turn ``repeats`` times (after a warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    rounds = len(variants) * (repeats + 1)
    with task(f"timing {' vs '.join(variants)}", total=rounds) as advance:
        for run in variants.values():
            run()
            advance(1)
        for _ in range(repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
                advance(1)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_frontend(repeats: int) -> list[tuple[str, float, float]]:
    """`tritondsl check` vs `python -c "import torch"` (wall time of fresh processes)."""
    def command(args: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)

    medians = alternate({
        "check": command([sys.executable, "-m", "tritondsl", "check", "models/resnet18.tdsl"]),
        "import torch": command([sys.executable, "-c", "import torch"]),
    }, repeats)
    return [("tritondsl check resnet18 vs import torch", medians["check"], medians["import torch"])]


def bench_compile(repeats: int) -> list[tuple[str, float]]:
    """Seconds to check + generate + load each zoo model's code."""
    out = []
    for name in CNNS:
        path = ROOT / "models" / f"{name}.tdsl"
        seconds = alternate({name: lambda path=path: tritondsl.compile(path)}, repeats)[name]
        out.append((f"compile {name}", seconds))
    return out


def bench_eager(quick: bool) -> tuple[list[str], dict[str, float]]:
    """Deployed eager latency and cache memory vs fp32 (bench_eager.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_eager  # type: ignore[import-not-found]

    return bench_eager.measure(quick=quick)


def bench_train_step(batch: int, size: int, repeats: int) -> list[tuple[str, float, float]]:
    """One SGD step of quantization-aware training vs the same step in fp32."""
    rows = []
    for name in ZOO:
        models = {"fp32": tritondsl.load_model(name, precision="fp32"),
                  "ternary": tritondsl.load_model(name)}
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
        steps = {k: functools.partial(_train_step, m, torch.optim.SGD(m.parameters(), lr=0.01),
                                      x, y) for k, m in models.items()}
        medians = alternate(steps, repeats)
        rows.append((f"{name} batch {batch} {size}x{size}", medians["fp32"], medians["ternary"]))
    return rows


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> None:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def bench_sizes() -> list[tuple[str, int, int]]:
    """fp32 state_dict bytes vs the deployed (2-bit packed) state_dict."""
    rows = []
    for name in CNNS:
        model = tritondsl.load_model(name)
        fp32 = sum(t.numel() * 4 for t in model.state_dict().values())
        deployed = tritondsl.deploy(copy.deepcopy(model))
        packed = sum(t.numel() * t.element_size() for t in deployed.state_dict().values())
        rows.append((name, fp32, packed))
    return rows


def bench_onnx(quick: bool) -> list[tuple[str, float, float, int, int]]:
    """ONNX Runtime int2 vs fp32 latency and file sizes (see benchmarks/bench_onnx.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import bench_onnx  # type: ignore[import-not-found]
    except ImportError:
        return []
    return bench_onnx.measure(quick=quick)


def bench_int8(quick: bool) -> tuple[list[str], dict[str, float]]:
    """W1.58A8 on onnxruntime's int8 kernels vs fp32, and MatMulNBits (bench_int8.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_int8  # type: ignore[import-not-found]

    return bench_int8.measure(quick=quick)


def bench_zoo(quick: bool) -> tuple[list[str], dict[str, float]]:
    """Issue 15's CNNs at batch 1: ORT fp32 vs W1.58A8, eager fp32 vs deployed (bench_zoo.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_zoo  # type: ignore[import-not-found]

    return bench_zoo.measure(quick=quick)


def bench_check_limits(quick: bool) -> list[tuple[str, int, float, float]]:
    """`check` on hostile inputs at the source size limit (bench_check_limits.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_check_limits  # type: ignore[import-not-found]

    return bench_check_limits.measure(repeats=1 if quick else 3, quick=quick)


ACCURACY_VARIANTS = ("fp32", "ternary", "a8", "a8_lsq", "broken_ste")


def bench_accuracy(quick: bool) -> tuple[dict[str, dict[str, Any]], str, int]:
    """Fashion-MNIST test accuracy of every variant of tests/integration/accuracy.py (same
    epochs, optimizer and seed), each in its own single-threaded process, all at once;
    returns the results by variant (plus ``a8_calibrated``), the data and the epochs."""
    import json

    data, epochs = ("fashion-mnist-5k", 1) if quick else ("fashion-mnist", 3)
    out = Path(tempfile.mkdtemp(prefix="tritondsl-accuracy-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.accuracy", "--variant",
                               v, "--data", data, "--epochs", str(epochs), "--output", str(out)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
             for v in ACCURACY_VARIANTS]  # fmt: skip
    if any(p.wait() for p in procs):
        raise RuntimeError("an accuracy run failed (see its output above)")
    names = (*ACCURACY_VARIANTS, "a8_calibrated")
    return {v: json.loads((out / f"{v}.json").read_text()) for v in names}, data, epochs


def bench_decode(quick: bool) -> list[tuple[str, float, float, float, float]]:
    """Decode tokens/s at batch 1, PyTorch fp32 / ORT fp32 / ORT ternary (bench_decode.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_decode  # type: ignore[import-not-found]

    return bench_decode.measure(quick=quick)


def bench_finetune(quick: bool) -> tuple[dict[str, Any], list[str]]:
    """From fp32 to ternary: fine-tuning accuracy and the ResNet18 flow's time, with the
    markdown tables (see benchmarks/bench_finetune.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_finetune as finetune  # type: ignore[import-not-found]

    results = finetune.measure(quick=quick)
    return results, finetune.tables(results)


def bench_lm(quick: bool) -> tuple[dict[str, Any], list[str]]:
    """A small BitNet LM on fortunes: fp32 / W1.58A32 / W1.58A8 perplexity and the ONNX
    decoder's greedy agreement, with the markdown rows (see benchmarks/bench_lm.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_lm as lm  # type: ignore[import-not-found]

    results = lm.measure(quick=quick)
    return results, lm.table(results)


def machine() -> str:
    """A one-line description of this machine."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


# --reuse-training names: the title each section of RESULTS.md starts with
TRAINING_SECTIONS = {"accuracy": "Fashion-MNIST accuracy", "finetune": "From fp32 to ternary",
                     "lm": "Language model"}


def carried_over(results: Path, prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    """The sections of an earlier RESULTS.md whose titles start with ``prefixes``, dated."""
    if not results.exists():
        raise SystemExit(f"--reuse-training: {results} does not exist; run without it first")
    text = results.read_text()
    measured = re.search(r"^Measured (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    when = measured.group(1) if measured else "an earlier run"
    found: dict[str, list[str]] = {}
    for chunk in text.split("\n## ")[1:]:
        title, *rows = chunk.split("\n")
        if title.startswith(prefixes):
            rows = [r for r in rows if not r.startswith("![ratios]")]
            while rows and not rows[-1].strip():
                rows.pop()
            if rows and rows[-1].startswith("Carried over from"):  # already: keep its date
                found[title] = rows[1:]
                continue
            found[title] = [*rows[1:], "", f"Carried over from the run of {when} "
                            "(`run_all.py --reuse-training` re-measured the other sections)."]
    missing = [p for p in prefixes if not any(t.startswith(p) for t in found)]
    if missing:
        raise SystemExit(f"--reuse-training: {results} has no section {missing[0]!r}")
    return found


def write_report(sections: dict[str, list[str]], chart: dict[str, float], out: Path) -> None:
    """RESULTS.md plus results.png (a bar chart of the ratios)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Benchmark results", "",
             f"Measured {datetime.date.today().isoformat()} on {machine()}.", "",
             "Produced by `python benchmarks/run_all.py`; every ratio compares variants "
             "measured alternately in the same run (medians).", ""]
    for title, rows in sections.items():
        lines += [f"## {title}", "", *rows, ""]
    lines += ["![ratios](results.png)", ""]
    (out / "RESULTS.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(chart) + 1.5))
    ax.barh(list(chart), list(chart.values()), color="#4477aa")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("ratio (see RESULTS.md for what each compares)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def accuracy_section(quick: bool, chart: dict[str, float]) -> dict[str, list[str]]:
    """Fashion-MNIST accuracy of fp32, W1.58A32 and the W1.58A8 variants."""
    results, data, epochs = bench_accuracy(quick)
    table = ["| variant | test accuracy | vs W1.58A32 |", "|---|---|---|"]
    labels = {"fp32": "fp32 (weights and activations)",
              "ternary": "W1.58A32 (ternary convs, float activations)",
              "a8": "W1.58A8 trained (observed input scales)",
              "a8_lsq": "W1.58A8 trained (learned, LSQ input scales)",
              "a8_calibrated": "W1.58A8 calibrated only (W1.58A32's weights, 2,048 images)",
              "broken_ste": "W1.58A32 with the STE broken (control)"}  # fmt: skip
    base = results["ternary"]["test_accuracy"]
    for variant, label in labels.items():
        acc = results[variant]["test_accuracy"]
        table.append(f"| {label} | {acc:.2%} | {(acc - base) * 100:+.2f} pt |")
    trained = results["a8"]["test_accuracy"]
    short = (base - 0.005 - trained) * 100
    verdict = "met" if short <= 0 else f"missed by {short:.2f} pt"
    table += ["", f"Goal: W1.58A8 trained >= W1.58A32 - 0.5 pt: {verdict}."]
    chart["Fashion-MNIST W1.58A8 trained / W1.58A32 accuracy"] = trained / base
    return {f"{TRAINING_SECTIONS['accuracy']}: {data}, {epochs} epochs, FashionCNN width 16, "
            "AdamW 3e-3 cosine, seed 0 (`python -m tests.integration.accuracy`)": table}


def finetune_section(quick: bool, chart: dict[str, float]) -> dict[str, list[str]]:
    """fp32 -> ternary: from scratch, fine-tuned, distilled; the ResNet18 flow."""
    finetune, table = bench_finetune(quick)
    rows = finetune["fashion"]
    chart["FashionCNN all-ternary accuracy, fine-tuned + distillation / fp32"] = (
        rows["ternary fine-tuned + distillation"]["test_acc"] / rows["fp32 (3 epochs)"]["test_acc"])
    chart["ResNet18 init -> fine-tune -> ONNX seconds / 300 s"] = (
        finetune["resnet"]["flow_s"] / 300)
    return {f"{TRAINING_SECTIONS['finetune']} (goals: fine-tuned + distillation within 0.5 pt of "
            "fp32, ahead of from-scratch; ResNet18 flow <= 300 s)": table}


def lm_section(quick: bool, chart: dict[str, float]) -> dict[str, list[str]]:
    """The bitnet_b158 language model: perplexities and the ONNX decoder's agreement."""
    lm, table = bench_lm(quick)
    size, variants = lm["size"], lm["variants"]
    chart["LM perplexity W1.58A8 / fp32"] = (variants["W1.58A8"]["val_ppl"]
                                             / variants["fp32"]["val_ppl"])  # fmt: skip
    return {f"{TRAINING_SECTIONS['lm']}: bitnet_b158 ({size['layers']} layers, dim {size['dim']}, "
            f"byte tokens) on fortunes, {variants['fp32']['step']} steps each (goals: ternary "
            "perplexity <= 1.15x fp32; ONNX decoder same greedy token >= 99%)": table}


MEASURE_TRAINING = {"accuracy": accuracy_section, "finetune": finetune_section, "lm": lm_section}


def main() -> None:
    """Run everything and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent)
    parser.add_argument("--reuse-training", nargs="*", choices=tuple(TRAINING_SECTIONS),
                        metavar="SECTION",
                        help="keep these training sections (all three when none is named: "
                             "accuracy, finetune, lm; ~25 min) of the existing RESULTS.md; "
                             "re-measure the rest")
    args = parser.parse_args()
    quick = args.quick
    repeats = 2 if quick else 5
    sections: dict[str, list[str]] = {}
    chart: dict[str, float] = {}

    table = ["| comparison | tritondsl | baseline | ratio |", "|---|---|---|---|"]
    for label, ours, base in bench_frontend(repeats):
        table.append(f"| {label} | {ours:.3f} s | {base:.3f} s | {ours / base:.2f} |")
        chart["check / import torch"] = ours / base
    sections["Front end (target: ratio <= 0.5)"] = table

    table = ["| input at the size limit | bytes | best | median |", "|---|---|---|---|"]
    for label, size_bytes, best, median in bench_check_limits(quick):
        table.append(f"| {label} | {size_bytes:,} | {best:.2f} s | {median:.2f} s |")
    sections["Front end on hostile input (target: every median <= 2 s)"] = table

    table = ["| model | compile (check + codegen + load) |", "|---|---|"]
    table += [f"| {label} | {s * 1000:.0f} ms |" for label, s in bench_compile(repeats)]
    sections["Compile time"] = table

    table, eager_chart = bench_eager(quick)
    chart.update(eager_chart)
    sections["Deployed eager CPU latency vs fp32 (goal: default int8 cache <= 1.1x at batch 1, "
             "with 1/4 of the fp32 weight bytes)"] = table

    table = ["| model, input | fp32 step | QAT step | ratio |", "|---|---|---|---|"]
    for label, fp32, tern in bench_train_step(4 if quick else 32, 32, repeats):
        table.append(f"| {label} | {fp32 * 1e3:.0f} ms | {tern * 1e3:.0f} ms | {tern / fp32:.2f} |")
        chart[f"QAT/fp32 train step {label}"] = tern / fp32
    sections["Training step: quantization-aware vs fp32"] = table

    table = ["| model | fp32 state_dict | deployed state_dict | smaller by |", "|---|---|---|---|"]
    for name, fp32_bytes, packed in bench_sizes():
        table.append(f"| {name} | {fp32_bytes:,} B | {packed:,} B | {fp32_bytes / packed:.1f}x |")
    sections["Model bytes"] = table

    onnx_rows = bench_onnx(quick)
    if onnx_rows:
        table = ["| model | fp32 ONNX | int2 ONNX | latency ratio | fp32 file | int2 file |",
                 "|---|---|---|---|---|---|"]
        for label, fp32, int2, fp32_size, int2_size in onnx_rows:
            table.append(f"| {label} | {fp32 * 1e3:.1f} ms | {int2 * 1e3:.1f} ms | "
                         f"{int2 / fp32:.2f} | {fp32_size:,} B | {int2_size:,} B |")
            chart[f"onnxruntime int2/fp32 {label}"] = int2 / fp32
        sections["ONNX Runtime (target: int2 <= 1.1x fp32)"] = table

    table, int8_chart = bench_int8(quick)
    chart.update(int8_chart)
    sections["ONNX Runtime int8 kernels: W1.58A8 vs fp32 (goals at batch 1: ResNet18 <= 0.30x, "
             "MobileNetV2 <= 0.65x; files 1/12 and 1/6 of fp32)"] = table

    table, zoo_chart = bench_zoo(quick)
    chart.update(zoo_chart)
    sections["The newer zoo CNNs at batch 1: ONNX Runtime fp32 vs W1.58A8, eager fp32 vs "
             "deployed"] = table

    table = ["| decoder | PyTorch fp32 | ORT fp32 | ORT ternary "
             "| ternary / ORT fp32 (median; fastest step) |",
             "|---|---|---|---|---|"]
    for label, torch_rate, fp32_rate, ternary_rate, fastest in bench_decode(quick):
        table.append(f"| {label} | {torch_rate:.1f} tok/s | {fp32_rate:.1f} tok/s | "
                     f"{ternary_rate:.1f} tok/s | {ternary_rate / fp32_rate:.2f}x; "
                     f"{fastest:.2f}x |")
        chart[f"decode s/token ORT ternary/fp32 {label}"] = fp32_rate / ternary_rate
    sections["Decoding at batch 1 (goal: ORT ternary >= 3x ORT fp32 at dim >= 1024)"] = table

    reused = (() if args.reuse_training is None
              else args.reuse_training or tuple(TRAINING_SECTIONS))  # fmt: skip
    for key, measure in MEASURE_TRAINING.items():
        if key in reused:
            sections.update(carried_over(args.output / "RESULTS.md", (TRAINING_SECTIONS[key],)))
        else:
            sections.update(measure(quick, chart))

    out = args.output if not quick else Path(tempfile.mkdtemp(prefix="tritondsl-bench-"))
    write_report(sections, chart, out)
    print((out / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
