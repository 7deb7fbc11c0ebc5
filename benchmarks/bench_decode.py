"""Decode tokens/s at batch 1: PyTorch fp32, ONNX Runtime fp32, ONNX Runtime ternary.

    python benchmarks/bench_decode.py            # 8 layers, dim 512/1024/2048, context 512
    python benchmarks/bench_decode.py --quick    # 2 layers, dim 256, context 64

Each model is the zoo's bitnet_b158 with random weights (FFN 4·dim, vocab 256): ternary
W1.58A8 for "ternary", float weights and activations for "fp32" (both exported alike, with
the same fused attention). The cache is prefilled to ``context - steps`` tokens, then
``steps`` single-token steps are timed; the three runtimes take turns, step by step, so
machine noise hits them alike. Rates are of the median step; the last column also gives
the ratio of the fastest steps (the steadier figure on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tritondsl.export.onnx_decoder import export_decoder
from tritondsl.export.onnx_decoder_runner import OnnxDecoder
from tritondsl.generation import Decoder, TorchDecoder
from tritondsl.models import resolve
from tritondsl.program import compile as compile_program


def _model(dim: int, layers: int, context: int, precision: str | None) -> torch.nn.Module:
    params = {"vocab": 256, "dim": dim, "layers": layers, "heads": dim // 64,
              "kv_heads": dim // 64, "ffn": 4 * dim, "context": context,
              "quantize_activations": precision != "fp32"}  # fmt: skip
    torch.manual_seed(0)
    return compile_program(resolve("bitnet_b158"), precision).build(**params).eval()


def measure(quick: bool = False) -> list[tuple[str, float, float, float, float]]:
    """(label, PyTorch fp32, ORT fp32, ORT ternary, fastest-step ratio) per model size:
    decode tokens/s of the median step, then ORT fp32's fastest step / ternary's."""
    dims, layers, context, steps = ((256,), 2, 64, 8) if quick else ((512, 1024, 2048), 8, 512, 32)
    rows = []
    for dim in dims:
        with tempfile.TemporaryDirectory() as folder:
            fp32 = _model(dim, layers, context, "fp32")
            float_path, nbits_path = Path(folder) / "f.onnx", Path(folder) / "t.onnx"
            export_decoder(fp32, float_path, "float", verify=False)
            export_decoder(_model(dim, layers, context, None), nbits_path, "nbits", verify=False)
            decoders: dict[str, Decoder] = {
                "torch fp32": TorchDecoder(fp32),
                "ort fp32": OnnxDecoder(float_path),
                "ort ternary": OnnxDecoder(nbits_path),
            }
            prompt = [int(t) for t in torch.randint(0, 256, (context - steps - 1,))]
            times: dict[str, list[float]] = {name: [] for name in decoders}
            for decoder in decoders.values():
                decoder.prefill(prompt)
            with torch.no_grad():
                for step in range(steps):
                    for name, decoder in decoders.items():
                        start = time.perf_counter()
                        decoder.step(step % 256)
                        times[name].append(time.perf_counter() - start)
            rate = {name: 1 / statistics.median(t) for name, t in times.items()}
            fastest = min(times["ort fp32"]) / min(times["ort ternary"])
            rows.append((f"{layers} layers, dim {dim}, context {context}", rate["torch fp32"],
                         rate["ort fp32"], rate["ort ternary"], fastest))  # fmt: skip
    return rows


def main() -> None:
    """Print the decode table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    rows = measure(parser.parse_args().quick)
    print("| model | PyTorch fp32 tok/s | ORT fp32 tok/s | ORT ternary tok/s "
          "| ternary / fp32 (median; fastest) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for label, t, f, n, fastest in rows:
        print(f"| {label} | {t:.1f} | {f:.1f} | {n:.1f} | {n / f:.2f}x; {fastest:.2f}x |")


if __name__ == "__main__":
    main()
