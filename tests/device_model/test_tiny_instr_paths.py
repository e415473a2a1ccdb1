"""Fast paths for tiny instructions (tiles of a few hundred elements, where each numpy call's fixed cost
is the whole cost) give the same bits as the general paths they bypass.

- activate of a function numerics evaluates as one float64 ufunc at that size: one call with
  dtype=float64 into the f32 result (`engines._activate_one_pass`, `numerics.one_pass_function`);
- elementwise ops on small tiles of short rows keep numpy's default buffering (`engines._buffering_pays`).

Each case runs the instruction's executor on one memory and the general path on another (the fast
path switched off), with memory full of random bytes (NaN payloads, infinities, subnormals, -0) and
awkward values written into the operands, and requires both memories to be equal byte for byte.
"""
from __future__ import annotations

import numpy as np
import pytest

from device_model import engines, narrow
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


def _compare(ins: Instr, seed: int, monkeypatch, switch_off: str, fill=("src",), runs: int = 1) -> None:
    """The executor as built now on one memory, and with `switch_off` (an engines attribute) replaced so
    the general path runs on the other; with runs=2 the operands change between two runs (an executor
    must read them again, not keep what it read when it was built or first ran)."""
    fast_mem, ref_mem = _memories(seed)
    fast = build_executor(ins, fast_mem, ARCH)
    with monkeypatch.context() as m:
        m.setattr(engines, switch_off, lambda *args: None if switch_off != "_buffering_pays" else False)
        ref = build_executor(ins, ref_mem, ARCH)
    for run in range(runs):
        for i, name in enumerate(fill):
            _fill((fast_mem, ref_mem), ins.operands[name], seed * 7 + i + 100 * run)
        fast()
        ref()
        assert_same_memory(fast_mem, ref_mem, f"{ins} (run {run + 1})")


# ---- activate: one float64 ufunc call --------------------------------------------------------------------

ONE_PASS = ["sigmoid", "tanh", "exp", "log", "sqrt", "erf", "relu"]


@pytest.mark.parametrize("func", ONE_PASS)
def test_one_pass_function_gives_activation_bits(func):
    """The routing itself: for an array below the size limit, one call gives activation()'s bits."""
    x = awkward_f32(hash(func) % 1000, 3000)
    one_call = nm.one_pass_function(func, "exact", x.size)
    assert one_call is not None
    got = np.empty_like(x)
    one_call(x, got)
    with np.errstate(all="ignore"):
        ref = nm.activation(func, x)
    assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()


def test_one_pass_function_is_not_offered_where_activation_takes_another_route():
    assert nm.one_pass_function("sigmoid", "exact", 4096) is None  # certified_f32 from there on
    assert nm.one_pass_function("sigmoid", "exact", 4095) is not None
    assert nm.one_pass_function("tanh", "table", 10) is None
    assert nm.one_pass_function("gelu", "exact", 10) is None
    assert nm.one_pass_function("leaky_relu", "exact", 10) is None


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
@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "f32"), ("f32", "bf16"), ("f16", "fp8e4"),
                                           ("i32", "i32"), ("i8", "f32")])
def test_activate_one_pass_matches_the_general_path(func, src_dt, dst_dt, monkeypatch):
    for i, (src, dst) in enumerate(LAYOUTS):
        src = AP(src.space, src.offset, src.dims, src_dt, src.pstart, src.pcount)
        dst = AP(dst.space, dst.offset, dst.dims, dst_dt, dst.pstart, dst.pcount)
        ins = Instr("act", "activate", {"dst": dst, "src": src}, {"func": func, "mode": "exact"})
        _compare(ins, 10 * i + len(func), monkeypatch, "one_pass_function")


SCALE_BIAS_ACCUM = [
    ({"scale": 2.0}, {}), ({"bias": -1.5}, {}), ({"scale": 0.5, "bias": 3.0}, {}),
    ({}, {"accum": _sb(1024, 32, ((1, 1),))}),
    ({}, {"bias_ap": _sb(1024, 32, ((1, 1),)), "accum": _sb(1152, 32, ((1, 1),), "bf16")}),  # softmax's exp
    ({"bias": 1e-5}, {"scale_ap": _sb(1280, 32, ((1, 1),), "bf16"), "bias_ap": _sb(1024, 32, ((1, 1),))}),
    ({}, {"scale_ap": _sb(1280, 32, ((1, 1),)), "bias_ap": _sb(1024, 32, ((1, 1),))}),  # int8's requantize
]


