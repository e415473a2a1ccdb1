"""The vector-engine fast paths leave every byte of memory as the paths they replaced.

- ufuncs run without numpy's operand buffering (device_model.unbuffered) against the same executor
  built with numpy's default buffering, over operands dense in NaNs (with payloads and signs), ±0,
  ±inf and subnormals, in row, broadcast, gapped and overlapping layouts;
- stats against x.mean / x.var on the widened float64 array (the previous formula);
- transpose32 block by block and the PE transpose's single copy against the previous formulas.
"""
from __future__ import annotations

import numpy as np
import pytest

from device_model.arch import load_arch
from device_model.engines import _converter, _reader, _widener, _writer, build_executor
from device_model.isa import AP, Instr
from device_model.memory import Memory
from device_model.numerics import cast
from device_model.unbuffered import NAN_PAIR_SENSITIVE, ORDER_FREE, numpy_default_buffering, quiet_unbuffered
from tests.device_model.memory_checks import assert_same_memory

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and inf operands on purpose
ARCH = load_arch()
HBM, SBUF_ROW, PSUM_ROW = 1 << 14, 32 << 10, 8 << 10
_AWKWARD = np.array([0x00000000, 0x80000000, 0x7FC00000, 0xFFC00000, 0x7FC00123, 0xFF812345, 0x7F800001,
                     0x7F800000, 0xFF800000, 0x00000001, 0x80000001, 0x007FFFFF, 0x7F7FFFFF, 0x3F800000,
                     0xBF800000, 0x3F000000], np.uint32)  # ±0, NaNs (quiet, signalling, payloads), ±inf, ...


