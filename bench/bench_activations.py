"""Exact-mode activation speed: numerics.activation against the float64 formula it replaced (the
old formulas kept in tests/device_model/test_activation_fast.py), same inputs, same run, on an
f32 tile. CPU time of this thread, best of several repeats; prints old/new per function.

    python bench/bench_activations.py [--shape 128x512] [--repeat 15] [--scale 2.0]

Run alone, a formula's 512 KiB float64 temporaries can be returned to the OS and faulted in again on
every call (glibc trims the heap top), which the emulator's steady state does not see: inside a
BERT-mini run the fp32 GELU calls went from 31.8 to 20.1 ms of CPU (same run, formula vs fast).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "device_model"))

from test_activation_fast import OLD, old_activation  # noqa: E402

from device_model import numerics as nm  # noqa: E402


def cpu_time(fn, number: int, repeat: int) -> float:
    """Best per-call CPU time of this thread over `repeat` batches of `number` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - t0) / number)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128x512")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--scale", type=float, default=2.0, help="inputs are standard normal times this")
    args = ap.parse_args()
    shape = tuple(int(d) for d in args.shape.split("x"))
    x = (np.random.default_rng(0).standard_normal(shape) * args.scale).astype(np.float32)
    print(f"f32 [{args.shape}] tile, inputs N(0, {args.scale:g}^2); CPU ms per call, best of {args.repeat}")
    print(f"{'func':10s} {'old ms':>8s} {'new ms':>8s} {'old/new':>8s}")
    for func in sorted(OLD):
        assert np.array_equal(nm.activation(func, x).view(np.uint32), old_activation(func, x).view(np.uint32))
        # interleave so that load from other processes hits both alike
        old = new = float("inf")
        for _ in range(3):
            old = min(old, cpu_time(lambda f=func: old_activation(f, x), 5, args.repeat))
            new = min(new, cpu_time(lambda f=func: nm.activation(f, x), 5, args.repeat))
        print(f"{func:10s} {old * 1e3:8.3f} {new * 1e3:8.3f} {old / new:8.2f}")


if __name__ == "__main__":
    main()
