"""Pooling-window reductions: the emulator's fast paths against numpy's own reduction, same run.

The CNN sample's AveragePool and MaxPool read a [128, 2, 16, 2, 2] f32 window view in place (window
strides 32 and 1 elements around a kept stride of 2). Prints µs per call and the ratio numpy / fast
path (both results are bit-identical; that is checked too).

    python bench/bench_window_reduce.py [--repeat 2000]
"""
from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_model.engines import _windowed_extreme  # noqa: E402
from device_model.window_sum import WindowSum  # noqa: E402

SHAPE, STRIDES = (128, 2, 16, 2, 2), (128, 64, 2, 32, 1)  # elements


def pooling_view(relu: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(128 * 128).astype(np.float32)
    if relu:
        np.maximum(base, np.float32(0), out=base)
    return np.lib.stride_tricks.as_strided(base, SHAPE, tuple(4 * s for s in STRIDES), writeable=False)


def row(label: str, fast, slow, x: np.ndarray, repeat: int) -> None:
    assert fast(x).view(np.uint32).tobytes() == slow(x).view(np.uint32).tobytes()
    t_fast = min(timeit.repeat(lambda: fast(x), number=repeat, repeat=3)) / repeat
    t_slow = min(timeit.repeat(lambda: slow(x), number=repeat, repeat=3)) / repeat
    print(f"{label:>16}: fast {t_fast * 1e6:7.1f} µs, numpy {t_slow * 1e6:7.1f} µs = {t_slow / t_fast:5.1f}x faster")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    axis = (3, 4)
    row("AveragePool sum", WindowSum(SHAPE, 2), lambda x: np.sum(x, axis=axis, dtype=np.float32),
        pooling_view(relu=False), args.repeat)
    row("MaxPool (ReLU'd)", _windowed_extreme("max", 2, SHAPE), lambda x: np.max(x, axis=axis),
        pooling_view(relu=True), args.repeat)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
