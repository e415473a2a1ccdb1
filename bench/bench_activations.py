"""Activation speed: numerics.activation against the float64 evaluation it replaced, same inputs, same
run, on an f32 tile. Exact mode: the old formulas kept in tests/device_model/test_activation_fast.py;
table mode: the old table evaluation kept in tests/device_model/test_activation_table.py (run block by
block as activation() ran it). The "(prev)" rows compare with the fast path each one replaced: GELU's
rational approximation through certified_f32 (now the cubic table, activation_fast.gelu_f32) and exp
as activation() ran it block by block (now one buffered np.exp call). The "(passes)" rows compare the
numba-compiled loops (device_model.jit: exact GELU's table pass, every table-mode function) with the
numpy passes they stand in for, which still run with XPU_JIT=0 or without numba. CPU time of this
thread, best of several repeats; prints old/new.

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
from test_activation_table import old_table_activation  # noqa: E402

from device_model import activation_fast as fast  # noqa: E402
from device_model import activation_table  # noqa: E402
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


def old_table_blocked(func: str, x: np.ndarray, segments: int) -> np.ndarray:
    """The old table evaluation over activation()'s 16k-element blocks (how the emulator ran it)."""
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.float32)
    for start in range(0, flat.size, nm._ACT_BLOCK):
        out[start:start + nm._ACT_BLOCK] = old_table_activation(func, flat[start:start + nm._ACT_BLOCK], segments)
    return out.reshape(x.shape)


def previous_gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU as the rational approximation certified it before the table (same bits)."""
    return fast.certified_f32(x, fast.gelu_approx, nm._gelu, fast.GELU_REL_ERR, fast.GELU_LO, nm._F32_MAX,
                              sign_of_x=True)


def previous_exp(x: np.ndarray) -> np.ndarray:
    """Exact exp as activation() ran it before: float64 copies of 16k-element blocks (same bits)."""
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.float32)
    for start in range(0, flat.size, nm._ACT_BLOCK):
        out[start:start + nm._ACT_BLOCK] = nm._activation_f32("exp", flat[start:start + nm._ACT_BLOCK], False, 256,
                                                              0.01)
    return out.reshape(x.shape)


def table_passes(func: str, x: np.ndarray, segments: int) -> np.ndarray:
    """Table mode through activation_table's numpy passes instead of its compiled loop (same bits)."""
    compiled_loop = activation_table.compiled_loop
    activation_table.compiled_loop = lambda kind: None
    try:
        return nm.activation(func, x, "table", segments)
    finally:
        activation_table.compiled_loop = compiled_loop


def compare(name: str, old_fn, new_fn, repeat: int) -> None:
    """Print old vs new CPU ms per call, interleaved so that load from other processes hits both alike."""
    assert np.array_equal(old_fn().view(np.uint32), new_fn().view(np.uint32)), name
    old = new = float("inf")
    for _ in range(3):
        old = min(old, cpu_time(old_fn, 5, repeat))
        new = min(new, cpu_time(new_fn, 5, repeat))
    print(f"{name:24s} {old * 1e3:8.3f} {new * 1e3:8.3f} {old / new:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128x512")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--scale", type=float, default=2.0, help="inputs are standard normal times this")
    ap.add_argument("--segments", type=int, default=256, help="table-mode segments (the presets' 256)")
    args = ap.parse_args()
    shape = tuple(int(d) for d in args.shape.split("x"))
    x = (np.random.default_rng(0).standard_normal(shape) * args.scale).astype(np.float32)
    print(f"f32 [{args.shape}] tile, inputs N(0, {args.scale:g}^2); CPU ms per call, best of {args.repeat}")
    print(f"{'func':24s} {'old ms':>8s} {'new ms':>8s} {'old/new':>8s}")
    for func in sorted(OLD):
        compare(f"{func} exact", lambda f=func: old_activation(f, x), lambda f=func: nm.activation(f, x), args.repeat)
    with np.errstate(all="ignore"):
        compare("gelu exact (prev)", lambda: previous_gelu(x), lambda: nm.activation("gelu", x), args.repeat)
        compare("exp exact (prev)", lambda: previous_exp(x), lambda: nm.activation("exp", x), args.repeat)
        compare("gelu exact (passes)", lambda: fast.gelu_f32(x, nm._gelu, compiled=False),
                lambda: fast.gelu_f32(x, nm._gelu), args.repeat)
    segments = args.segments
    for func in activation_table.FUNCS:
        compare(f"{func} table", lambda f=func: old_table_blocked(f, x, segments),
                lambda f=func: nm.activation(f, x, "table", segments), args.repeat)
    for func in activation_table.FUNCS:
        compare(f"{func} table (passes)", lambda f=func: table_passes(f, x, segments),
                lambda f=func: nm.activation(f, x, "table", segments), args.repeat)


if __name__ == "__main__":
    main()
