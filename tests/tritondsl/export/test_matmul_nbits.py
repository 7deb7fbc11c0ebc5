"""MatMulNBits with 2-bit ternary weights: onnxruntime computes A · (trits · scale)ᵀ."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tritondsl.export.matmul_nbits import DOMAIN, lut_unsupported, matmul_nbits
from tritondsl.export.onnx_session import onnx_session


def _model(m: int, trits: np.ndarray, scale: np.ndarray, accuracy_level: int) -> bytes:
    n, k = trits.shape
    node, inits = matmul_nbits("fc", "A", "Y", trits, scale, accuracy_level=accuracy_level)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def _case(m: int, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    trits = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, size=n).astype(np.float32)
    a = rng.standard_normal((m, k)).astype(np.float32)
    return a, trits, scale


@pytest.mark.parametrize(("m", "k", "n"), [(1, 37, 5), (3, 64, 7), (2, 100, 130), (1, 32, 128)])
def test_fp32_compute_matches_numpy_on_odd_shapes(m: int, k: int, n: int) -> None:
    a, trits, scale = _case(m, k, n)
    # Plain onnxruntime: onnx_session turns on the lookup-table kernel, which quantizes A.
    session = ort.InferenceSession(_model(m, trits, scale, accuracy_level=0))
    got = session.run(None, {"A": a})[0]
    expected = a.astype(np.float64) @ (trits * scale[:, None]).T
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize(("m", "k", "n"), [(1, 256, 128), (16, 512, 256)])
def test_lookup_table_kernel_is_close(m: int, k: int, n: int) -> None:
    a, trits, scale = _case(m, k, n, seed=1)
    assert lut_unsupported(k, n) is None
    session = onnx_session(_model(m, trits, scale, accuracy_level=4))
    assert session.get_session_options().get_session_config_entry("mlas.use_lut_gemm") == "1"
    got = session.run(None, {"A": a})[0]
    expected = a.astype(np.float64) @ (trits * scale[:, None]).T
    # The kernel quantizes activations to 8 bits itself: about 1% of the output range.
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


def test_shape_limits_and_bad_weights() -> None:
    assert lut_unsupported(96, 256) is None
    assert lut_unsupported(100, 256) == "K=100 is not a multiple of 32"
    assert "N=130 is not a multiple of 128" in (lut_unsupported(64, 130) or "")
    with pytest.raises(ValueError, match="2-D ternary weight"):
        matmul_nbits("fc", "A", "Y", np.full((4, 8), 2, np.int8), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="power of two"):
        matmul_nbits("fc", "A", "Y", np.zeros((4, 8), np.int8), 1.0, block_size=24)