def _memories(seed: int, nan_share: float = 0.3) -> tuple[Memory, Memory]:
    """Two memories with the same bytes: random f32 patterns, a `nan_share` of them awkward values."""
    rng = np.random.default_rng(seed)
    a = Memory(ARCH, HBM, SBUF_ROW, PSUM_ROW)
    b = Memory(ARCH, HBM, SBUF_ROW, PSUM_ROW)
    for name in ("hbm", "sbuf", "psum"):
        buf = getattr(a, name)
        words = rng.integers(0, 1 << 32, buf.size // 4, dtype=np.uint32)
        pick = rng.random(words.size) < nan_share
        words[pick] = rng.choice(_AWKWARD, int(pick.sum()))
        contents = words.view(np.uint8).reshape(buf.shape)
        buf[...] = contents
        getattr(b, name)[...] = contents
    return a, b


def _check_against_buffered(ins: Instr, seed: int, nan_share: float = 0.3) -> None:
    fast_mem, ref_mem = _memories(seed, nan_share)
    fast = build_executor(ins, fast_mem, ARCH)
    with numpy_default_buffering():
        reference = build_executor(ins, ref_mem, ARCH)
    fast()
    reference()
    assert_same_memory(fast_mem, ref_mem, str(ins))


def _check_against_oracle(ins: Instr, oracle, seed: int, nan_share: float = 0.3, prepare=None) -> None:
    """The executor on one memory, `oracle(ins, mem)` (the previous formula) on a copy; `prepare(mem)`
    first writes special contents into both."""
    fast_mem, ref_mem = _memories(seed, nan_share)
    if prepare is not None:
        prepare(fast_mem)
        prepare(ref_mem)
    build_executor(ins, fast_mem, ARCH)()
    oracle(ins, ref_mem)
    assert_same_memory(fast_mem, ref_mem, str(ins))


def _sb(off: int, parts: int, dims, dtype: str = "f32", space: str = "sbuf", pstart: int = 0) -> AP:
    return AP(space, off, tuple(dims), dtype, pstart, parts)


def _rows(off: int, parts: int, cols: int, dtype: str = "f32", space: str = "sbuf") -> AP:
    return _sb(off, parts, ((1, cols),), dtype, space)


# ---- the unbuffered ufuncs themselves ---------------------------------------------------------------

@pytest.mark.parametrize("ufunc", sorted(ORDER_FREE | NAN_PAIR_SENSITIVE, key=lambda u: u.__name__))
@pytest.mark.parametrize("cols", [4, 16, 17, 100, 384])
def test_order_free_ufuncs_give_the_same_bits_unbuffered(ufunc, cols):
    """sub/div/max/min: equal in every element; add/mul: equal wherever not both operands are NaN."""
    rng = np.random.default_rng(cols)
    words = rng.integers(0, 1 << 32, (64, 1040), dtype=np.uint32)
    words[rng.random(words.shape) < 0.5] = rng.choice(_AWKWARD, int((rng.random(words.shape) < 0.5).sum()))[0]
    pick = rng.random(words.shape) < 0.4
    words[pick] = rng.choice(_AWKWARD, int(pick.sum()))
    m = words.view(np.float32)
    layouts = {"rows": (m[:, :cols], m[:, 500:500 + cols]),
               "broadcast": (m[:, :cols], np.broadcast_to(m[:, 1000:1001], (64, cols))),
               "scalar": (m[:, :cols], m[3, 7]),
               "gapped": (m[:, :2 * cols:2][:, :cols], m[:, 300:300 + cols])}
    for name, (x, y) in layouts.items():
        for first, second in ((x, y), (y, x)):
            want, got = np.empty((64, cols), np.float32), np.empty((64, cols), np.float32)
            with np.errstate(all="ignore"):
                ufunc(first, second, out=want)
            quiet_unbuffered(lambda f=first, s=second, o=got: ufunc(f, s, out=o))()
            differ = want.view(np.uint32) != got.view(np.uint32)
            if ufunc in NAN_PAIR_SENSITIVE:
                both_nan = np.isnan(np.broadcast_to(first, want.shape)) & np.isnan(np.broadcast_to(second, want.shape))
                differ &= ~both_nan
            assert not differ.any(), f"{ufunc.__name__} {name}: {np.argwhere(differ)[:3].tolist()}"


# ---- tensor_tensor ------------------------------------------------------------------------------------

TT_CASES = [
    # (a, b, dst): disjoint rows, psum + sbuf, in place on a, in place on b, a == b == dst, broadcast b
    (_rows(0, 128, 96), _rows(2048, 128, 96), _rows(4096, 128, 96)),
    (_rows(0, 128, 100, space="psum"), _rows(0, 128, 100), _rows(8192, 128, 100)),
    (_rows(0, 64, 96), _rows(1024, 64, 96), _rows(0, 64, 96)),
    (_rows(0, 64, 96), _rows(1024, 64, 96), _rows(1024, 64, 96)),
    (_rows(0, 32, 48), _rows(0, 32, 48), _rows(0, 32, 48)),
    (_sb(0, 128, ((64, 3), (1, 64))), _sb(4096, 128, ((1, 3), (0, 64))), _sb(0, 128, ((64, 3), (1, 64)))),
    (_sb(0, 16, ((40, 5), (1, 33))), _sb(1000, 16, ((1, 165),)), _sb(3000, 16, ((35, 5), (1, 33)))),
    (_rows(0, 16, 30), _rows(512, 16, 30), _rows(8, 16, 30)),  # dst overlaps a, shifted
]


def _typed_cases():
    """Each layout with dtypes (a, b, dst); an operand shared by two roles keeps one dtype."""
    for case, aps in enumerate(TT_CASES):
        for dtypes in (("f32", "f32", "f32"), ("f32", "f32", "bf16"), ("bf16", "f32", "f32")):
            typed = tuple(AP(ap.space, ap.offset, ap.dims, dt, ap.pstart, ap.pcount) for ap, dt in zip(aps, dtypes))
            shared = len({(ap.space, ap.offset) for ap in aps}) < 3
            if not shared or len(set(dtypes)) == 1:
                yield pytest.param(case, typed, id=f"{case}-{'-'.join(dtypes)}")


@pytest.mark.parametrize("op", ["add", "mul", "sub", "div", "max", "min"])
@pytest.mark.parametrize("case,operands", list(_typed_cases()))
@pytest.mark.parametrize("nan_share", [0.0, 0.3])
def test_tensor_tensor_unbuffered_matches_numpy_default(op, case, operands, nan_share):
    a, b, dst = operands
    ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op})
    _check_against_buffered(ins, 10 * case + len(op), nan_share)


# ---- tensor_scalar -------------------------------------------------------------------------------------

SCALAR_CASES = [
    {"op0": "sub", "op1": "mul"},  # LayerNorm's normalise, both per partition
    {"op0": "div", "s0": 5.65, "op1": "bypass"},
    {"op0": "add", "s0": float("nan"), "op1": "max", "s1": 0.0},  # a NaN immediate: numpy's default
    {"op0": "mul", "s0": -0.0, "op1": "add", "s1": 1e-45},
    {"op0": "max", "s0": 0.0, "op1": "min", "s1": 6.0},
    {"op0": "add", "op1": "pow", "s1": 2.0},  # pow: numpy's default
]


