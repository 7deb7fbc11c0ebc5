"""Hostile inputs at the source size limit: how long `check` takes on each (target <= 2 s).

Every input is generated here, each just under ``MAX_SOURCE_BYTES``: a valid program of
many blocks, thousands of syntax errors, thousands of unknown names, compile-time loops
that exhaust the evaluation budget, deep nesting, huge numbers, and garbage bytes. Each is
checked in this process (interpreter start-up excluded); the best and median of a few runs
are reported. The tests bound the same work by counting (errors kept, evaluation steps).

    python benchmarks/bench_check_limits.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Callable

from tritondsl.compiler.check import check_source
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.parser import MAX_SOURCE_BYTES

TARGET_S = 2.0
_BLOCK = """block B{i}(c: int = 8) {{
    conv = Conv2d(c, c, 3, padding=1)
    bn = BatchNorm2d(c)
    forward(x) {{
        return relu(bn(conv(x))) + x
    }}
}}
"""


def _fill(piece: Callable[[int], str], head: str = "", tail: str = "", size: int = 0) -> str:
    """``head`` + pieces + ``tail``, as long as fits in ``size`` bytes (default: the limit)."""
    size = size or MAX_SOURCE_BYTES
    parts, used, i = [head], len(head) + len(tail), 0
    while used + len(text := piece(i)) <= size:
        parts.append(text)
        used += len(text)
        i += 1
    return "".join([*parts, tail])


def inputs(size: int = 0) -> dict[str, str]:
    """Every hostile input, by name (``size`` bytes each; default: the limit)."""
    model = "model Net() {\n    input x: Tensor[N, 8, 8, 8]\n    b = B0()\n" \
            "    forward(x) {\n        return b(x)\n    }\n}\n"
    rng = random.Random(0)
    garbage = "".join(rng.choice("{}()[]<>=+-*/@.,;:#'\"\\ \n\tabcXYZ019_") for _ in range(4096))
    return {
        "valid: many blocks": _fill(lambda i: _BLOCK.format(i=i), tail=model, size=size),
        "a syntax error per line": _fill(lambda i: f"model M{i} x\n", size=size),
        "an unterminated definition per line": _fill(lambda i: f"block B{i}(\n", size=size),
        "unknown names": _fill(lambda i: f"    let v{i} = w{i} + u{i}\n",
                               "model M() {\n    input x: Tensor[N, 4]\n",
                               "    forward(x) {\n        return x\n    }\n}\n", size),
        "evaluation budget": _fill(
            lambda i: f"    for i{i} in range(100000) {{\n        let k{i} = i{i} * 2\n    }}\n",
            "model M() {\n    input x: Tensor[N, 4]\n",
            "    forward(x) {\n        return x\n    }\n}\n", size),
        "deep nesting": _fill(lambda i: "(" * 90 + "1" + ")" * 90 + " + ",
                              "model M() {\n    input x: Tensor[N, 4]\n    let a = ",
                              "1\n    forward(x) {\n        return x\n    }\n}\n", size),
        "huge numbers": _fill(lambda i: f"    let n{i} = {'9' * 70} ** 3\n",
                              "model M() {\n    input x: Tensor[N, 4]\n",
                              "    forward(x) {\n        return x\n    }\n}\n", size),
        "garbage": _fill(lambda i: garbage, size=size),
    }


def _check(source: str) -> None:
    with contextlib.suppress(CompileError):
        check_source(source, "hostile.tdsl")


def measure(repeats: int = 3, quick: bool = False) -> list[tuple[str, int, float, float]]:
    """(input, bytes, best seconds, median seconds) for every hostile input."""
    rows = []
    for name, source in inputs(MAX_SOURCE_BYTES // 8 if quick else 0).items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _check(source)
            times.append(time.perf_counter() - start)
        rows.append((name, len(source.encode()), min(times), statistics.median(times)))
    return rows


def main() -> None:
    """Print one line per input and whether the slowest meets the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="inputs of 1/8 of the limit")
    args = parser.parse_args()
    rows = measure(args.repeats, args.quick)
    for name, size, best, median in rows:
        print(f"{name:<38} {size:>9,} B  best {best:6.3f} s  median {median:6.3f} s")
    worst = max(median for *_, median in rows)
    verdict = "meets" if worst <= TARGET_S else "misses"
    print(f"slowest median {worst:.3f} s: {verdict} the target of {TARGET_S} s")


if __name__ == "__main__":
    main()
