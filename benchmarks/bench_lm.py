"""A small BitNet language model on real text: fp32 vs ternary vs W1.58A8 perplexity.

    python benchmarks/bench_lm.py [--quick] [--output DIR]

The zoo's bitnet_b158 (4 layers, dim 256, byte tokens) is trained on Debian's `fortunes`
(`--data text:fortunes`) three times with the same data, steps, optimizer and seed:
fp32 (`--precision fp32`, float activations), W1.58A32 (ternary weights, float
activations) and W1.58A8 (the BitNet b1.58 recipe: ternary weights, per-token int8
activations). Goal: the ternary validation perplexity at most 1.15x fp32's. The trained
W1.58A8 model is then exported as the ONNX decoder (2-bit MatMulNBits) and its greedy
choices compared with PyTorch's along PyTorch's greedy text from validation prompts (goal:
the same next token on >= 99% of steps). The three runs train at once, one thread each;
`measure()` is what benchmarks/run_all.py calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_finetune import _command, final, run_all, shown  # type: ignore[import-not-found]

MODEL = "bitnet_b158"
VARIANTS = {
    "fp32": ["--precision", "fp32", "--param", "quantize_activations=false"],
    "W1.58A32": ["--param", "quantize_activations=false"],
    "W1.58A8": [],
}
GOAL_RATIO, GOAL_AGREEMENT = 1.15, 0.99


def measure(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Train the three variants and compare the exported decoder; results also in OUT/lm.json."""
    out = out or Path(tempfile.mkdtemp(prefix="tritondsl-lm-"))
    out.mkdir(parents=True, exist_ok=True)
    size = {"layers": 2, "dim": 64, "ffn": 128} if quick else {"layers": 4, "dim": 256}
    options = {"data": "text:fortunes", "seq-len": "128", "optimizer": "adamw", "lr": "3e-3",
               "batch-size": "32", "epochs": "1" if quick else "2",
               "limit-train": "256" if quick else "4800",
               "limit-test": "64" if quick else "400"}  # fmt: skip
    params = [arg for name, value in size.items() for arg in ("--param", f"{name}={value}")]
    commands = {name: _command(MODEL, out / name, options, *params, *flags)
                for name, flags in VARIANTS.items()}  # fmt: skip
    seconds = run_all(commands, out)
    results: dict[str, Any] = {"size": size, "options": options, "variants": {}}
    for name in VARIANTS:
        record = final(out / name)
        results["variants"][name] = {"val_ppl": record["test_ppl"], "step": record["step"],
                                     "seconds": seconds[name],
                                     "command": shown(commands[name])}  # fmt: skip
    results["agreement"] = agreement(out / "W1.58A8", out / "decoder.onnx", quick)
    (out / "lm.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def agreement(run: Path, onnx_path: Path, quick: bool) -> dict[str, Any]:
    """Greedy next-token agreement of the exported ONNX decoder with the trained model."""
    from tritondsl.export.onnx_decoder import export_decoder
    from tritondsl.export.onnx_decoder_runner import OnnxDecoder
    from tritondsl.generation import TorchDecoder, greedy_agreement
    from tritondsl.train.checkpoint import load_trained, tokenizer_of

    model, tokenizer = load_trained(run), tokenizer_of(run)
    assert tokenizer is not None, f"{run} is not a language-model run"
    export_decoder(model, onnx_path, "nbits")
    prompts = ["Q: What", "The best way to", "A man who", "You will", "Never trust"]
    steps = 20 if quick else 100
    agree = total = 0
    for prompt in prompts[: 2 if quick else len(prompts)]:
        a, t = greedy_agreement(TorchDecoder(model), OnnxDecoder(onnx_path, threads=1),
                                tokenizer.encode(prompt), steps)  # fmt: skip
        agree, total = agree + a, total + t
    return {"agree": agree, "total": total}


def table(results: dict[str, Any]) -> list[str]:
    """RESULTS.md rows: perplexity per variant against fp32, the goal, the ONNX agreement."""
    variants = results["variants"]
    base = variants["fp32"]["val_ppl"]
    rows = ["| variant | validation perplexity | x fp32 | steps | command |",
            "|---|---|---|---|---|"]
    for name, row in variants.items():
        rows.append(f"| {name} | {row['val_ppl']:.2f} | {row['val_ppl'] / base:.3f} | "
                    f"{row['step']} | `{row['command']}` |")  # fmt: skip
    rows.append("")
    for name in ("W1.58A32", "W1.58A8"):
        ratio = variants[name]["val_ppl"] / base
        verdict = "met" if ratio <= GOAL_RATIO else f"missed by {ratio / GOAL_RATIO - 1:.1%}"
        rows.append(f"Goal {name} <= {GOAL_RATIO}x fp32 perplexity: {verdict}.")
    agree, total = results["agreement"]["agree"], results["agreement"]["total"]
    share = agree / total
    verdict = "met" if share >= GOAL_AGREEMENT else f"missed by {GOAL_AGREEMENT - share:.1%}"
    rows += ["", f"ONNX decoder (2-bit MatMulNBits) vs PyTorch, W1.58A8 model, greedy steps: "
             f"{agree}/{total} the same next token ({share:.1%}; goal >= 99%: {verdict})."]
    return rows


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, a few steps")
    parser.add_argument("--output", type=Path, default=None, help="folder for the runs")
    args = parser.parse_args()
    print("\n".join(table(measure(args.quick, args.output))))


if __name__ == "__main__":
    sys.exit(main())
