"""Front-end speed: `tritondsl check` on the zoo vs `python -c "import torch"`, side by side.

Runs each command alternately (so machine noise hits both alike) and prints the medians
and their ratio. The target is a ratio of at most 0.5.

    python benchmarks/bench_frontend.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    """Measure and print both commands' median wall times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    check = [sys.executable, "-m", "tritondsl", "check", "models/resnet18.tdsl"]
    torch = [sys.executable, "-c", "import torch"]
    _time(check), _time(torch)  # warm the file cache for both
    runs: dict[str, list[float]] = {"check": [], "torch": []}
    for _ in range(args.repeats):
        runs["check"].append(_time(check))
        runs["torch"].append(_time(torch))
    check_s, torch_s = statistics.median(runs["check"]), statistics.median(runs["torch"])
    print(f"tritondsl check models/resnet18.tdsl  median {check_s:.3f} s")
    print(f'python -c "import torch"              median {torch_s:.3f} s')
    print(f"ratio check / import torch            {check_s / torch_s:.2f}  (target <= 0.50)")


if __name__ == "__main__":
    main()
