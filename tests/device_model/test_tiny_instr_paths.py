"""Fast paths for tiny instructions (tiles of a few hundred elements, where each numpy call's fixed cost
is the whole cost) give the same bits as the general paths they bypass.

- activate of a function numerics evaluates as one float64 ufunc at that size: one call with
  dtype=float64 into the f32 result (`engines._activate_one_pass`, `numerics.one_pass_ufunc`);
- elementwise ops on small tiles of short rows keep numpy's default buffering (`engines._buffering_pays`).

Each case runs the instruction's executor on one memory and the general path on another (the fast
path switched off), with memory full of random bytes (NaN payloads, infinities, subnormals, -0) and
awkward values written into the operands, and requires both memories to be equal byte for byte.
"""
from __future__ import annotations

import numpy as np
import pytest

from device_model import engines
from device_model import numerics as nm
from device_model.arch import load_arch
from device_model.engines import build_executor
from device_model.isa import AP, Instr
from device_model.memory import Memory
from tests.device_model.memory_checks import assert_same_memory

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
ARCH = load_arch()
F32 = np.float32
AWKWARD = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.1754942e-38, -1.1754942e-38, 3.4028235e38,
                    -3.4028235e38, 1.0, -1.0, 0.5, -0.5, 88.72284, -103.97208, 20.0, -20.0, 2.0 ** -60, 745.0],
                   F32)


def _nan_payloads(rng, n: int) -> np.ndarray:
    """Quiet and signalling NaNs of both signs with random payloads."""
    bits = rng.integers(1, 1 << 22, n, dtype=np.uint32) | np.uint32(0x7F800000)
    bits |= rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(22)  # quiet bit
    bits |= rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)  # sign
    return bits.view(F32)


def awkward_f32(seed: int, n: int) -> np.ndarray:
    """n f32 values: the awkward ones above, NaNs with payloads, subnormals, ties-prone small integers
    and halves, random bit patterns and ordinary numbers, in a seeded random order."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([
        AWKWARD, _nan_payloads(rng, 32),
        (rng.integers(1, 1 << 23, 32, dtype=np.uint32) | (rng.integers(0, 2, 32, dtype=np.uint32) << 31)).view(F32),
        (rng.integers(-64, 64, 32) / 2).astype(F32),
        rng.integers(0, 1 << 32, 64, dtype=np.uint64).astype(np.uint32).view(F32),
        (rng.standard_normal(128) * 4).astype(F32),
    ])
    return rng.choice(pool, n)


def _memories(seed: int) -> tuple[Memory, Memory]:
    rng = np.random.default_rng(seed)
    mems = [Memory(ARCH, 1 << 14, 8 << 10, 4 << 10) for _ in range(2)]
    for name in ("hbm", "sbuf", "psum"):
        contents = rng.integers(0, 256, getattr(mems[0], name).shape, dtype=np.uint8)
        for m in mems:
            getattr(m, name)[...] = contents
    return mems[0], mems[1]


def _fill(mems, ap: AP, seed: int) -> None:
    """Write awkward values (rounded to ap's dtype) into ap in both memories."""
    values = nm.cast(awkward_f32(seed, ap.num_elements), ap.dtype)
    for m in mems:
        m.view(ap)[...] = values.reshape(m.view(ap).shape)


def _sb(off: int, parts: int, dims, dtype: str = "f32", space: str = "sbuf") -> AP:
    return AP(space, off, tuple(dims), dtype, 0, parts)


def _compare(ins: Instr, seed: int, monkeypatch, switch_off: str, fill=("src",)) -> None:
    """The executor as built now on one memory, with `switch_off` (an engines attribute) replaced so
    the general path runs, on the other."""
    fast_mem, ref_mem = _memories(seed)
    for i, name in enumerate(fill):
        _fill((fast_mem, ref_mem), ins.operands[name], seed * 7 + i)
    build_executor(ins, fast_mem, ARCH)()
    with monkeypatch.context() as m:
        m.setattr(engines, switch_off, {"one_pass_ufunc": lambda *a: None, "_buffering_pays": lambda s: False}
                  [switch_off])
        build_executor(ins, ref_mem, ARCH)()
    assert_same_memory(fast_mem, ref_mem, str(ins))


# ---- activate: one float64 ufunc call --------------------------------------------------------------------

ONE_PASS = ["sigmoid", "tanh", "exp", "log", "sqrt", "erf"]


@pytest.mark.parametrize("func", ONE_PASS)
def test_one_pass_ufunc_gives_activation_bits(func):
    """The routing itself: for an array below the size limit, one call gives activation()'s bits."""
    x = awkward_f32(hash(func) % 1000, 3000)
    ufunc = nm.one_pass_ufunc(func, "exact", x.size)
    assert ufunc is not None
    got = ufunc(x, out=np.empty_like(x), dtype=np.float64)
    with np.errstate(all="ignore"):
        ref = nm.activation(func, x)
    assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()


def test_one_pass_ufunc_is_not_offered_where_activation_takes_another_route():
    assert nm.one_pass_ufunc("sigmoid", "exact", 4096) is None  # certified_f32 from there on
    assert nm.one_pass_ufunc("sigmoid", "exact", 4095) is not None
    assert nm.one_pass_ufunc("tanh", "table", 10) is None
    assert nm.one_pass_ufunc("gelu", "exact", 10) is None
    assert nm.one_pass_ufunc("relu", "exact", 10) is None


LAYOUTS = [
    # (src, dst): dense, a strided [32, 4, 2] source, gapped rows, in place, shifted overlap
    (_sb(0, 32, ((1, 8),)), _sb(512, 32, ((1, 8),))),
    (_sb(0, 32, ((2, 4), (1, 2))), _sb(512, 32, ((1, 8),))),
    (_sb(64, 16, ((12, 3), (1, 10))), _sb(1024, 16, ((1, 30),))),
    (_sb(0, 32, ((1, 8),), space="psum"), _sb(0, 32, ((1, 8),))),
    (_sb(256, 32, ((1, 2),)), _sb(256, 32, ((1, 2),))),
    (_sb(256, 8, ((1, 40),)), _sb(264, 8, ((1, 40),))),
]


@pytest.mark.parametrize("func", ONE_PASS)
@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "f32"), ("f32", "bf16"), ("f16", "fp8e4")])
def test_activate_one_pass_matches_the_general_path(func, src_dt, dst_dt, monkeypatch):
    for i, (src, dst) in enumerate(LAYOUTS):
        src = AP(src.space, src.offset, src.dims, src_dt, src.pstart, src.pcount)
        dst = AP(dst.space, dst.offset, dst.dims, dst_dt, dst.pstart, dst.pcount)
        ins = Instr("act", "activate", {"dst": dst, "src": src}, {"func": func, "mode": "exact"})
        _compare(ins, 10 * i + len(func), monkeypatch, "one_pass_ufunc")