@pytest.mark.parametrize("func", ["exp", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("attrs,extra", SCALE_BIAS_ACCUM)
@pytest.mark.parametrize("dst_dt", ["f32", "bf16"])
def test_activate_one_pass_with_scale_bias_and_accum_matches_the_general_path(func, attrs, extra, dst_dt,
                                                                             monkeypatch):
    for i, (src, dst) in enumerate([(_sb(0, 32, ((1, 8),)), _sb(512, 32, ((1, 8),), dst_dt)),
                                    (_sb(0, 32, ((2, 4), (1, 2))), _sb(0, 32, ((1, 8),), dst_dt)),
                                    (_sb(0, 32, ((1, 16),), space="psum"), _sb(512, 32, ((1, 16),), dst_dt))]):
        ins = Instr("act", "activate", {"dst": dst, "src": src, **extra}, {"func": func, "mode": "exact", **attrs})
        names = ("src",) + tuple(n for n in extra if n != "accum")
        _compare(ins, 40 + i, monkeypatch, "one_pass_function", fill=names, runs=2)
        mem = Memory(ARCH, 1 << 14, 8 << 10, 4 << 10)
        assert engines.bare_executor(build_executor(ins, mem, ARCH)).__name__ == "activate_one_pass"


def test_activate_of_other_functions_or_large_tiles_keeps_the_general_path():
    mem = Memory(ARCH, 1 << 14, 64 << 10, 4 << 10)
    for func, free in (("leaky_relu", 8), ("gelu", 8), ("sigmoid", 4096 // 32)):
        ins = Instr("act", "activate", {"dst": _sb(32768, 32, ((1, free),)), "src": _sb(0, 32, ((1, free),))},
                    {"func": func, "mode": "exact"})
        assert engines.bare_executor(build_executor(ins, mem, ARCH)).__name__ == "activate"


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


# ---- narrow tiles: one 1-D call per column ------------------------------------------------------------------

def _rows(rows: int, cols: int, stride: int = 1000, offset: int = 0) -> np.ndarray:
    """[rows, cols] f32 rows `stride` elements apart, like a tile in SBUF."""
    buf = np.zeros(rows * stride + 64, np.float32)
    return buf[offset:offset + rows * stride].reshape(rows, stride)[:, :cols]


def _nan_laden(seed: int, shape) -> np.ndarray:
    """Mostly NaNs with distinct payloads (so both operands are NaN at most elements), plus awkward values."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return np.where(rng.random(n) < 0.7, _nan_payloads(rng, n), awkward_f32(seed, n)).reshape(shape)


@pytest.mark.parametrize("ufunc", [np.add, np.multiply, np.subtract, np.divide, np.maximum, np.minimum])
@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 2), (7, 1), (32, 2), (33, 2), (128, 2)])
@pytest.mark.parametrize("case", ["distinct", "in_place", "per_row", "scalar", "nan_scalar"])
def test_column_calls_equal_numpys_2d_call(ufunc, rows, cols, case):
    seed = rows * 10 + cols
    a, b, out = _rows(rows, cols), _rows(rows, cols, 777), _rows(rows, cols, 1001, 3)
    a[...], b[...], out[...] = _nan_laden(seed, a.shape), _nan_laden(seed + 1, b.shape), _nan_laden(seed + 2, a.shape)
    if case == "in_place":
        out = a
    if case == "per_row":
        b = _rows(rows, 1, 555)
        b[...] = _nan_laden(seed + 3, b.shape)
    if case == "scalar":
        b = np.float32(2.5)
    if case == "nan_scalar":
        b = np.uint32(0xFFC01234).view(np.float32)
    ref_a, ref_b, ref_out = a.copy(), (b.copy() if isinstance(b, np.ndarray) else b), out.copy()
    if case == "in_place":
        ref_out = ref_a
    run = narrow.column_calls(ufunc, (a, b), out)  # None where the probe saw a difference: numpy's call
    with np.errstate(all="ignore"):
        (run or (lambda: ufunc(a, b, out=out)))()
        ufunc(ref_a, ref_b, out=ref_out)
    assert out.view(np.uint32).tobytes() == ref_out.view(np.uint32).tobytes()


def test_column_calls_refuse_what_they_cannot_do_exactly():
    a, b = _rows(32, 2), _rows(32, 2, 777)
    shifted = _rows(32, 3)[:, 1:]  # dst one element after a, in the same rows
    buf_a = shifted.base
    a_same_rows = np.lib.stride_tricks.as_strided(buf_a, (32, 2), shifted.strides)
    assert narrow.column_calls(np.add, (a_same_rows, b), shifted) is None  # overlaps an input it is not
    assert narrow.column_calls(np.add, (_rows(32, 3), _rows(32, 3, 777)), _rows(32, 3, 900)) is None  # 3 cols
    assert narrow.column_calls(np.power, (a, b), _rows(32, 2, 900)) is None  # vector loops may round otherwise
    assert narrow.column_calls(np.add, (a.astype(np.float64), b), _rows(32, 2, 900)) is None
    unaligned = np.frombuffer(np.zeros(32 * 1000 * 4 + 8, np.uint8)[1:1 + 32 * 1000 * 4], np.float32)
    assert narrow.column_calls(np.add, (unaligned.reshape(32, 1000)[:, :2], b), _rows(32, 2, 900)) is None


def test_a_probe_that_differs_turns_the_columns_off(monkeypatch):
    """Whatever the probe finds different, the caller gets None and keeps numpy's call."""
    a, b, out = _rows(5, 2), _rows(5, 2, 777), _rows(5, 2, 901)
    monkeypatch.setattr(narrow, "_PROBED", {})
    real_fill = narrow._fill
    calls = []

    def fill_differently(rng, x, filling, operand):  # the split run sees other values: the results differ
        real_fill(rng, x, filling, operand)
        calls.append(1)
        if len(calls) > 3:
            x[...] = np.float32(len(calls))
    monkeypatch.setattr(narrow, "_fill", fill_differently)
    assert narrow.column_calls(np.add, (a, b), out) is None


NARROW_TT = [
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(128, 32, ((1, 2),))),
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(0, 32, ((1, 2),))),  # in place on a
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(4, 32, ((1, 2),))),  # shifted overlap: numpy's call
    (_sb(0, 16, ((1, 1),)), _sb(0, 16, ((1, 1),), space="psum"), _sb(8, 16, ((1, 1),))),
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(128, 32, ((1, 2),), dtype="bf16")),  # rounded: numpy's call
    (_sb(0, 32, ((1, 2),), dtype="bf16"), _sb(64, 32, ((1, 2),)), _sb(128, 32, ((1, 2),))),  # widened each run
    (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),), dtype="f16"), _sb(0, 32, ((1, 2),))),
]


