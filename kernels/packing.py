"""Ternary weight packing: the one spec every code path uses (see docs/packing.md).

2-bit runtime format
    code = trit + 1  (0b00 -> -1, 0b01 -> 0, 0b10 -> +1, 0b11 invalid),
    four codes per byte, least significant bits first, packed along the
    reduction axis K of a row-major ``[N, K]`` trit matrix (for a conv weight,
    ``weight.reshape(out, -1)``), rows padded at the end with code 0b01.
    Layout: ``uint8[N, ceil(K / 4)]``.

    Worked byte: trits (+1, 0, -1, +1) -> codes (2, 1, 0, 2)
    -> 2 | 1 << 2 | 0 << 4 | 2 << 6 = 0b10_00_01_10 = 134.

base-3 storage format (artifacts only, 1.6 bits per weight)
    five codes per byte, byte = sum(code_i * 3**i) with the first trit least
    significant, rows padded with code 1; values 243..255 are invalid.
    Layout: ``uint8[N, ceil(K / 5)]``. Converted to the 2-bit layout on load.

    Worked byte: trits (+1, 0, -1, +1, -1) -> codes (2, 1, 0, 2, 0)
    -> 2 + 1*3 + 0*9 + 2*27 + 0*81 = 59.

Each format has a plain reference (``*_reference``) written for clarity and a
vectorized version used at run time; tests compare them.
"""

from __future__ import annotations

import torch

TRITS_PER_BYTE = 4
TRITS_PER_BYTE_BASE3 = 5
INVALID_CODE = 0b11
_POW3 = (1, 3, 9, 27, 81)


class PackingError(ValueError):
    """Raised when packed data is malformed (invalid code, wrong length, bad dtype)."""


