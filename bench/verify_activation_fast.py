"""Exhaustive proof that the fast exact-mode activations give the old formulas' f32 bits: every one
of the 2^32 f32 inputs, in chunks, through numerics.activation and through the old float64 formula
(tests/device_model/test_activation_fast.py's OLD). NaN inputs are checked to give NaN with their
own payload (a function that is one ufunc: the formula's own NaN bits). Slow (minutes per function
on one core); run after changing activation_fast or the fast exact paths in numerics.
With --table: table mode's compiled loops (activation_table.LOOPS) against its numpy passes, every
f32 input, whole arrays compared bit for bit (NaN included), at the xpu1 preset's 256 segments.

    python bench/verify_activation_fast.py [gelu silu ...] [--chunk-bits 22]
    python bench/verify_activation_fast.py --table [exp gelu ...]
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

from test_activation_fast import OLD, expected_nan_bits, old_activation  # noqa: E402

from device_model import activation_table  # noqa: E402
from device_model import numerics as nm  # noqa: E402


def every_f32(chunk_bits: int):
    """All 2^32 f32 values, in chunks of 2^chunk_bits."""
    step = 1 << chunk_bits
    for start in range(0, 1 << 32, step):
        yield np.arange(start, start + step, dtype=np.uint64).astype(np.uint32).view(np.float32)


def count_differences(label: str, x: np.ndarray, got: np.ndarray, want: np.ndarray) -> int:
    """Elements whose bits differ; prints the first one."""
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    if bad.size:
        print(f"  {label}: {bad.size} differ, e.g. x={x[bad[0]]!r} got={got[bad[0]]!r} want={want[bad[0]]!r}",
              flush=True)
    return int(bad.size)


def verify(func: str, chunk_bits: int) -> int:
    """Number of f32 inputs whose new result differs from the old formula's (0 = proven equal)."""
    mismatches = 0
    t0 = time.perf_counter()
    for x in every_f32(chunk_bits):
        new = nm.activation(func, x)
        nan = np.isnan(x)
        if nan.any():
            mismatches += int(np.count_nonzero(new[nan].view(np.uint32) != expected_nan_bits(func, x[nan])))
        keep = ~nan
        mismatches += count_differences(func, x[keep], new[keep], old_activation(func, x[keep]))
    print(f"{func}: {mismatches} of 2^32 f32 inputs differ ({time.perf_counter() - t0:.0f} s)", flush=True)
    return mismatches


def verify_table(func: str, chunk_bits: int, segments: int = 256) -> int:
    """Number of f32 inputs whose table-mode result differs between the compiled loop and the passes."""
    compiled_loop = activation_table.compiled_loop
    kernel = activation_table.LOOPS[_loop_kind(func)]
    if kernel.compiled() is None:
        raise SystemExit(f"no compiled loop to verify: {kernel.unavailable}")
    mismatches = 0
    t0 = time.perf_counter()
    for x in every_f32(chunk_bits):
        loop = nm.activation(func, x, "table", segments)
        activation_table.compiled_loop = lambda kind: None
        try:
            passes = nm.activation(func, x, "table", segments)
        finally:
            activation_table.compiled_loop = compiled_loop
        mismatches += count_differences(f"{func} (table)", x, loop, passes)
    print(f"{func} (table): {mismatches} of 2^32 f32 inputs differ ({time.perf_counter() - t0:.0f} s)", flush=True)
    return mismatches


def _loop_kind(func: str) -> str:
    if func in activation_table.GATES:
        return "gate"
    if func in activation_table.DOMAIN_FUNCS:
        return "mantissa"
    return "abs" if func in activation_table.ODD or func == "softplus" else func


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("funcs", nargs="*")
    ap.add_argument("--chunk-bits", type=int, default=22)
    ap.add_argument("--table", action="store_true", help="table mode: compiled loops against numpy passes")
    args = ap.parse_args()
    if args.table:
        bad = sum(verify_table(f, args.chunk_bits)
                  for f in args.funcs or activation_table.FUNCS + activation_table.DOMAIN_FUNCS)
    else:
        bad = sum(verify(f, args.chunk_bits) for f in args.funcs or sorted(OLD))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