@pytest.mark.parametrize("op", ["add", "mul", "sub", "div", "max", "min", "pow"])
def test_tensor_tensor_on_narrow_tiles_matches_numpys_call(op, monkeypatch):
    for i, (a, b, dst) in enumerate(NARROW_TT):
        ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op})
        _compare(ins, 300 + i, monkeypatch, "column_calls", fill=("a", "b"), runs=2)


@pytest.mark.parametrize("stages", [{"op0": "mul", "s0": 2.0, "op1": "sub", "s1": 1.0},
                                    {"op0": "add"}, {"op0": "add", "op1": "max", "s1": 0.0},
                                    {"op0": "sub", "s0": 3.0, "rev0": 1, "op1": "mul", "s1": float("nan")}])
def test_tensor_scalar_on_narrow_tiles_matches_numpys_call(stages, monkeypatch):
    for i, (src, dst, scalar_dt) in enumerate([(_sb(0, 32, ((1, 2),)), _sb(0, 32, ((1, 2),)), "f32"),
                                               (_sb(0, 32, ((1, 2),), space="psum"), _sb(512, 32, ((1, 2),)), "f32"),
                                               (_sb(0, 32, ((1, 1),)), _sb(4, 32, ((1, 1),)), "f32"),
                                               (_sb(0, 32, ((1, 2),), dtype="bf16"), _sb(512, 32, ((1, 2),)), "f32"),
                                               (_sb(0, 32, ((1, 2),)), _sb(512, 32, ((1, 2),)), "bf16")]):
        ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src, "s0_ap": _sb(2048, 32, ((1, 1),), scalar_dt)},
                    stages)
        _compare(ins, 400 + i, monkeypatch, "column_calls", fill=("src", "s0_ap"), runs=2)
    # the per-partition scalar is dst's second column: read before dst is written (numpy's call)
    dst = _sb(512, 32, ((1, 2),))
    ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": _sb(0, 32, ((1, 2),)), "s0_ap": _sb(516, 32, ((1, 1),))},
                stages)
    _compare(ins, 450, monkeypatch, "column_calls", fill=("src", "dst"), runs=2)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_accumulating_matmul_into_a_narrow_tile_matches_numpys_add(n, monkeypatch):
    for i, (mov, stat_dt) in enumerate([(_sb(256, 32, ((1, n),)), "f32"), (_sb(256, 32, ((4, n),)), "f32"),
                                        (_sb(256, 32, ((1, n),), dtype="bf16"), "bf16")]):
        ins = Instr("pe", "matmul", {"dst": _sb(0, 32, ((1, n),), space="psum"),
                                     "stat": _sb(0, 32, ((1, 32),), dtype=stat_dt), "mov": mov}, {"start": 0})
        _compare(ins, 500 + i, monkeypatch, "column_calls", fill=("dst", "stat", "mov"), runs=2)