def packed_cols(k: int, per_byte: int = TRITS_PER_BYTE) -> int:
    """Number of bytes one row of ``k`` trits occupies."""
    return -(-k // per_byte)


def _check_trits(trits: torch.Tensor) -> None:
    if trits.dim() != 2:
        raise PackingError(f"expected a 2-D [N, K] trit matrix, got shape {tuple(trits.shape)}")
    # A float matrix with 0.5 or NaN would otherwise be truncated silently by the int cast.
    if trits.numel() and not bool(((trits == -1) | (trits == 0) | (trits == 1)).all()):
        raise PackingError("trit values must be -1, 0 or +1")


def _padded_codes(trits: torch.Tensor, per_byte: int) -> torch.Tensor:
    n, k = trits.shape
    codes = torch.ones((n, packed_cols(k, per_byte) * per_byte), dtype=torch.int32)
    codes[:, :k] = trits.to(torch.int32).cpu() + 1
    return codes


def pack_reference(trits: torch.Tensor) -> torch.Tensor:
    """Pack ``[N, K]`` trits into ``uint8[N, ceil(K/4)]``, one code position at a time."""
    _check_trits(trits)
    codes = _padded_codes(trits, TRITS_PER_BYTE)
    out = torch.zeros((codes.shape[0], codes.shape[1] // 4), dtype=torch.int32)
    for j in range(TRITS_PER_BYTE):
        out |= codes[:, j::4] << (2 * j)
    return out.to(torch.uint8).to(trits.device)


def unpack_reference(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Unpack ``uint8[N, ceil(K/4)]`` into int8 trits ``[N, K]``, one code position at a time."""
    validate_packed(packed, k)
    p = packed.to(torch.int32)
    cols = [((p >> (2 * j)) & 0b11) for j in range(TRITS_PER_BYTE)]
    codes = torch.stack(cols, dim=2).reshape(p.shape[0], -1)[:, :k]
    return (codes - 1).to(torch.int8)


def pack(trits: torch.Tensor) -> torch.Tensor:
    """Pack ``[N, K]`` trits into the 2-bit runtime layout ``uint8[N, ceil(K/4)]``."""
    _check_trits(trits)
    codes = _padded_codes(trits, TRITS_PER_BYTE).view(trits.shape[0], -1, 4)
    weights = torch.tensor([1, 4, 16, 64], dtype=torch.int32)
    return (codes * weights).sum(dim=2).to(torch.uint8).to(trits.device)


# _UNPACK_LUT[byte] holds the four trits of that byte (an invalid code 0b11 reads as 2;
# packed tensors are validated once when they enter a model, not on every unpack).
_UNPACK_LUT = torch.tensor(
    [[((b >> (2 * j)) & 3) - 1 for j in range(4)] for b in range(256)], dtype=torch.int8
)


def unpack(packed: torch.Tensor, k: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Unpack the 2-bit runtime layout into ``[N, K]`` trits of ``dtype`` (table lookup)."""
    check_layout(packed, k)
    lut = _UNPACK_LUT.to(packed.device)
    trits = lut[packed.long()].reshape(packed.shape[0], -1)[:, :k]
    return trits.to(dtype)


def check_layout(packed: torch.Tensor, k: int, name: str = "packed weight") -> None:
    """Raise ``PackingError`` naming ``name`` unless ``packed`` has the 2-bit layout for K."""
    if packed.dtype != torch.uint8:
        raise PackingError(f"{name}: expected dtype uint8, got {packed.dtype}")
    if packed.dim() != 2:
        raise PackingError(
            f"{name}: expected a 2-D [N, ceil(K/4)] tensor, got {tuple(packed.shape)}"
        )
    if packed.shape[1] != packed_cols(k):
        raise PackingError(
            f"{name}: K={k} needs {packed_cols(k)} bytes per row, got {packed.shape[1]}"
        )


def validate_packed(packed: torch.Tensor, k: int, name: str = "packed weight") -> None:
    """Raise ``PackingError`` naming ``name`` unless ``packed`` is a valid 2-bit packing of K."""
    check_layout(packed, k, name)
    # A code is 0b11 exactly when both of its bits are set: one pass over the bytes finds
    # any such pair (bit 2j and bit 2j+1) in every position at once.
    if bool((packed & (packed >> 1) & 0x55).any()):
        raise PackingError(f"{name}: contains the invalid trit code 0b11")


def pack_base3_reference(trits: torch.Tensor) -> torch.Tensor:
    """Pack ``[N, K]`` trits into base-3 bytes ``uint8[N, ceil(K/5)]``, one digit at a time."""
    _check_trits(trits)
    codes = _padded_codes(trits, TRITS_PER_BYTE_BASE3)
    out = torch.zeros((codes.shape[0], codes.shape[1] // 5), dtype=torch.int32)
    for i, weight in enumerate(_POW3):
        out += codes[:, i::5] * weight
    return out.to(torch.uint8).to(trits.device)


def pack_base3(trits: torch.Tensor) -> torch.Tensor:
    """Pack ``[N, K]`` trits into the base-3 storage format (vectorized)."""
    _check_trits(trits)
    codes = _padded_codes(trits, TRITS_PER_BYTE_BASE3).view(trits.shape[0], -1, 5)
    weights = torch.tensor(_POW3, dtype=torch.int32)
    return (codes * weights).sum(dim=2).to(torch.uint8).to(trits.device)


def unpack_base3(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Unpack base-3 bytes ``uint8[N, ceil(K/5)]`` into int8 trits ``[N, K]``."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise PackingError(
            f"base-3 data: expected 2-D uint8, got {packed.dtype} {tuple(packed.shape)}"
        )
    if packed.shape[1] != packed_cols(k, TRITS_PER_BYTE_BASE3):
        raise PackingError(
            f"base-3 data: K={k} needs {packed_cols(k, 5)} bytes per row, got {packed.shape[1]}"
        )
    p = packed.to(torch.int32)
    if bool((p > 242).any()):
        raise PackingError("base-3 data: byte value above 242 is not a valid 5-trit group")
    digits = [(p // weight) % 3 for weight in _POW3]
    codes = torch.stack(digits, dim=2).reshape(p.shape[0], -1)[:, :k]
    return (codes - 1).to(torch.int8)


def base3_to_2bit(packed3: torch.Tensor, k: int) -> torch.Tensor:
    """Convert base-3 storage bytes to the 2-bit runtime layout."""
    return pack(unpack_base3(packed3, k))
