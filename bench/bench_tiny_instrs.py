"""Tiny instructions (the LSTM sample's shapes and a few others): each executor as built now against the
general path it bypasses, built with that path's switch turned off, same memory, same run.

The switches: `engines.binary_tile` / `engines.stages_tile` (tensor_tensor / tensor_scalar on small f32
tiles as one compiled loop, device_model.tile_alu), `engines.column_calls` (narrow tiles as one 1-D call
per column), `engines.one_pass_function` (small activations as one float64 call), `engines._buffering_pays`
(numpy's default buffering on small tiles of short rows); a row may turn several off. int8 matmul has
no switch: its previous formula is timed as written in tests/device_model/test_tiny_instr_paths.py.
Best of several batches of calls, each instruction alone (so hotter caches than inside a run); prints
general/new.

    python bench/bench_tiny_instrs.py [--batches 15] [--calls 2000]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_model import engines  # noqa: E402
from device_model.arch import load_arch  # noqa: E402
from device_model.engines import build_executor  # noqa: E402
from device_model.isa import AP, Instr  # noqa: E402
from device_model.memory import Memory  # noqa: E402
from tests.device_model.test_tiny_instr_paths import _old_int8_matmul  # noqa: E402

ARCH = load_arch()


def _sb(off: int, parts: int, dims, dtype: str = "f32", space: str = "sbuf") -> AP:
    return AP(space, off, tuple(dims), dtype, 0, parts)


CASES = [
    ("tensor_tensor mul [32,2]", ("binary_tile", "column_calls"),
     Instr("dve", "tensor_tensor", {"dst": _sb(128, 32, ((1, 2),)), "a": _sb(0, 32, ((1, 2),)),
                                    "b": _sb(64, 32, ((1, 2),))}, {"op": "mul"})),
    ("tensor_tensor add [32,2] in place", ("binary_tile", "column_calls"),
     Instr("dve", "tensor_tensor", {"dst": _sb(0, 32, ((1, 2),)), "a": _sb(0, 32, ((1, 2),)),
                                    "b": _sb(64, 32, ((1, 2),))}, {"op": "add"})),
    ("tensor_scalar 2x-1 [32,2]", ("stages_tile", "column_calls"),
     Instr("dve", "tensor_scalar", {"dst": _sb(0, 32, ((1, 2),)), "src": _sb(0, 32, ((1, 2),))},
           {"op0": "mul", "s0": 2.0, "op1": "sub", "s1": 1.0})),
    ("tensor_scalar +bias [32,16]", ("stages_tile", "_buffering_pays"),
     Instr("dve", "tensor_scalar", {"dst": _sb(512, 32, ((1, 16),)), "src": _sb(0, 32, ((1, 16),), space="psum"),
                                    "s0_ap": _sb(1024, 32, ((1, 1),))}, {"op0": "add"})),
    ("matmul accumulate [32x32]^T[32x2]", "column_calls",
     Instr("pe", "matmul", {"dst": _sb(0, 32, ((1, 2),), space="psum"), "stat": _sb(0, 32, ((1, 32),)),
                            "mov": _sb(256, 32, ((1, 2),))}, {"start": 0})),
    ("activate sigmoid [32,8]", "one_pass_function",
     Instr("act", "activate", {"dst": _sb(512, 32, ((1, 8),)), "src": _sb(0, 32, ((1, 8),), space="psum")},
           {"func": "sigmoid", "mode": "exact"})),
    ("activate tanh [32,2]", "one_pass_function",
     Instr("act", "activate", {"dst": _sb(512, 32, ((1, 2),)), "src": _sb(0, 32, ((1, 2),))},
           {"func": "tanh", "mode": "exact"})),
    ("softmax exp +bias, accum [4,10]", "one_pass_function",
     Instr("act", "activate", {"dst": _sb(512, 4, ((1, 10),)), "src": _sb(0, 4, ((1, 10),)),
                               "bias_ap": _sb(1024, 4, ((1, 1),)), "accum": _sb(1100, 4, ((1, 1),))},
           {"func": "exp", "mode": "exact"})),
    ("int8 relu, scale, bias [8,256]", "one_pass_function",
     Instr("act", "activate", {"dst": _sb(2048, 8, ((1, 256),), "i32"), "src": _sb(0, 8, ((1, 256),), "i32", "psum"),
                               "scale_ap": _sb(1024, 8, ((1, 1),)), "bias_ap": _sb(1100, 8, ((1, 1),))},
           {"func": "relu", "mode": "table"})),
    ("int8 matmul accumulate [8x16]^T[8x64]", None,
     Instr("pe", "matmul", {"dst": _sb(0, 16, ((1, 64),), "i32", "psum"), "stat": _sb(0, 8, ((1, 16),), "i8"),
                            "mov": _sb(64, 8, ((1, 64),), "i8")}, {"start": 0})),
]


@contextmanager
def _switched_off(names):
    names = (names,) if isinstance(names, str) else names
    saved = {name: getattr(engines, name) for name in names}
    for name in names:
        setattr(engines, name, (lambda *args: False) if name == "_buffering_pays" else (lambda *args: None))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(engines, name, value)


def _best(fn, batches: int, calls: int) -> float:
    best = float("inf")
    with np.errstate(all="ignore"):
        for _ in range(batches):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / calls)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'instruction':40s} {'general us':>10s} {'new us':>8s} {'general/new':>11s}")
    for label, switch, ins in CASES:
        mems = [Memory(ARCH, 1 << 14, 8 << 10, 4 << 10) for _ in range(2)]
        for name in ("sbuf", "psum"):  # small finite values: no overflow to inf over repeated calls
            values = (rng.standard_normal(getattr(mems[0], name).size // 4) * 1e-3).astype(np.float32).view(np.uint8)
            for m in mems:
                getattr(m, name)[...] = values.reshape(getattr(m, name).shape)
        new = engines.bare_executor(build_executor(ins, mems[0], ARCH))
        if switch is None:
            def general(ins=ins, mem=mems[1]):
                _old_int8_matmul(ins, mem)
        else:
            with _switched_off(switch):
                general = engines.bare_executor(build_executor(ins, mems[1], ARCH))
        t_general = _best(general, args.batches, args.calls)
        t_new = _best(new, args.batches, args.calls)
        print(f"{label:40s} {t_general * 1e6:10.2f} {t_new * 1e6:8.2f} {t_general / t_new:10.1f}x")


if __name__ == "__main__":
    main()
