"""The executors' one-pass paths (work arrays, ufuncs writing straight into dst, one strided copy)
leave every byte of memory exactly as the formulas they replaced do.

Each case fills HBM, SBUF and PSUM with random bytes (so operands hold NaNs with payloads, infinities,
subnormals and -0), runs the instruction's executor on one copy of memory and the previous formula
(composed from the same unchanged helpers: `_reader`, `_widener`, `_writer`, `_rounder`, `_FLOAT_ALU`)
on another, and requires all three memories to be equal byte for byte. Layouts cover contiguous,
gapped multi-dim, stride-0 (broadcast), inner-stride-larger-than-outer, HBM operands, count-1 dims
and destinations that overlap an operand (the ISA has no 0-count dims; 0-size work arrays are checked
directly).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from device_model.arch import load_arch
from device_model.engines import (
    _FLOAT_ALU,
    _INT_ALU,
    _converter,
    _is_int,
    _reader,
    _rounder,
    _view_reshape,
    _widener,
    _windowed_extreme,
    _writer,
    build_executor,
)
from device_model.isa import AP, Instr, attr
from device_model.memory import Memory
from device_model.workspace import work_array
from tests.device_model.memory_checks import assert_same_memory

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random bits: NaN and inf operands on purpose
ARCH = load_arch()
HBM_BYTES, SBUF_ROW, PSUM_ROW = 1 << 16, 10 << 10, 8 << 10
_CONTENTS: dict[int, tuple[np.ndarray, ...]] = {}
_MEMORIES: list[Memory] = []
FLOATS = ("f32", "bf16", "f16", "fp8e4", "fp8e5")
SIZE = {"f32": 4, "bf16": 2, "f16": 2, "fp8e4": 1, "fp8e5": 1, "i8": 1, "i32": 4}


def _memories(seed: int) -> tuple[Memory, Memory]:
    """Two memories with the same random contents (one for the executor, one for the oracle): four
    seeded contents (the layouts vary far more than the data needs to), written into the same two
    Memory objects each time (new ones would cost more than the instructions)."""
    if not _MEMORIES:
        _MEMORIES.extend(Memory(ARCH, HBM_BYTES, SBUF_ROW, PSUM_ROW) for _ in range(2))
    a, b = _MEMORIES
    if seed % 4 not in _CONTENTS:
        rng = np.random.default_rng(seed % 4)
        _CONTENTS[seed % 4] = tuple(rng.integers(0, 256, getattr(a, name).shape, dtype=np.uint8)
                                    for name in ("hbm", "sbuf", "psum"))
    for name, contents in zip(("hbm", "sbuf", "psum"), _CONTENTS[seed % 4]):
        getattr(a, name)[...] = contents
        getattr(b, name)[...] = contents
    return a, b


def _sb(off: int, parts: int, dims, dtype: str, pstart: int = 0, space: str = "sbuf") -> AP:
    return AP(space, off, tuple(dims), dtype, pstart, parts)


def _dense(*free: int) -> tuple[tuple[int, int], ...]:
    dims, stride = [], 1
    for c in reversed(free):
        dims.append((stride, c))
        stride *= c
    return tuple(reversed(dims))


def _check(ins: Instr, oracle, seed: int) -> None:
    new_mem, old_mem = _memories(seed)
    build_executor(ins, new_mem, ARCH)()
    oracle(ins, old_mem)
    assert_same_memory(new_mem, old_mem, str(ins))


# ---- the previous formulas -------------------------------------------------------------------------

def _old_matmul(ins: Instr, mem: Memory) -> None:
    stat_ap, mov_ap = ins.operands["stat"], ins.operands["mov"]
    k, m = stat_ap.shape[0], stat_ap.num_elements // stat_ap.shape[0]
    n = mov_ap.num_elements // k
    read_stat, read_mov = _reader(mem.view(stat_ap), (k, m)), _reader(mem.view(mov_ap), (k, n))
    widen_stat, widen_mov = _widener(stat_ap.dtype), _widener(mov_ap.dtype)
    dst = mem.view(ins.operands["dst"])
    product = np.matmul(widen_stat(read_stat()).T, widen_mov(read_mov()))
    dst2d = _view_reshape(dst, (m, n))
    if dst2d is None:
        dst[...] = product.reshape(dst.shape) if attr(ins, "start") == 1 else dst + product.reshape(dst.shape)
    elif attr(ins, "start") == 1:
        np.matmul(widen_stat(read_stat()).T, widen_mov(read_mov()), out=dst2d)
    else:
        np.add(dst2d, product, out=dst2d)


def _old_alu(ins: Instr, mem: Memory, compute) -> None:
    dst_ap = ins.operands["dst"]
    dst = mem.view(dst_ap)
    with np.errstate(all="ignore"):
        _writer(dst, dst.shape)(_rounder(dst_ap.dtype)(compute(dst.shape)))


def _old_tensor_tensor(ins: Instr, mem: Memory) -> None:
    a_ap, b_ap = ins.operands["a"], ins.operands["b"]

    def compute(shape):
        a, b = _reader(mem.view(a_ap), shape)(), _reader(mem.view(b_ap), shape)()
        return _FLOAT_ALU[attr(ins, "op")](_widener(a_ap.dtype)(a), _widener(b_ap.dtype)(b), np.float32)
    _old_alu(ins, mem, compute)


def _old_tensor_scalar(ins: Instr, mem: Memory) -> None:
    src_ap = ins.operands["src"]

    def compute(shape):
        t = _widener(src_ap.dtype)(_reader(mem.view(src_ap), shape)())
        for k in (0, 1):
            op = attr(ins, f"op{k}")
            if op == "bypass":
                continue
            ap = ins.operands.get(f"s{k}_ap")
            if ap is not None:
                s = _widener(ap.dtype)(mem.view(ap).reshape((shape[0],) + (1,) * (len(shape) - 1)))
            else:
                with np.errstate(over="ignore"):
                    s = np.float32(attr(ins, f"s{k}"))
            fn = _FLOAT_ALU[op]
            t = fn(s, t, np.float32) if attr(ins, f"rev{k}") == 1 else fn(t, s, np.float32)
        return t
    _old_alu(ins, mem, compute)


def _old_transpose32(ins: Instr, mem: Memory) -> None:
    src_ap, dst_ap = ins.operands["src"], ins.operands["dst"]
    p, f = src_ap.shape[0], src_ap.num_elements // src_ap.shape[0]
    blocks = (p // 32, 32, f // 32, 32)
    read, store = _reader(mem.view(src_ap), blocks), _writer(mem.view(dst_ap), blocks)
    store(_converter(src_ap.dtype, dst_ap.dtype)(np.ascontiguousarray(read().transpose(0, 3, 2, 1))))


# ---- matmul ------------------------------------------------------------------------------------------

def _operand_layouts(k: int, count: int, dtype: str, base: int):
    """Patterns with `k` partitions and `count` free elements: dense, gapped 2-D, inner stride larger
    than the outer one, and a stride-0 column (when count allows)."""
    out = [_sb(base, k, _dense(count), dtype)]
    for rows in (7, 4):
        if count % rows == 0 and count > rows:
            cols = count // rows
            out.append(_sb(base, k, ((cols + 2, rows), (1, cols)), dtype))  # a conv-style window
            out.append(_sb(base, k, ((1, rows), (rows + 1, cols)), dtype))  # column-major-ish
            out.append(_sb(base, k, ((0, rows), (1, cols)), dtype))  # rows repeat (stride 0)
    return out


MATMUL_DTYPES = [("f32", "f32"), ("bf16", "bf16"), ("f16", "fp8e4"), ("fp8e5", "bf16"), ("bf16", "f32")]


@pytest.mark.parametrize("stat_dt,mov_dt", MATMUL_DTYPES)
@pytest.mark.parametrize("k,m,n", [(128, 128, 28), (7, 5, 49), (1, 1, 1), (32, 128, 12)])
def test_matmul_paths_match_the_previous_formula(stat_dt, mov_dt, k, m, n):
    seed = 0
    for stat, mov in itertools.product(_operand_layouts(k, m, stat_dt, 64),
                                       _operand_layouts(k, n, mov_dt, 8192)):
        gapped = ((9, n // 7), (1, 7)) if n % 7 == 0 else ((n + 3, 1), (1, n))  # not [M,N] when n % 7 == 0
        for dst in (_sb(0, m, _dense(n), "f32", space="psum"), _sb(1024, m, gapped, "f32", space="psum")):
            for start in (0, 1):
                seed += 1
                _check(Instr("pe", "matmul", {"dst": dst, "stat": stat, "mov": mov}, {"start": start}),
                       _old_matmul, seed)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_matmul_with_one_operand_as_both_stat_and_mov(dtype):
    """stat is mov (numpy may take a symmetric BLAS routine for a view times its own transpose)."""
    for i, ap in enumerate(_operand_layouts(64, 64, dtype, 256)):
        for start in (0, 1):
            ins = Instr("pe", "matmul", {"dst": _sb(0, 64, _dense(64), "f32", space="psum"), "stat": ap, "mov": ap},
                        {"start": start})
            _check(ins, _old_matmul, 100 + 2 * i + start)


def test_matmul_operands_in_hbm_with_a_column_major_layout():
    stat = AP("hbm", 4096, ((1, 16), (16, 24)), "bf16")  # [K=16, M=24], inner stride > outer
    mov = AP("hbm", 32768, ((40, 16), (1, 33)), "bf16")
    for start in (0, 1):
        ins = Instr("pe", "matmul", {"dst": _sb(0, 24, _dense(33), "f32", space="psum"), "stat": stat, "mov": mov},
                    {"start": start})
        _check(ins, _old_matmul, 7 + start)


def test_executors_sharing_work_arrays_do_not_disturb_each_other():
    """Two matmuls of different shapes built on one memory, then run interleaved: each result is what
    it is when run alone."""
    new_mem, old_mem = _memories(3)
    a = Instr("pe", "matmul", {"dst": _sb(0, 16, _dense(40), "f32", space="psum"),
                               "stat": _sb(0, 8, _dense(16), "bf16"), "mov": _sb(512, 8, _dense(40), "bf16")},
              {"start": 0})
    b = Instr("pe", "matmul", {"dst": _sb(4096, 128, _dense(300), "f32", space="psum"),
                               "stat": _sb(2048, 64, _dense(128), "bf16"), "mov": _sb(8192, 64, _dense(300), "bf16")},
              {"start": 0})
    run_a, run_b = build_executor(a, new_mem, ARCH), build_executor(b, new_mem, ARCH)
    for fn, ins in ((run_a, a), (run_b, b), (run_a, a), (run_b, b)):
        fn()
        _old_matmul(ins, old_mem)
    assert_same_memory(new_mem, old_mem, "interleaved matmuls")


# ---- tensor_tensor / tensor_scalar ---------------------------------------------------------------------

ALU_DTYPES = [("f32", "f32", "f32"), ("bf16", "f32", "bf16"), ("f16", "bf16", "f32"), ("fp8e4", "f32", "fp8e5"),
              ("f32", "i32", "f32"), ("i8", "bf16", "i32"), ("f32", "f32", "f16")]


def _alu_layouts(dtype: str, base: int, p: int = 16, rows: int = 3, cols: int = 10):
    return [_sb(base, p, _dense(rows, cols), dtype),
            _sb(base, p, ((cols + 5, rows), (1, cols)), dtype),
            _sb(base, p, ((1, rows), (0, cols)), dtype),  # each row one value: a broadcast column
            AP("hbm", base * 4, ((rows * cols * 2, p), (cols, rows), (1, cols)), dtype)]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "max", "min", "pow", "mod", "gt", "and"])
@pytest.mark.parametrize("a_dt,b_dt,dst_dt", ALU_DTYPES)
def test_tensor_tensor_paths_match_the_previous_formula(op, a_dt, b_dt, dst_dt):
    if _is_int(a_dt) and _is_int(b_dt) and _is_int(dst_dt):
        pytest.skip("the integer path is unchanged")
    seed = 1000
    for a, b in itertools.product(_alu_layouts(a_dt, 0), _alu_layouts(b_dt, 2048)):
        for dst in (_sb(8192, 16, ((12, 3), (1, 10)), dst_dt), a if a.space == "sbuf" else b):
            if dst.dtype != dst_dt:
                dst = _sb(8192, 16, _dense(3, 10), dst_dt)
            if any(s == 0 for s, _ in dst.dims):
                continue  # a destination never repeats elements
            seed += 1
            _check(Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op}), _old_tensor_tensor, seed)


def test_tensor_tensor_writes_over_a_shifted_overlapping_operand():
    """dst starts 8 bytes after a in the same partitions: numpy must compute as if a were read first."""
    for dtype in ("f32", "bf16"):
        a = _sb(100, 16, _dense(40), dtype)
        dst = _sb(108, 16, _dense(40), dtype)
        for i, b in enumerate((_sb(4000, 16, _dense(40), "f32"), _sb(92, 16, _dense(40), dtype))):
            _check(Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": "sub"}),
                   _old_tensor_tensor, 50 + i)


SCALAR_STAGES = [
    {"op0": "add", "op1": "max", "s1": 0.0},
    {"op0": "mul", "s0": 1e38, "op1": "add", "s1": -3.5},
    {"op0": "sub", "s0": 2.0, "rev0": 1, "op1": "div", "s1": 3.0, "rev1": 1},
    {"op0": "pow", "s0": 0.5, "op1": "bypass"},
    {"op0": "bypass", "op1": "mod", "s1": 1.5},
    {"op0": "bypass", "op1": "bypass"},
    {"op0": "min", "s0": 1e40, "op1": "lt", "s1": 0.25},  # a compare: the previous path
]


@pytest.mark.parametrize("stages", SCALAR_STAGES)
@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "bf16"), ("f32", "fp8e4"), ("fp8e5", "f16"),
                                           ("i32", "f32"), ("f32", "i8")])
def test_tensor_scalar_paths_match_the_previous_formula(stages, src_dt, dst_dt):
    seed = 2000
    for src in _alu_layouts(src_dt, 0):
        for scalar_aps in ({}, {"s0_ap": _sb(6000, 16, _dense(1), "f32")},
                           {"s0_ap": _sb(6000, 16, _dense(1), "bf16"), "s1_ap": _sb(6100, 16, _dense(1), "f32")}):
            for dst in (_sb(8192, 16, _dense(30), dst_dt), src if src.dtype == dst_dt else None):
                if dst is None or any(s == 0 for s, _ in dst.dims):
                    continue
                seed += 1
                ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src, **scalar_aps}, dict(stages))
                _check(ins, _old_tensor_scalar, seed)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_tensor_scalar_second_stage_scalar_inside_dst_is_read_before_dst_is_written(dtype):
    """s1_ap is the first element of each dst row: the second stage must see its value from before
    the instruction, as the previous formula did (it wrote dst only at the end)."""
    dst = _sb(512, 16, _dense(30), dtype)
    for i, s1 in enumerate((_sb(512, 16, _dense(1), dtype), _sb(512 + 29 * (2 if dtype == "bf16" else 4), 16,
                                                                  _dense(1), dtype))):
        ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": _sb(0, 16, _dense(30), "f32"), "s1_ap": s1},
                    {"op0": "mul", "s0": 3.0, "op1": "sub", "rev1": i})
        _check(ins, _old_tensor_scalar, 70 + i)


# ---- transpose32 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("src_dt,dst_dt", [("f32", "f32"), ("bf16", "bf16"), ("fp8e4", "fp8e4"), ("i8", "i8"),
                                           ("i32", "i32"), ("f32", "bf16"), ("bf16", "f32"), ("f16", "f32"),
                                           ("f32", "fp8e4"), ("f32", "i32")])
@pytest.mark.parametrize("p,f", [(32, 32), (64, 96), (128, 128)])
def test_transpose32_matches_the_previous_formula(src_dt, dst_dt, p, f):
    src_layouts = [_sb(0, p, _dense(f), src_dt), _sb(0, p, ((f + 32, f // 32), (1, 32)), src_dt),
                   _sb(0, p, ((1, 32), (33, f // 32)), src_dt)]  # blocks cannot be seen: the general path
    seed = 3000
    for src in src_layouts:
        dsts = [_sb(4096, p, _dense(f), dst_dt), _sb(4096, p, ((f // 32 * 40, 1), (40, f // 32), (1, 32)), dst_dt)]
        if src_dt == dst_dt:
            dsts.append(src)  # in place
            dsts.append(_sb(SIZE[src_dt] * 8, p, _dense(f), dst_dt))  # overlapping, shifted
        for dst in dsts:
            seed += 1
            _check(Instr("dve", "transpose32", {"dst": dst, "src": src}), _old_transpose32, seed)


# ---- the work arrays themselves --------------------------------------------------------------------------

def test_work_arrays_are_per_owner_and_role_and_grow():
    owner_a, owner_b = Memory(ARCH, 64, 64, 64), Memory(ARCH, 64, 64, 64)
    x = work_array(owner_a, "stat", (4, 8), np.float32)
    y = work_array(owner_a, "mov", (4, 8), np.float32)
    z = work_array(owner_b, "stat", (4, 8), np.float32)
    assert x.flags.c_contiguous and x.shape == (4, 8) and x.dtype == np.float32
    assert not np.shares_memory(x, y) and not np.shares_memory(x, z)
    assert np.shares_memory(work_array(owner_a, "stat", (2, 3), np.uint16), x)  # same role: shared
    big = work_array(owner_a, "stat", (64, 64), np.float32)  # larger: a new buffer; x stays valid
    assert big.shape == (64, 64) and not np.shares_memory(big, x)
    x[...] = 1.0
    assert (x == 1.0).all()
    empty = work_array(owner_a, "dst", (0, 5), np.float32)
    assert empty.shape == (0, 5) and empty.size == 0
    assert work_array(owner_a, "dst", (3,), np.float64).ctypes.data % 64 == 0


def test_integer_alu_table_is_unchanged_for_arithmetic():
    """The float table now comes from the ufunc table; the integer one still overrides div/mod/pow."""
    a, b = np.array([7, -7, 9], np.int64), np.array([2, 2, -4], np.int64)
    assert _INT_ALU["div"](a, b, np.int64).tolist() == [3, -3, -2]
    assert _INT_ALU["add"](a, b, np.int64).tolist() == [9, -5, 5]
    assert _FLOAT_ALU["sub"](np.float32(1), np.float32(3), np.float32) == np.float32(-2)


# ---- pooling max/min: windows whose extreme is a zero ---------------------------------------------------

@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("zero_windows", [0, 3, 40, 2000])
def test_windowed_extreme_zero_windows_few_or_many(op, zero_windows):
    """A few zero-extreme windows are checked by index, many by whole-array passes: with +0 and -0
    in one such window the result is left to np.max / np.min (None), otherwise it equals them."""
    rng = np.random.default_rng(zero_windows)
    sign = 1.0 if op == "max" else -1.0
    ref_fn = np.max if op == "max" else np.min
    fast = _windowed_extreme(op, 2, (16, 32, 8, 3, 3))
    for mixed in (False, True):
        x = (sign * (rng.random((16, 32, 8, 3, 3)) + 0.5)).astype(np.float32)
        flat = x.reshape(-1, 9)
        picks = rng.choice(flat.shape[0], zero_windows, replace=False)
        flat[picks] = -sign * (rng.random((zero_windows, 9)) + 0.1).astype(np.float32)  # extreme is the zero below
        flat[picks, rng.integers(0, 9, zero_windows)] = 0.0
        if mixed and zero_windows:
            w = picks[zero_windows // 2]
            flat[w] = np.float32(0.0)
            flat[w, 4] = np.float32(-0.0)
        else:
            flat[picks, 8] = np.float32(-0.0) if zero_windows % 2 else np.float32(0.0)  # one sign per window
            flat[picks, :8] = np.where(flat[picks, :8] == 0, flat[picks, 8:9], flat[picks, :8])
        got = fast(x)
        ref = ref_fn(x, axis=(3, 4))
        if mixed and zero_windows:
            assert got is None
        else:
            assert got is not None and got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()