@pytest.mark.parametrize("stages", SCALAR_CASES)
@pytest.mark.parametrize("nan_share", [0.0, 0.3])
@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "f32"), ("f32", "bf16")])
def test_tensor_scalar_unbuffered_matches_numpy_default(stages, nan_share, src_dt, dst_dt):
    seed = 0
    for src, dst in ((_rows(0, 128, 96, src_dt), _rows(4096, 128, 96, dst_dt)),
                     (_rows(0, 64, 100, src_dt), _rows(0, 64, 100, dst_dt)),
                     (_sb(0, 16, ((40, 3), (1, 32)), src_dt), _rows(2000, 16, 96, dst_dt))):
        if src.offset == dst.offset and src_dt != dst_dt:
            continue
        for scalar_dt in ("f32", "bf16"):
            seed += 1
            aps = {"s0_ap": _rows(9000, src.pcount, 1, scalar_dt), "s1_ap": _rows(9100, src.pcount, 1, "f32")}
            aps = {k: v for k, v in aps.items() if f"s{k[1]}" not in stages}
            ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src, **aps}, dict(stages))
            _check_against_buffered(ins, seed, nan_share)


def test_tensor_scalar_per_partition_nan_scalar_takes_numpy_default():
    """A NaN among the per-partition scalars of an add is the one case that must not go unbuffered."""
    for share in (0.0, 0.5):
        ins = Instr("dve", "tensor_scalar", {"dst": _rows(4096, 128, 100), "src": _rows(0, 128, 100),
                                             "s0_ap": _rows(9000, 128, 1)}, {"op0": "add", "op1": "bypass"})
        _check_against_buffered(ins, 77, share)


# ---- stats ----------------------------------------------------------------------------------------------

def _old_stats(ins: Instr, mem: Memory) -> None:
    src_ap, dst_ap = ins.operands["src"], ins.operands["dst"]
    p = src_ap.shape[0]
    f = src_ap.num_elements // p
    x = _widener(src_ap.dtype)(_reader(mem.view(src_ap), (p, f))()).astype(np.float64)
    out = np.empty((p, 2), np.float64)
    with np.errstate(all="ignore"):
        out[:, 0] = x.mean(axis=1)
        out[:, 1] = x.var(axis=1)
        _writer(mem.view(dst_ap), (p, 2))(cast(out, dst_ap.dtype))


@pytest.mark.parametrize("src_dt", ["f32", "bf16", "fp8e4"])
@pytest.mark.parametrize("dst_dt", ["f32", "bf16"])
@pytest.mark.parametrize("nan_share", [0.0, 0.05])
def test_stats_match_mean_and_var_in_float64(src_dt, dst_dt, nan_share):
    seed = 0
    for src in (_rows(0, 128, 384, src_dt), _rows(0, 7, 1, src_dt), _sb(64, 32, ((40, 5), (1, 33)), src_dt),
                _rows(0, 16, 1000, src_dt)):
        seed += 1
        rng = np.random.default_rng(seed)
        # finite values of very different scales (a change of summation order shows), or random bits
        values = rng.standard_normal(src.num_elements) * np.exp2(rng.integers(-40, 40, src.num_elements))

        def scaled(mem: Memory, src=src, values=values) -> None:
            view = mem.view(src)
            view[...] = cast(values, src.dtype).reshape(view.shape)
        ins = Instr("dve", "stats", {"src": src, "dst": _rows(12000, src.pcount, 2, dst_dt)})
        _check_against_oracle(ins, _old_stats, seed, nan_share, scaled if nan_share == 0.0 else None)


# ---- transposes -----------------------------------------------------------------------------------------