# ---- the run's BLAS thread count ------------------------------------------------------------------------------

def test_single_threaded_blas_sets_one_thread_and_restores_the_count():
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from device_model.machine import single_threaded_blas
    with threadpool_limits(limits=2, user_api="blas"):
        before = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
        with single_threaded_blas():
            inside = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
        after = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
    assert inside == [1] * len(before) and after == before


def test_a_library_without_openblas_symbols_keeps_threadpoolctls_methods():
    from device_model.machine import _thread_count_functions

    class Controller:
        internal_api, num_threads, calls = "mkl", 4, []

        def set_num_threads(self, n):
            self.calls.append(n)
    lib = Controller()
    get, put = _thread_count_functions(lib)
    put(1)
    assert get() == 4 and lib.calls == [1]


# ---- int8 matmul: f32 work arrays, exact ------------------------------------------------------------------------

def _old_int8_matmul(ins: Instr, mem: Memory) -> None:
    """The previous formula: products in f32 from fresh arrays, through int64 to int32, added with wrap-around."""
    stat_ap, mov_ap, dst_ap = ins.operands["stat"], ins.operands["mov"], ins.operands["dst"]
    k = stat_ap.shape[0]
    m, n = stat_ap.num_elements // k, mov_ap.num_elements // k
    s = mem.view(stat_ap).reshape(k, m).astype(np.float32)
    x = mem.view(mov_ap).reshape(k, n).astype(np.float32)
    product = np.matmul(s.T, x).astype(np.int64).astype(np.int32)
    dst = mem.view(dst_ap)
    if ins.attrs["start"] == 1:
        dst[...] = product.reshape(dst.shape)
    else:
        dst[...] = dst + product.reshape(dst.shape)


@pytest.mark.parametrize("start", [0, 1])
def test_int8_matmul_matches_the_previous_formula(start):
    rng = np.random.default_rng(start)
    cases = [(_sb(0, 128, ((1, 16),), "i8"), _sb(64, 128, ((1, 64),), "i8"), _sb(0, 16, ((1, 64),), "i32", "psum")),
             (_sb(0, 8, ((1, 16),), "i8"), _sb(64, 8, ((16, 8), (1, 8)), "i8"), _sb(0, 16, ((1, 64),), "i32", "psum")),
             (_sb(0, 27, ((1, 8),), "i8"), _sb(64, 27, ((1, 256),), "i8"),
              _sb(0, 8, ((300, 2), (1, 128)), "i32", "psum"))]  # dst not seen as [M, N]
    for i, (stat, mov, dst) in enumerate(cases):
        ins = Instr("pe", "matmul", {"dst": dst, "stat": stat, "mov": mov}, {"start": start})
        new_mem, old_mem = _memories(600 + i)
        run = build_executor(ins, new_mem, ARCH)
        for _ in range(2):
            for ap in (stat, mov):
                values = rng.integers(-128, 128, ap.num_elements).astype(np.int8)
                values[:4] = (-128, -128, 127, -128)
                for mem in (new_mem, old_mem):
                    mem.view(ap)[...] = values.reshape(mem.view(ap).shape)
            near_limits = rng.choice(np.array([2**31 - 1, -2**31, 2**31 - 5000, -2**31 + 7, 0, 12345], np.int64),
                                     dst.num_elements).astype(np.int32)  # the add wraps around
            for mem in (new_mem, old_mem):
                mem.view(dst)[...] = near_limits.reshape(mem.view(dst).shape)
            run()
            _old_int8_matmul(ins, old_mem)
            assert_same_memory(new_mem, old_mem, str(ins))


# ---- consecutive accumulating matmuls as one product --------------------------------------------------------------

def _gate_matmuls(g: int = 4, m: int = 32, n: int = 2, k: int = 32, stat_gap: int = 0, mov=None, start: int = 0,
                  dtype: str = "f32"):
    """An LSTM step's recurrent matmuls: the same h, g weight blocks side by side, g PSUM blocks side by side."""
    mov = mov or _sb(4096, k, ((1, n),), dtype)
    return [Instr("pe", "matmul", {"dst": _sb(j * n * 4, m, ((1, n),), "f32", "psum"),
                                   "stat": _sb(j * (m + stat_gap) * 4, k, ((1, m),), dtype), "mov": mov},
                  {"start": start}) for j in range(g)]


