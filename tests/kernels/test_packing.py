"""Tests for kernels/packing.py: round trips, reference vs fast, docs examples, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tritondsl.kernels.packing import (
    PackingError,
    base3_to_2bit,
    check_layout,
    pack,
    pack_base3,
    pack_base3_reference,
    pack_reference,
    packed_cols,
    unpack,
    unpack_base3,
    unpack_reference,
    validate_packed,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "packing.md"
KS = [1, 3, 4, 5, 7, 64, 127, 300]
NS = [1, 3]


def random_trits(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Seeded [n, k] int8 matrix of trits."""
    gen = torch.Generator().manual_seed(seed * 1000 + n * 7 + k)
    return torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)


@pytest.mark.parametrize("k", KS, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("n", NS, ids=lambda n: f"N{n}")
class TestRoundTrip:
    def test_2bit_fast_matches_reference(self, n: int, k: int) -> None:
        trits = random_trits(n, k)
        packed = pack(trits)
        assert packed.dtype == torch.uint8
        assert tuple(packed.shape) == (n, -(-k // 4))
        assert torch.equal(packed, pack_reference(trits))

    def test_2bit_unpack_inverts_pack(self, n: int, k: int) -> None:
        trits = random_trits(n, k)
        packed = pack(trits)
        assert torch.equal(unpack(packed, k), trits)
        assert torch.equal(unpack_reference(packed, k), trits)
        assert torch.equal(unpack(packed, k, dtype=torch.float32), trits.float())

    def test_2bit_padding_is_code_01(self, n: int, k: int) -> None:
        packed = pack(random_trits(n, k)).to(torch.int32)
        pad = packed_cols(k) * 4 - k
        last = packed[:, -1]
        for slot in range(4 - pad, 4):
            assert torch.all(((last >> (2 * slot)) & 0b11) == 0b01)

    def test_base3_fast_matches_reference(self, n: int, k: int) -> None:
        trits = random_trits(n, k)
        packed = pack_base3(trits)
        assert tuple(packed.shape) == (n, -(-k // 5))
        assert int(packed.max()) <= 242
        assert torch.equal(packed, pack_base3_reference(trits))

    def test_base3_unpack_inverts_pack(self, n: int, k: int) -> None:
        trits = random_trits(n, k)
        assert torch.equal(unpack_base3(pack_base3(trits), k), trits)

    def test_base3_converts_to_2bit(self, n: int, k: int) -> None:
        trits = random_trits(n, k)
        assert torch.equal(base3_to_2bit(pack_base3(trits), k), pack(trits))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 70), st.integers(0, 2**16))
def test_round_trip_property(n: int, k: int, seed: int) -> None:
    trits = random_trits(n, k, seed)
    assert torch.equal(unpack(pack(trits), k), trits)
    assert torch.equal(unpack_base3(pack_base3(trits), k), trits)


def test_pack_accepts_float_trits() -> None:
    trits = torch.tensor([[1.0, 0.0, -1.0, 1.0]])
    assert pack(trits).tolist() == [[134]]


def test_empty_rows_pack_to_zero_columns() -> None:
    trits = torch.zeros((3, 0), dtype=torch.int8)
    assert tuple(pack(trits).shape) == (3, 0)
    assert tuple(unpack(pack(trits), 0).shape) == (3, 0)


def docs_examples() -> list[tuple[str, list[int], list[int]]]:
    """Rows of the ```packing-examples block in docs/packing.md."""
    match = re.search(r"```packing-examples\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, "docs/packing.md lost its packing-examples block"
    rows = []
    for line in match.group(1).strip().splitlines():
        fmt, rest = line.split(":", 1)
        trits, packed = rest.split("->")
        rows.append(
            (fmt.strip(), [int(t) for t in trits.split()], [int(b) for b in packed.split()])
        )
    return rows


def test_docs_block_covers_both_formats_and_module_examples() -> None:
    rows = docs_examples()
    assert {fmt for fmt, _, _ in rows} == {"2bit", "base3"}
    assert ("2bit", [1, 0, -1, 1], [134]) in rows
    assert ("base3", [1, 0, -1, 1, -1], [59]) in rows


@pytest.mark.parametrize(
    ("fmt", "trits", "expected"), docs_examples(), ids=lambda v: str(v).replace(" ", "")
)
def test_docs_example_matches_code(fmt: str, trits: list[int], expected: list[int]) -> None:
    row = torch.tensor([trits], dtype=torch.int8)
    codecs = {
        "2bit": (pack, pack_reference, unpack),
        "base3": (pack_base3, pack_base3_reference, unpack_base3),
    }
    fast, reference, decode = codecs[fmt]
    assert fast(row).tolist() == [expected]
    assert reference(row).tolist() == [expected]
    assert decode(torch.tensor([expected], dtype=torch.uint8), len(trits)).tolist() == [trits]


@pytest.mark.parametrize(
    "trits",
    [
        pytest.param(torch.tensor([[2, 0]]), id="value-2"),
        pytest.param(torch.tensor([[-2, 0]]), id="value-minus-2"),
        pytest.param(torch.tensor([[0.5, 0.0]]), id="non-integer"),
        pytest.param(torch.tensor([[float("nan"), 0.0]]), id="nan"),
        pytest.param(torch.tensor([1, 0, -1]), id="1-D"),
        pytest.param(torch.zeros((2, 2, 2)), id="3-D"),
    ],
)
@pytest.mark.parametrize(
    "packer", [pack, pack_reference, pack_base3, pack_base3_reference], ids=lambda f: f.__name__
)
def test_pack_rejects_invalid_trits(packer, trits: torch.Tensor) -> None:
    with pytest.raises(PackingError):
        packer(trits)


@pytest.mark.parametrize("byte", range(256))
def test_validate_packed_rejects_exactly_the_bytes_with_a_0b11_code(byte: int) -> None:
    has_invalid = any((byte >> (2 * slot)) & 0b11 == 0b11 for slot in range(4))
    packed = torch.tensor([[byte]], dtype=torch.uint8)
    if has_invalid:
        with pytest.raises(PackingError, match="invalid trit code 0b11"):
            validate_packed(packed, 4)
    else:
        validate_packed(packed, 4)


def test_invalid_code_0b11_is_rejected_with_name() -> None:
    packed = pack(random_trits(2, 8))
    packed[1, 0] = packed[1, 0] | 0b1100  # second trit of the row becomes 0b11
    with pytest.raises(PackingError, match=r"layer1\.weight_packed.*0b11"):
        validate_packed(packed, 8, "layer1.weight_packed")
    with pytest.raises(PackingError, match="0b11"):
        unpack_reference(packed, 8)


@pytest.mark.parametrize(
    ("packed", "k", "message"),
    [
        pytest.param(torch.zeros((2, 3), dtype=torch.uint8), 8, "needs 2 bytes", id="too-long"),
        pytest.param(torch.zeros((2, 1), dtype=torch.uint8), 8, "needs 2 bytes", id="too-short"),
        pytest.param(torch.zeros((2, 2), dtype=torch.int8), 8, "uint8", id="int8-dtype"),
        pytest.param(torch.zeros(4, dtype=torch.uint8), 8, "2-D", id="1-D"),
    ],
)
def test_bad_2bit_layout_is_rejected(packed: torch.Tensor, k: int, message: str) -> None:
    for check in (check_layout, validate_packed):
        with pytest.raises(PackingError, match=f"fc.weight_packed: .*{message}"):
            check(packed, k, "fc.weight_packed")
    with pytest.raises(PackingError, match=message):
        unpack(packed, k)


@pytest.mark.parametrize(
    ("packed", "k", "message"),
    [
        pytest.param(torch.full((1, 2), 243, dtype=torch.uint8), 10, "above 242", id="byte-243"),
        pytest.param(torch.full((1, 2), 255, dtype=torch.uint8), 10, "above 242", id="byte-255"),
        pytest.param(torch.zeros((1, 3), dtype=torch.uint8), 10, "needs 2 bytes", id="too-long"),
        pytest.param(torch.zeros((1, 2), dtype=torch.int16), 10, "uint8", id="int16-dtype"),
    ],
)
def test_bad_base3_is_rejected(packed: torch.Tensor, k: int, message: str) -> None:
    with pytest.raises(PackingError, match=message):
        unpack_base3(packed, k)
    with pytest.raises(PackingError, match=message):
        base3_to_2bit(packed, k)