def _old_transpose32(ins: Instr, mem: Memory) -> None:
    src_ap, dst_ap = ins.operands["src"], ins.operands["dst"]
    p, f = src_ap.shape[0], src_ap.num_elements // src_ap.shape[0]
    blocks = (p // 32, 32, f // 32, 32)
    read, store = _reader(mem.view(src_ap), blocks), _writer(mem.view(dst_ap), blocks)
    with np.errstate(all="ignore"):
        store(_converter(src_ap.dtype, dst_ap.dtype)(np.ascontiguousarray(read().transpose(0, 3, 2, 1))))


@pytest.mark.parametrize("dtype", ["f32", "bf16", "fp8e5", "i32"])
@pytest.mark.parametrize("p,f", [(128, 256), (128, 1536), (64, 3072), (128, 3072)])
def test_blockwise_transpose32_matches_the_previous_formula(dtype, p, f):
    """Large tiles go block by block (from 384 KiB), smaller ones through numpy's single copy."""
    size = {"f32": 4, "i32": 4, "bf16": 2, "fp8e5": 1}[dtype]
    src = _rows(0, p, f, dtype)
    seed = 0
    for dst in (src, _rows(size * f + 64, p, f, dtype), _rows(size * 32, p, f, dtype),
                _sb(8192, p, ((40, f // 32), (1, 32)), dtype)):  # blocks 40 elements apart
        seed += 1
        _check_against_oracle(Instr("dve", "transpose32", {"dst": dst, "src": src}), _old_transpose32, seed)


def _old_transpose(ins: Instr, mem: Memory) -> None:
    src_ap, dst_ap = ins.operands["src"], ins.operands["dst"]
    k, m = src_ap.shape[0], src_ap.num_elements // src_ap.shape[0]
    convert = _widener(src_ap.dtype) if dst_ap.dtype == "f32" else (lambda x: cast(x, "i32"))
    _writer(mem.view(dst_ap), (m, k))(np.ascontiguousarray(convert(_reader(mem.view(src_ap), (k, m))()).T))


@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "f32"), ("i8", "i32"), ("f16", "f32")])
def test_pe_transpose_single_copy_matches_the_previous_formula(src_dt, dst_dt):
    seed = 0
    for src, dst in ((_rows(0, 128, 128, src_dt), _rows(0, 128, 128, dst_dt, "psum")),
                     (_sb(0, 32, ((20, 4), (1, 16)), src_dt), _rows(4096, 64, 32, dst_dt, "psum")),
                     (_rows(0, 64, 64, src_dt), _sb(0, 64, ((80, 1), (1, 64)), dst_dt, "psum"))):
        seed += 1
        _check_against_oracle(Instr("pe", "transpose", {"dst": dst, "src": src}), _old_transpose, seed)


# ---- reduce max / min from an initial value -------------------------------------------------------------

def _old_reduce(ins: Instr, mem: Memory) -> None:
    src_ap, dst_ap = ins.operands["src"], ins.operands["dst"]
    src = mem.view(src_ap)
    axes = int(ins.attrs["axes"])
    fn = np.max if ins.attrs["op"] == "max" else np.min
    with np.errstate(all="ignore"):
        out = fn(_widener(src_ap.dtype)(src), axis=tuple(range(src.ndim - axes, src.ndim)))
        _writer(mem.view(dst_ap), out.shape)(cast(out, dst_ap.dtype))


def _zero_windows(mem: Memory, src: AP, seed: int) -> None:
    """Windows of zeros only, some holding both signs, some one sign; the rest negative or positive."""
    rng = np.random.default_rng(seed)
    view = mem.view(src)
    signs = np.where(rng.random(view.shape) < 0.5, np.float32(0.0), np.float32(-0.0))
    whole = rng.random(view.shape[:2]) < 0.5
    signs[whole] = np.float32(0.0)  # one sign in these (outer) windows
    view[...] = cast(signs, src.dtype).reshape(view.shape)


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "f32"), ("f32", "bf16")])
@pytest.mark.parametrize("data", ["random", "nan", "zeros"])
def test_reduce_extreme_from_initial_matches_np_max(op, src_dt, dst_dt, data):
    seed = 0
    for src, axes in ((_sb(0, 128, ((128, 12), (1, 128))), 1), (_sb(0, 16, ((100, 5), (1, 100))), 1),
                      (_sb(0, 8, ((300, 4), (30, 10), (1, 30))), 2), (_sb(0, 16, ((1, 4), (4, 80))), 1)):
        seed += 1
        src = AP(src.space, src.offset, src.dims, src_dt, src.pstart, src.pcount)
        outer = src.num_elements // src.pcount // int(np.prod([c for _, c in src.dims[len(src.dims) - axes:]]))
        ins = Instr("dve", "reduce", {"dst": _rows(20000, src.pcount, outer, dst_dt), "src": src},
                    {"op": op, "axes": axes})
        zeros = (lambda mem, src=src, seed=seed: _zero_windows(mem, src, seed)) if data == "zeros" else None
        _check_against_oracle(ins, _old_reduce, seed, 0.3 if data == "nan" else 0.0, zeros)
