"""Emulator overhead: the emulator (functional + timing) against the same numpy array work done in
a plain Python loop, in the same run.

    python bench/bench_emulator.py [--repeat 5]

1. the hand-written tiled 512x512x512 bf16 GEMM (samples/programs/gemm512.xasm), target <= 1.5x;
2. an elementwise-heavy program of >= 50k DVE/ACT instructions on [128, 64] tiles: reports
   instructions per second and the ratio against the plain loop.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_model.arch import load_arch  # noqa: E402
from device_model.assembly import assemble  # noqa: E402
from device_model.isa import AP, Instr  # noqa: E402
from device_model.machine import Machine, single_threaded_blas  # noqa: E402
from device_model.program import Program, Tensor  # noqa: E402


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---- GEMM -----------------------------------------------------------------------------------------
def gemm_emulated(prog, a_t, b, machine=None):
    """One inference: on `machine` (a program loaded once, as a runtime keeps it) or loading first."""
    m = machine or Machine("xpu1").load(prog)
    m.reset()
    m.write_tensor("a_t", a_t)
    m.write_tensor("b", b)
    m.run()
    return m.read_tensor("c")


def gemm_error_bound(a_t, b):
    """The exact product of the bf16-rounded operands (float64) and the error the documented numerics
    allow around it (docs/numerics.md: products summed in f32 in any order inside a matmul, partial
    sums added to the f32 PSUM in K-tile order): |err| <= n*u*sum|a*b| with n = K + K-tiles, u = 2^-24."""
    bf = ml_dtypes.bfloat16
    a64, b64 = (x.astype(bf).astype(np.float64) for x in (a_t, b))
    n = a_t.shape[0] + a_t.shape[0] // 128
    return a64.T @ b64, n * 2.0**-24 * (np.abs(a64).T @ np.abs(b64))


def check_gemm(emulated, a_t, b):
    """Raise if the emulated GEMM leaves the documented numerics; say whether it is also
    bit-identical to the plain loop run under the same BLAS thread limit (it is when both use the
    same BLAS kernel; a different summation order inside BLAS is allowed by the numerics)."""
    exact, bound = gemm_error_bound(a_t, b)
    err = np.abs(emulated.astype(np.float64) - exact)
    if not np.all(err <= bound):
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        raise SystemExit(f"GEMM result outside the documented f32 accumulation error at {worst}: "
                         f"error {err[worst]:.3g} > bound {bound[worst]:.3g}")
    with single_threaded_blas():
        plain = gemm_plain(a_t, b)
    differ = float(np.mean(emulated != plain))
    return "bit-identical to the plain loop" if differ == 0 else (
        f"{differ:.1%} of elements differ from the plain loop in the last bits (BLAS summation order), "
        f"all within the documented bound")


def gemm_plain(a_t, b):
    """The same array work the program does: 8 cast-in-flight loads, 16 matmuls accumulating in
    f32, 4 PSUM evacuations and 4 stores."""
    bf = ml_dtypes.bfloat16
    b_tiles = [b[k * 128:(k + 1) * 128].astype(bf) for k in range(4)]
    c = np.empty((512, 512), np.float32)
    for j in range(4):
        a_blk = [a_t[k * 128:(k + 1) * 128, j * 128:(j + 1) * 128].astype(bf) for k in range(4)]
        psum = np.zeros((128, 512), np.float32)
        for k in range(4):
            psum += a_blk[k].astype(np.float32).T @ b_tiles[k].astype(np.float32)
        c[j * 128:(j + 1) * 128] = psum.copy()
    return c


# ---- elementwise-heavy program --------------------------------------------------------------------
def elementwise_program(n_ops: int, free: int = 64) -> Program:
    arch = load_arch("xpu1")
    tile = lambda i: AP("sbuf", (i % 8) * free * 4, ((1, free),), "f32", 0, 128)  # noqa: E731
    ins = [Instr("dma0", "dma_copy", {"dst": tile(0), "src": AP("hbm", 0, ((free, 128), (1, free)), "f32")},
                 signals=((0, 1),))]
    ops = ["add", "min", "max", "sub"]
    for i in range(n_ops):
        waits = ((0, 1),) if i == 0 else ()
        if i % 5 == 4:
            ins.append(Instr("act", "activate", {"dst": tile(i + 1), "src": tile(i)}, {"func": "relu", "mode": "exact"},
                             waits=((1, i // 5 * 4 + 4),), signals=((2, 1),)))
            continue
        w = waits + (((2, i // 5),) if i % 5 == 0 and i >= 5 else ())
        ins.append(Instr("dve", "tensor_tensor", {"dst": tile(i + 1), "a": tile(i), "b": tile(i + 3)},
                         {"op": ops[i % 4]}, waits=w, signals=((1, 1),)))
    ins.append(Instr("dma1", "dma_copy", {"dst": AP("hbm", 128 * free * 4, ((free, 128), (1, free)), "f32"),
                                          "src": tile(n_ops)}, waits=((2, n_ops // 5),)))
    tensors = [Tensor("x", "input", 0, (128, free), "f32"), Tensor("y", "output", 128 * free * 4, (128, free), "f32")]
    return Program(arch, ins, tensors)


def elementwise_plain(x, n_ops, free=64):
    slots = [np.zeros((128, free), np.float32) for _ in range(8)]
    slots[0][...] = x
    fns = {"add": np.add, "min": np.minimum, "max": np.maximum, "sub": np.subtract}
    ops = ["add", "min", "max", "sub"]
    for i in range(n_ops):
        if i % 5 == 4:
            slots[(i + 1) % 8][...] = np.maximum(slots[i % 8], 0)
        else:
            slots[(i + 1) % 8][...] = fns[ops[i % 4]](slots[i % 8], slots[(i + 3) % 8])
    return slots[n_ops % 8].copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ops", type=int, default=50_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a_t, b = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
    prog = assemble((ROOT / "samples/programs/gemm512.xasm").read_text())
    gemm_check = check_gemm(gemm_emulated(prog, a_t, b), a_t, b)
    loaded = Machine("xpu1").load(prog)
    t_emu = best_of(lambda: gemm_emulated(prog, a_t, b, loaded), args.repeat)
    t_load = best_of(lambda: gemm_emulated(prog, a_t, b), args.repeat)
    with single_threaded_blas():  # the emulator runs BLAS on one thread: same conditions for the peer
        t_np = best_of(lambda: gemm_plain(a_t, b), args.repeat)
    print(f"GEMM 512^3 bf16: emulator {t_emu * 1e3:.1f} ms per run of the loaded program "
          f"({t_load * 1e3:.1f} ms with loading), plain numpy loop {t_np * 1e3:.1f} ms: "
          f"ratio {t_emu / t_np:.2f}x (target <= 1.5x), {t_load / t_np:.2f}x with loading; result {gemm_check}")

    prog2 = elementwise_program(args.ops)
    x = rng.standard_normal((128, 64)).astype(np.float32) * 0.1
    m = Machine("xpu1").load(prog2)
    m.write_tensor("x", x)
    m.run()
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(m.read_tensor("y"), elementwise_plain(x, args.ops))
    n_instr = len(prog2.instrs)

    def emu():
        mm = Machine("xpu1").load(prog2)
        mm.write_tensor("x", x)
        mm.run()

    reps = max(1, args.repeat // 2)
    t_emu2 = best_of(emu, reps)
    with np.errstate(all="ignore"):
        t_np2 = best_of(lambda: elementwise_plain(x, args.ops), reps)
    print(f"elementwise {n_instr} instructions: emulator {t_emu2:.2f} s ({n_instr / t_emu2:,.0f} instr/s, "
          f"load included), plain numpy loop {t_np2:.2f} s, ratio {t_emu2 / t_np2:.2f}x")


if __name__ == "__main__":
    main()