@pytest.mark.parametrize("g,m,n,k", [(4, 32, 2, 32), (2, 16, 8, 8), (3, 32, 1, 32), (4, 8, 16, 64)])
def test_batched_matmuls_equal_the_instructions_one_by_one(g, m, n, k):
    from device_model.batched import batched_matmul
    instrs = _gate_matmuls(g, m, n, k)
    for seed in range(3):
        one_by_one, batched = _memories(700 + seed)
        rng = np.random.default_rng(seed)
        operands = [instrs[0].operands["mov"]] + [i.operands[name] for i in instrs for name in ("stat", "dst")]
        for ap in operands:
            values = np.where(rng.random(ap.num_elements) < 0.3, _nan_payloads(rng, ap.num_elements),
                              awkward_f32(seed, ap.num_elements)).astype(np.float32)
            for mem in (one_by_one, batched):
                mem.view(ap)[...] = values.reshape(mem.view(ap).shape)
        run = batched_matmul(instrs, batched, 128)
        if run is None:  # this BLAS (e.g. OPENBLAS_CORETYPE=Haswell) sums these products differently
            _assert_the_probe_refuses(instrs, batched, g, m, k)  # at the batched size: kept apart, rightly
            return
        for _ in range(2):
            for ins in instrs:
                engines.bare_executor(build_executor(ins, one_by_one, ARCH))()
            with np.errstate(all="ignore"):
                run()
        assert_same_memory(one_by_one, batched, f"{g} matmuls [{k}x{m}]^T[{k}x{n}]")


def _assert_the_probe_refuses(instrs, mem: Memory, g: int, m: int, k: int) -> None:
    """batched_matmul declined a layout it can otherwise do: its probe found the batched product's bits
    differ from the separate products' on this machine's BLAS."""
    from device_model import batched
    stat, mov = instrs[0].operands["stat"], instrs[0].operands["mov"]
    stat_all = mem.view(AP("sbuf", stat.offset, ((1, g * m),), "f32", stat.pstart, k))
    assert not batched._probe(stat_all, mem.view(mov), g)


def test_matmuls_that_are_not_one_product_stay_apart():
    from device_model.batched import batched_matmul
    mem = Memory(ARCH, 1 << 14, 8 << 10, 4 << 10)
    other_mov = _gate_matmuls()
    other_mov[2] = Instr("pe", "matmul", {**other_mov[2].operands, "mov": _sb(4160, 32, ((1, 2),))}, {"start": 0})
    for instrs in (_gate_matmuls(stat_gap=4), _gate_matmuls(start=1), _gate_matmuls(dtype="bf16"), other_mov,
                   _gate_matmuls(g=1)):
        assert batched_matmul(instrs, mem, 128) is None


def test_a_replay_with_batched_matmuls_leaves_the_memory_of_one_by_one(monkeypatch):
    """The LSTM sample on NaN-laden inputs: the replay (its four gate matmuls per step batched) and the
    same replay with batching off end with the same bytes in every memory."""
    from pathlib import Path

    from device_model import machine as machine_module
    from xputools.compiler.context import CompileOptions
    from xputools.compiler.driver import compile_model
    from xputools.runtime import DeviceSession, read_npz
    path = Path(__file__).resolve().parents[2] / "samples" / "lstm.onnx"
    feeds = read_npz(path.with_name("lstm.inputs.npz"))
    program = compile_model(path, CompileOptions(precision="fp32",
                                                 shapes={k: v.shape for k, v in feeds.items()})).program
    rng = np.random.default_rng(5)
    for name, value in feeds.items():
        noisy = value.astype(np.float32) * np.float32(40)
        noisy.reshape(-1)[rng.random(noisy.size) < 0.2] = _nan_payloads(rng, noisy.size)[:1]
        feeds[name] = noisy
    memories = []
    for batching in (True, False):
        with monkeypatch.context() as m:
            if not batching:
                m.setattr(machine_module, "_BATCHABLE", ())
            session = DeviceSession(program)
            session.run(feeds)
            out = session.run(feeds)  # the second run replays the schedule
            names = [getattr(f, "__name__", "") for f in session.machine._schedule.bare]
            assert ("matmul_batched" in names) == batching
            memories.append((session.machine.memory, out.outputs))
    assert_same_memory(memories[0][0], memories[1][0], "lstm replay")
    for name in memories[0][1]:
        assert memories[0][1][name].tobytes() == memories[1][1][name].tobytes()
