"""Write the packaged ``fashion-mnist-5k`` subset from Debian's Fashion-MNIST IDX files.

    python scripts/make_fashion_mnist_5k.py [/usr/share/datasets/fashion-mnist]

The first 4,000 training and the first 1,000 test images with their labels (Fashion-MNIST
is MIT-licensed), as gzipped IDX files with a fixed timestamp, so rerunning it reproduces
the bytes in ``src/tritondsl/train/fashion_mnist_5k/``.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

from tritondsl.train.data import (
    FASHION_5K_DIR,
    FASHION_5K_SIZES,
    FASHION_DIR,
    FASHION_FILES,
    read_idx,
)


def write_idx(path: Path, array: object) -> None:
    """A uint8 IDX file (gzip, mtime 0) holding ``array``."""
    data = array.numpy()  # type: ignore[attr-defined]
    header = b"\0\0\x08" + bytes([data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    path.write_bytes(gzip.compress(header + data.tobytes(), compresslevel=9, mtime=0))


def main() -> None:
    """Read the full set, write the subset."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else FASHION_DIR
    FASHION_5K_DIR.mkdir(exist_ok=True)
    for split, count in FASHION_5K_SIZES.items():
        for name in FASHION_FILES[split]:
            write_idx(FASHION_5K_DIR / name, read_idx(source / name)[:count])
            print(f"wrote {FASHION_5K_DIR / name}")


if __name__ == "__main__":
    main()
