"""Deployed ternary models in eager PyTorch vs the same architecture in fp32, on CPU.

    python benchmarks/bench_eager.py [--rounds 40] [--quick]

ResNet18 and MobileNetV2 at 224x224: the fp32 model, the deployed ternary model with its
default weight cache (``"int8"``: int8 trits and scales, a float weight rebuilt per forward)
and with ``weight_cache="float"`` (the dequantized weight kept). Batch 1 at 1 and 2 threads
over ``--rounds`` interleaved rounds, batch 32 at 2 threads over a quarter as many (each
forward takes about a second); min and median of each series, ratios of the minima. The
memory column is what each cache holds once filled, over the fp32 model's weight bytes.
Goal (issue 14): the default cache at batch 1 <= 1.1x fp32 latency with <= 1/4 of the fp32
weight memory.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from timing import Eager, interleaved  # type: ignore[import-not-found]

from tritondsl import deploy
from tritondsl.backend.layers import QuantModule
from tritondsl.program import load_model

MODELS = ("resnet18", "mobilenetv2")
CACHES = ("int8", "float")
LATENCY_GOAL = 1.1


def _weight_bytes(model: torch.nn.Module) -> int:
    """fp32 bytes of the weights the quantized layers compute with (what a cache replaces)."""
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    return sum(layer.weight.numel() * 4 for layer in layers)


def _cache_bytes(model: torch.nn.Module) -> int:
    return sum(m.weight_cache_bytes() for m in model.modules() if isinstance(m, QuantModule))


def measure_rows(rounds: int, quick: bool) -> list[dict[str, Any]]:
    """Per model, batch and thread count: (min, median) seconds of fp32 and each cache."""
    size = 64 if quick else 224
    settings = [(1, 1, rounds), (1, 2, rounds), (32, 2, max(3, rounds // 4))]
    rows = []
    for name in MODELS:
        ternary = load_model(name)
        weights = _weight_bytes(ternary)
        runners = {"fp32": Eager(load_model(name, precision="fp32"))}
        runners |= {c: Eager(deploy(copy.deepcopy(ternary), weight_cache=c)) for c in CACHES}
        memory: dict[str, float] = {}
        for batch, threads, n in settings[:1] if quick else settings:
            torch.set_num_threads(threads)
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            feeds = {k: {"x": x.numpy()} for k in runners}
            times = interleaved(runners, feeds, n, warmup=2)
            memory = memory or {c: _cache_bytes(runners[c].model) / weights for c in CACHES}
            rows.append({"model": name, "batch": batch, "threads": threads, "rounds": n,
                         "size": size, "times": times, "memory": memory})  # fmt: skip
    return rows


def _ms(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:.1f} / {t[1] * 1e3:.1f} ms"


def _verdict(ratio: float) -> str:
    return "met" if ratio <= LATENCY_GOAL else f"missed by {ratio / LATENCY_GOAL - 1:.0%}"


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown for RESULTS.md."""
    out = ["| model, input | threads, rounds | fp32 min / median | int8 cache min / median "
           "| min ratio | float cache min / median | min ratio | cache / fp32 weight bytes "
           "(int8, float) | goal: int8 cache <= 1.1x at batch 1 |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        t, mem = r["times"], r["memory"]
        ratio = {c: t[c][0] / t["fp32"][0] for c in CACHES}
        goal = _verdict(ratio["int8"]) if r["batch"] == 1 else ""
        out.append(f"| {r['model']} batch {r['batch']} {r['size']}x{r['size']} "
                   f"| {r['threads']}, {r['rounds']} | {_ms(t['fp32'])} | {_ms(t['int8'])} "
                   f"| {ratio['int8']:.2f}x | {_ms(t['float'])} | {ratio['float']:.2f}x "
                   f"| {mem['int8']:.4f}, {mem['float']:.4f} | {goal} |")  # fmt: skip
    out += [
        "",
        "The int8 cache is int8 trits (1/4 of the fp32 bytes) plus one fp32 scale per "
        "output channel; the float cache is the fp32 weight itself.",
    ]
    return out


def measure(quick: bool = False, rounds: int = 40) -> tuple[list[str], dict[str, float]]:
    """RESULTS.md lines and chart ratios, for run_all.py."""
    rows = measure_rows(3 if quick else rounds, quick)
    chart = {f"eager {c}-cache/fp32 {r['model']} batch {r['batch']} {r['threads']}t (min)":
             r["times"][c][0] / r["times"]["fp32"][0] for r in rows for c in CACHES}  # fmt: skip
    return tables(rows), chart


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds, batch 1")
    parser.add_argument("--quick", action="store_true", help="64x64, batch 1, 3 rounds")
    args = parser.parse_args()
    print("\n".join(measure(args.quick, args.rounds)[0]))


if __name__ == "__main__":
    main()