def test_activate_with_scale_bias_or_accum_keeps_the_general_path():
    mem = Memory(ARCH, 1 << 14, 8 << 10, 4 << 10)
    src, dst = _sb(0, 32, ((1, 8),)), _sb(512, 32, ((1, 8),))
    for attrs, extra in (({"scale": 2.0}, {}), ({"bias": 1.0}, {}), ({}, {"accum": _sb(1024, 32, ((1, 1),))}),
                         ({}, {"bias_ap": _sb(1024, 32, ((1, 1),))})):
        ins = Instr("act", "activate", {"dst": dst, "src": src, **extra},
                    {"func": "sigmoid", "mode": "exact", **attrs})
        assert engines.bare_executor(build_executor(ins, mem, ARCH)).__name__ == "activate"
    plain = Instr("act", "activate", {"dst": dst, "src": src}, {"func": "sigmoid", "mode": "exact"})
    assert engines.bare_executor(build_executor(plain, mem, ARCH)).__name__ == "activate_one_pass"


# ---- small tiles of short rows: numpy's default buffering ---------------------------------------------------

TT_LAYOUTS = [
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(128, 32, ((1, 2),))),
    (_sb(0, 32, ((1, 16),)), _sb(0, 32, ((1, 16),), space="psum"), _sb(0, 32, ((1, 16),))),  # in place on a
    (_sb(0, 16, ((12, 3), (1, 10))), _sb(512, 16, ((1, 30),)), _sb(4, 16, ((12, 3), (1, 10)))),  # shifted overlap
]


@pytest.mark.parametrize("op", ["sub", "div", "max", "min", "add", "mul"])
def test_tensor_tensor_on_short_rows_matches_the_unbuffered_path(op, monkeypatch):
    for i, (a, b, dst) in enumerate(TT_LAYOUTS):
        ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op})
        _compare(ins, 100 + i, monkeypatch, "_buffering_pays", fill=("a", "b"))


@pytest.mark.parametrize("stages", [{"op0": "mul", "s0": 2.0, "op1": "sub", "s1": 1.0},
                                    {"op0": "add"}, {"op0": "add", "op1": "max", "s1": 0.0},
                                    {"op0": "sub", "s0": 3.0, "rev0": 1, "op1": "mul", "s1": float("nan")}])
def test_tensor_scalar_on_short_rows_matches_the_unbuffered_path(stages, monkeypatch):
    for i, (src, dst) in enumerate([(_sb(0, 32, ((1, 2),)), _sb(0, 32, ((1, 2),))),
                                    (_sb(0, 32, ((1, 16),), space="psum"), _sb(512, 32, ((1, 16),)))]):
        ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src, "s0_ap": _sb(2048, 32, ((1, 1),))}, stages)
        _compare(ins, 200 + i, monkeypatch, "_buffering_pays", fill=("src", "s0_ap"))
