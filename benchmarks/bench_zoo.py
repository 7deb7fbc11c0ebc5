"""The CNNs of issue 15 at batch 1 on CPU: ONNX Runtime fp32 vs W1.58A8, eager fp32 vs deployed.

ResNet-50, VGG-11-BN, MobileNetV3 small / large and EfficientNet-B0 at torchvision's 224x224
(3 channels), U-Net at 256x256 (1 channel, the paper's setting with padded convolutions). ONNX:
the fp32 model exported ``weights="float"`` vs the ternary zoo model exported with
``activations="int8"`` (calibrated on random batches: latency does not depend on the scales;
U-Net's 2-channel output conv stays float, onnxruntime has no int8 kernel worth it there and
its transposed convolutions have no int8 form), both opened with ``tritondsl.onnx_session``.
Eager: the fp32 model vs the deployed ternary one (trits unpacked per call). Each pair is timed
interleaved (``bench_int8``'s round-robin), min and median; big models get fewer rounds.

    python benchmarks/bench_zoo.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from timing import Eager, interleaved  # type: ignore[import-not-found]

from tritondsl import deploy
from tritondsl.export.api import to_onnx
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_session import onnx_session
from tritondsl.program import load_model

# name: (input channels, input size, rounds, quick input size); the quick run takes 3 rounds.
# VGG's AdaptiveAvgPool2d((7, 7)) exports only from multiples of 7x7, 224x224 at the least.
MODELS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (3, 224, 8, 64),
    "vgg11_bn": (3, 224, 6, 224),
    "mobilenet_v3_small": (3, 224, 20, 64),
    "mobilenet_v3_large": (3, 224, 15, 64),
    "efficientnet_b0": (3, 224, 12, 64),
    "unet": (1, 256, 4, 64),
}
FLOAT_LAYERS = {"unet": ("outc",)}


def _onnx_pair(name: str, folder: Path, x: torch.Tensor, threads: int) -> dict[str, Any]:
    fp32, int8 = folder / f"{name}-fp32.onnx", folder / f"{name}-int8.onnx"
    export_onnx(load_model(name, precision="fp32"), fp32, x, "float")
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(2, *x.shape[1:], generator=gen) for _ in range(2)]
    to_onnx(load_model(name), int8, x, verify=False, activations="int8",
            calibration=calibration, float_layers=FLOAT_LAYERS.get(name, ()))  # fmt: skip
    return {"fp32": onnx_session(fp32, threads=threads),
            "int8": onnx_session(int8, threads=threads),
            "bytes": (fp32.stat().st_size, int8.stat().st_size)}  # fmt: skip


def measure_rows(quick: bool, threads: int = 2) -> list[dict[str, Any]]:
    """Per model: input, (min, median) seconds of ORT fp32 / int8 and eager fp32 / deployed."""
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (channels, size, rounds, quick_size) in MODELS.items():
            size, rounds = (quick_size, 3) if quick else (size, rounds)
            x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1))
            pair = _onnx_pair(name, Path(tmp), x, threads)
            feed = {pair["fp32"].get_inputs()[0].name: x.numpy()}
            ort_times = interleaved({k: pair[k] for k in ("fp32", "int8")},
                                     {"fp32": feed, "int8": feed}, rounds)  # fmt: skip
            del pair["fp32"], pair["int8"]
            eager = {"fp32": Eager(load_model(name, precision="fp32")),
                     "deployed": Eager(deploy(copy.deepcopy(load_model(name))))}  # fmt: skip
            eager_times = interleaved(eager, {"fp32": feed, "deployed": feed}, rounds)
            rows.append({"model": name, "input": f"{channels}x{size}x{size}", "threads": threads,
                         "rounds": rounds, "ort": ort_times, "eager": eager_times,
                         "bytes": pair["bytes"]})  # fmt: skip
    return rows


def _ms(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:.1f} / {t[1] * 1e3:.1f} ms"


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown for RESULTS.md: latency pairs and their min ratios, and file bytes."""
    out = ["| model, batch 1 | threads, rounds | ORT fp32 min / median | ORT W1.58A8 min / median "
           "| min ratio | eager fp32 min / median | eager deployed min / median | min ratio "
           "| fp32 ONNX / W1.58A8 ONNX |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fp32_bytes, int8_bytes = r["bytes"]
        out.append(f"| {r['model']} {r['input']} | {r['threads']}, {r['rounds']} "
                   f"| {_ms(r['ort']['fp32'])} | {_ms(r['ort']['int8'])} "
                   f"| {r['ort']['int8'][0] / r['ort']['fp32'][0]:.2f}x "
                   f"| {_ms(r['eager']['fp32'])} | {_ms(r['eager']['deployed'])} "
                   f"| {r['eager']['deployed'][0] / r['eager']['fp32'][0]:.2f}x "
                   f"| {fp32_bytes:,} B / {int8_bytes:,} B ({fp32_bytes / int8_bytes:.1f}x) |")
    return out


def measure(quick: bool = False, threads: int = 2) -> tuple[list[str], dict[str, float]]:
    """RESULTS.md lines and chart ratios, for run_all.py."""
    warnings.simplefilter("ignore")
    ort.set_default_logger_severity(3)  # its notes on folded constants are not results
    rows = measure_rows(quick, threads)
    chart = {f"ORT W1.58A8/fp32 {r['model']} batch 1 {r['threads']}t (min)":
             r["ort"]["int8"][0] / r["ort"]["fp32"][0] for r in rows}  # fmt: skip
    return tables(rows), chart


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, 3 rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    args = parser.parse_args()
    lines, _ = measure(args.quick, args.threads)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
