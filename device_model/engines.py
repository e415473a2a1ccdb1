"""Functional semantics of every opcode in `isa.OPCODES`.

`build_executor(ins, mem, arch)` turns one instruction into a zero-argument closure that applies its
effect to `mem`. All parsing, shape checks and numpy views are done once, at build time; the closure
only moves and computes data. Memory buffers are never reallocated, so the views stay valid.

A problem the instruction carries by itself (mismatched shapes, a K the PE cannot hold, an access
pattern outside memory, ...) does not raise at build time: the closure raises `ExecError` when the
program reaches the instruction. Data-dependent problems (a gather index out of range, an integer
division by zero) raise at execution too.

Datapath: engines widen operands to f32 (`numerics.to_f32`), compute in f32 (one IEEE rounding per
operation) and round once when writing dst (`numerics.cast`). Exceptions, all exact:
- data movement (dma_copy, copy, gather, pbroadcast, transpose32, same-dtype select) casts straight
  from the source dtype; same dtype is a bit-exact copy (NaN payloads kept);
- integer ALU work (every tensor operand and dst integer) runs in int64 and saturates at the write;
  int64 overflow itself wraps;
- int8 matmul accumulates exactly and wraps to int32 (two's complement) like the PSUM adder;
- stats and iota compute in float64 (then round once).
Widening of f32/bf16/f16/fp8 is exact, so it is done here without numerics' defensive copy (fp8 and
f16 through a per-bit-pattern table built from numerics.to_f32; bf16 operands of matmul and the ALU
as the high halves of a zeroed f32 work array; i8/u8/i16/i32 by numpy's cast, which rounds once to
nearest even like to_f32; wider integers go through to_f32). The rounding at the write takes numpy's
own cast or a plain astype where that provably equals numerics.cast (see _rounder).
ALU conventions: `div` on integers truncates toward zero, `mod` is C fmod (sign of the dividend, as
np.fmod and ONNX Mod fmod=1) for floats and integers; integer div/mod by zero is an ExecError;
integer `pow` is the truncated real power, saturated; compares and logical ops give 1/0; `bypass`
gives its tensor operand (in tensor_scalar a bypass stage is skipped, whatever revK says).
tensor_scalar takes the integer path only when its scalars are integral too (else f32).
Float `reduce`/`preduce` sums and the activate `accum` sum are f32 (numpy's summation order; small
reduce windows go through window_sum, which reproduces that order elementwise).
activate applies scale only when it is not 1 and bias only when it is not 0 (or given per partition).
iota's p counts from the pattern's first partition (0-based), i over the flattened free dims.
Operand shapes: operands of elementwise ops need equal (rows, flattened free size); they are read in
C order in dst's shape, so free dims may be laid out differently.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .arch import Arch
from .blas_gemm import gemm_call
from .dtypes import FLOAT_DTYPES, INT_DTYPES, np_dtype
from .errors import XpuError
from .isa import ALU_OPS, AP, MATMUL_TYPES, Instr, attr, engine_kind
from .memory import Memory
from .narrow import column_calls
from .numerics import activation_function, cast, one_pass_function, to_f32
from .tile_alu import binary_tile, stages_tile
from .unbuffered import NAN_PAIR_SENSITIVE, ORDER_FREE, may_overlap, quiet_unbuffered
from .window_sum import WindowSum
from .workspace import work_array

Executor = Callable[[], None]


class ExecError(XpuError, RuntimeError):
    """An instruction that cannot execute: bad operands for its opcode, or bad data at run time."""


class _Static(Exception):
    """Raised while building: the instruction is wrong whatever the data (reported on execution)."""


def build_executor(ins: Instr, mem: Memory, arch: Arch) -> Executor:
    """A closure performing `ins` on `mem` (see the module docstring for the error policy)."""
    builder = _BUILDERS.get(ins.op)
    if builder is None:
        return _failing(f"{ins.op}: no functional semantics on the device "
                        "(host_call runs through the machine's host runner)")
    try:
        return builder(_Ctx(ins, mem, arch))
    except _Static as exc:
        return _failing(str(exc))


def instr_flops(ins: Instr) -> int:
    """Arithmetic work for the profiler: 2·K·M·N for matmul, one per dst element on ACT/DVE/POOL,
    0 for data movement on PE (transpose), DMA, host and nop."""
    if ins.op == "matmul":
        stat, mov = ins.operands["stat"], ins.operands["mov"]
        k = stat.shape[0]
        return 2 * stat.num_elements * mov.num_elements // k  # 2 · (K·M) · (K·N) / K
    if ins.op == "nop" or engine_kind(ins.engine) in ("pe", "dma", "host"):
        return 0
    dst = ins.operands.get("dst")
    return dst.num_elements if dst is not None else 0


def instr_bytes(ins: Instr) -> int:
    """Bytes a DMA moves (its dst); 0 for everything else."""
    if ins.op == "dma_copy":
        return ins.operands["dst"].nbytes
    return 0


# ---- helpers -------------------------------------------------------------------------------------

def _quiet(fn: Executor) -> Executor:
    """`fn` with numpy's floating-point warnings off: NaN, inf and overflow are results the device
    gives, not errors. As a decorator np.errstate costs about half of a `with` block per call (a few
    µs on a small instruction); one instance per executor (numpy 1.x keeps its state on it). A caller
    that runs many executors inside one np.errstate(all="ignore") calls `bare_executor` of each."""
    quiet = np.errstate(all="ignore")(fn)
    quiet._xpu_bare = fn
    return quiet


def bare_executor(fn: Executor) -> Executor:
    """`fn` without the floating-point error state it sets itself, for a caller that already runs it
    inside np.errstate(all="ignore") (the same effects; ~0.5 µs less per call). Any other callable
    is returned as it is."""
    return getattr(fn, "_xpu_bare", fn)


def _failing(message: str) -> Executor:
    def fail():
        raise ExecError(message)
    return fail


def _fmt(ap: AP) -> str:
    return str(ap)  # the assembly spelling


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def _view_reshape(view: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`view` seen with `shape` without copying, or None when its strides do not allow it."""
    if view.shape == shape:
        return view
    try:
        return np.reshape(view, shape, copy=False)
    except ValueError:
        return None
    except TypeError:  # numpy < 2.1 has no copy=
        out = view.view()
        try:
            out.shape = shape
        except AttributeError:
            return None
        return out


def _reader(view: np.ndarray, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """A function returning the elements of `view` in `shape` (C order)."""
    shaped = _view_reshape(view, shape)
    if shaped is not None:
        return lambda: shaped
    return lambda: view.reshape(shape)  # strides that cannot be re-seen: copy on each read


def _writer(view: np.ndarray, shape: tuple[int, ...]) -> Callable[[np.ndarray], None]:
    """A function storing an array of `shape` (already of the view's dtype) into `view`."""
    shaped = _view_reshape(view, shape)
    if shaped is not None:
        return lambda value: np.copyto(shaped, value)
    return lambda value: np.copyto(view, np.reshape(value, view.shape))


def _raw(view: np.ndarray) -> np.ndarray:
    """The same elements as unsigned integers of the same width (bit-exact copies)."""
    return view.view(np.dtype(f"u{view.dtype.itemsize}"))


def _bits_table(dtype: str) -> np.ndarray:
    """f32 value of every bit pattern of a narrow float dtype (widening by table lookup is exact
    and several times faster than numpy's casts for fp8 and f16)."""
    size = np_dtype(dtype).itemsize
    patterns = np.arange(1 << (8 * size), dtype=f"u{size}")
    return to_f32(patterns.view(np_dtype(dtype)))


_TABLE_WIDENED = ("f16", "fp8e4", "fp8e5")
_WIDENED_BY_ASTYPE = ("i8", "u8", "i16", "i32")
_WIDEN_TABLES: dict[str, np.ndarray] = {}


def _widen_table(dtype: str) -> tuple[np.ndarray, np.dtype]:
    """(f32 value of every bit pattern, the unsigned dtype that indexes it) for a table-widened dtype."""
    if dtype not in _WIDEN_TABLES:
        _WIDEN_TABLES[dtype] = _bits_table(dtype)
    return _WIDEN_TABLES[dtype], np.dtype(f"u{np_dtype(dtype).itemsize}")


def _widener(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """Exact widening to the f32 datapath, equal to numerics.to_f32 but without its copy: the
    result may be the input itself (f32), so callers never write into it."""
    if dtype == "f32":
        return lambda x: x
    if dtype == "bf16":  # bf16 is the top half of an f32: a shift (ml_dtypes' cast is ~2x slower)
        return lambda x: np.left_shift(x.view(np.uint16), 16, dtype=np.uint32).view(np.float32)
    if dtype in _TABLE_WIDENED:
        table, raw = _widen_table(dtype)
        return lambda x: np.take(table, x.view(raw), mode="wrap")  # every index is in range
    if dtype in _WIDENED_BY_ASTYPE:  # numpy's int -> f32 cast rounds to nearest even once, as to_f32 does
        return lambda x: x.astype(np.float32)
    return to_f32  # wider integers: numerics rounds values beyond 2^53 correctly


def _widen_into(dtype: str) -> Callable[[np.ndarray, np.ndarray], None]:
    """fill(x, out): `out` (f32, x's shape) = x widened exactly as `_widener(dtype)` widens it."""
    if dtype == "f32":
        return lambda x, out: np.copyto(out, x)
    if dtype == "bf16":
        return lambda x, out: np.left_shift(x.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
    if dtype in _TABLE_WIDENED:
        table, raw = _widen_table(dtype)
        return lambda x, out: np.take(table, x.view(raw), mode="wrap", out=out)
    if dtype in _WIDENED_BY_ASTYPE:  # the cast _widener's astype makes, into out
        return lambda x, out: np.copyto(out, x, casting="same_kind")
    return lambda x, out: np.copyto(out, to_f32(x))


def _f32_operand(c: _Ctx, name: str, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """A function giving operand `name` on the f32 datapath in `shape` (C order), equal to
    `_widener(dtype)(_reader(view, shape)())` in values and in memory layout (so a BLAS call sees
    the same matrices): memory itself for f32 that can be seen in `shape`, else a work array (shared,
    see workspace) refilled on each call instead of one or two fresh temporaries."""
    dtype, view = c.ap(name).dtype, c.view(name)
    shaped = _view_reshape(view, shape)
    if dtype == "f32" and shaped is not None:
        return _constant(shaped)
    if dtype == "bf16" and shaped is not None and not np.empty_like(shaped, np.float32).flags.c_contiguous:
        # a widened bf16 keeps the view's own axis order (numpy's order="K"): keep that layout too
        widen, read = _widener(dtype), _reader(view, shape)
        return lambda: widen(read())
    if dtype == "bf16":
        return _bf16_high_halves(c, name, view, shape)
    work = work_array(c.mem, name, view.shape, np.float32)
    out = work.reshape(shape)  # C-contiguous, so always a view
    fill = _widen_into(dtype)

    def widened() -> np.ndarray:
        fill(view, work)
        return out
    return widened


def _bf16_high_halves(c: _Ctx, name: str, view: np.ndarray, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """bf16 widened by storing its bits as the high halves of an f32 work array whose low halves are
    zero: one 16-bit copy instead of a shift into 32 bits (about half the cost on small operands).
    The array has a role of its own that only these copies write, always at the high half of an
    element, so low halves zeroed when an executor is built stay zero whatever other shapes share it."""
    work = work_array(c.mem, f"{name}:bf16", view.shape, np.float32)
    work[...] = 0
    high = work.view(np.uint16)[..., 1::2] if _LITTLE_ENDIAN else work.view(np.uint16)[..., 0::2]
    bits, out = view.view(np.uint16), work.reshape(shape)
    copyto = np.copyto

    def widened() -> np.ndarray:
        copyto(high, bits)
        return out
    return widened


_LITTLE_ENDIAN = np.little_endian


def _rounder(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """The single rounding at the write of dst (numerics.cast, skipped when already f32 -> f32).
    Shortcuts with cast's bits: from f32 numpy's own cast to bf16/f16 (as in _IEEE_CASTS), and to an
    integer dtype np.rint in f32 (exact, like cast's rint in float64); from int64 (the integer ALU)
    a plain astype. The integer ones only when every value lies in the dtype's range (so nothing
    saturates and no NaN becomes 0); anything else goes through cast."""
    if dtype == "f32":
        return lambda v: v if v.dtype == np.float32 else cast(v, "f32")
    target = np_dtype(dtype)
    if ("f32", dtype) in _IEEE_CASTS:
        return lambda v: v.astype(target) if v.dtype == np.float32 else cast(v, dtype)
    if dtype in _F32_ROUNDS_IN_RANGE:
        info = np.iinfo(target)
        lo, hi = int(info.min), int(info.max)  # compared as Python numbers: exact

        def round_int(v: np.ndarray) -> np.ndarray:
            if v.dtype == np.float32 and v.size:
                r = np.rint(v)
                if lo <= float(r.min()) and float(r.max()) <= hi:  # NaN fails both
                    return r.astype(target)
            elif v.dtype == np.int64 and v.size and lo <= int(v.min()) and int(v.max()) <= hi:
                return v.astype(target)
            return cast(v, dtype)
        return round_int
    return lambda v: cast(v, dtype)


_F32_ROUNDS_IN_RANGE = ("i8", "u8", "i16", "i32")  # integer dtypes an f32 rounds into exactly by astype


def _converter(src: str, dst: str) -> Callable[[np.ndarray], np.ndarray]:
    """Data-movement conversion: identity for the same dtype, else the device cast (to f32 as the
    datapath widens, to anything else with _rounder's shortcuts)."""
    if src == dst:
        return lambda x: x
    if dst == "f32":
        return _widener(src)
    return _rounder(dst)


def _f32_scalar(value) -> np.float32:
    """An immediate operand as the f32 the datapath holds (overflow gives inf, like the cast)."""
    with np.errstate(over="ignore"):
        return np.float32(value)


def _scalar_is_int(value) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                      and abs(value) < 2.0**63)


class _Ctx:
    """Build-time access to one instruction's operands, with errors naming the opcode."""

    def __init__(self, ins: Instr, mem: Memory, arch: Arch):
        self.ins, self.mem, self.arch = ins, mem, arch
        self.op = ins.op

    def has(self, name: str) -> bool:
        return name in self.ins.operands

    def ap(self, name: str) -> AP:
        ap = self.ins.operands.get(name)
        if ap is None:
            raise _Static(f"{self.op}: missing operand {name}")
        return ap

    def view(self, name: str) -> np.ndarray:
        ap = self.ap(name)
        try:
            np_dtype(ap.dtype)
        except ValueError as exc:
            raise _Static(f"{self.op}: operand {name}: {exc}") from None
        why = self.mem.check(ap)
        if why:
            raise _Static(f"{self.op}: operand {name} out of bounds: {_fmt(ap)} {why}")
        return self.mem.view(ap)

    def attr(self, name: str):
        return attr(self.ins, name)

    def fail(self, message: str) -> _Static:
        return _Static(f"{self.op}: {message}")

    def rows_free(self, name: str) -> tuple[int, int]:
        """(rows, flattened free size): rows = partitions (or the outermost hbm dim)."""
        shape = self.ap(name).shape
        return shape[0], _prod(shape[1:])

    def same_rows_and_free(self, name: str, ref: str) -> None:
        r, f = self.rows_free(name)
        rr, rf = self.rows_free(ref)
        if (r, f) != (rr, rf):
            raise self.fail(f"operand {name} {_fmt(self.ap(name))} has {r} rows x {f} free elements, "
                            f"expected {rr} x {rf} like {ref}")

    def per_partition(self, name: str, rows: int, ndim: int) -> np.ndarray:
        """A [P,1] operand seen as (P, 1, ..., 1) to broadcast along `ndim - 1` free dims."""
        r, f = self.rows_free(name)
        if r != rows or f != 1:
            raise self.fail(f"operand {name} {_fmt(self.ap(name))} must be [{rows},1] "
                            f"(one value per partition), got {r} rows x {f} free elements")
        view = self.view(name)
        shaped = _view_reshape(view, (rows,) + (1,) * (ndim - 1))
        assert shaped is not None  # adding unit dims is always a view
        return shaped


# ---- DMA / copies ----------------------------------------------------------------------------------

def _build_copy(c: _Ctx) -> Executor:
    """dma_copy and copy: dst = cast(src) element by element in C order."""
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    if src_ap.num_elements != dst_ap.num_elements:
        raise c.fail(f"src {_fmt(src_ap)} has {src_ap.num_elements} elements, dst {_fmt(dst_ap)} "
                     f"has {dst_ap.num_elements}; they must match")
    src, dst = c.view("src"), c.view("dst")
    if src_ap.dtype == dst_ap.dtype:
        raw_src, raw_dst = _raw(src), _raw(dst)
        if _view_reshape(raw_src, dst.shape) is None:
            dst_as_src = _view_reshape(raw_dst, src.shape)
            if dst_as_src is not None:  # one pass instead of a gathering copy and then a store
                return lambda: np.copyto(dst_as_src, raw_src)
        read = _reader(raw_src, dst.shape)
        return lambda: np.copyto(raw_dst, read())
    if (src_ap.dtype, dst_ap.dtype) in _IEEE_CASTS:
        # numpy's own cast is the device's here (nearest-even, overflow to inf, NaN kept): one pass
        dst_shaped = _view_reshape(dst, src.shape)
        if dst_shaped is not None:
            return lambda: np.copyto(dst_shaped, src, casting="unsafe")
        src_shaped = _view_reshape(src, dst.shape)
        if src_shaped is not None:
            return lambda: np.copyto(dst, src_shaped, casting="unsafe")
    read, store = _reader(src, src.shape), _writer(dst, src.shape)
    convert = _converter(src_ap.dtype, dst_ap.dtype)
    return lambda: store(convert(read()))


_IEEE_CASTS = {("f32", "bf16"), ("f32", "f16"), ("bf16", "f32"), ("f16", "f32")}
def _build_memset(c: _Ctx) -> Executor:
    dst_ap = c.ap("dst")
    dst = c.view("dst")
    value = c.attr("value")
    if _is_int(dst_ap.dtype) and _scalar_is_int(value):
        const = cast(np.array(int(value), np.int64), dst_ap.dtype)
    else:
        const = cast(np.array(value, np.float64), dst_ap.dtype)
    const = np.asarray(const, dtype=dst.dtype).reshape(())
    # the value's bit pattern stored through an unsigned view: the same bytes as `dst[...] = const`,
    # without numpy's per-call cast set-up (~10x faster on a small bf16 tile)
    raw, bits = _raw(dst), int(_raw(const.reshape(1))[0])
    return lambda: raw.fill(bits)


def _build_iota(c: _Ctx) -> Executor:
    dst_ap = c.ap("dst")
    dst = c.view("dst")
    base, pstep, step = c.attr("base"), c.attr("pstep"), c.attr("step")
    rows, free = (dst_ap.pcount, dst_ap.free_size) if dst_ap.partitioned else (1, dst_ap.num_elements)
    exact_int = _is_int(dst_ap.dtype) and all(_scalar_is_int(v) for v in (base, pstep, step))
    wide = np.int64 if exact_int else np.float64
    conv = int if exact_int else float
    p = np.arange(rows, dtype=wide)[:, None]
    i = np.arange(free, dtype=wide)[None, :]
    values = wide(conv(base)) + p * wide(conv(pstep)) + i * wide(conv(step))
    const = np.ascontiguousarray(cast(values, dst_ap.dtype)).reshape(dst.shape)
    return lambda: np.copyto(dst, const)


# ---- PE ------------------------------------------------------------------------------------------

def _build_matmul(c: _Ctx) -> Executor:
    pe = c.arch.raw["pe"]
    stat_ap, mov_ap, dst_ap = c.ap("stat"), c.ap("mov"), c.ap("dst")
    k, m = c.rows_free("stat")
    k2, n = c.rows_free("mov")
    dm, dn = c.rows_free("dst")
    for name, ap in (("stat", stat_ap), ("mov", mov_ap)):
        if ap.dtype not in MATMUL_TYPES:
            raise c.fail(f"operand {name} {_fmt(ap)} has dtype {ap.dtype}; the PE takes "
                         f"{', '.join(MATMUL_TYPES)}")
    ints = [ap.dtype == "i8" for ap in (stat_ap, mov_ap)]
    if any(ints) and not all(ints):
        raise c.fail(f"cannot mix float and int matmul: stat is {stat_ap.dtype}, mov is {mov_ap.dtype} "
                     "(int8 matmul needs both inputs i8)")
    integer = all(ints)
    want_dst = "i32" if integer else "f32"
    if dst_ap.dtype != want_dst:
        raise c.fail(f"dst {_fmt(dst_ap)} has dtype {dst_ap.dtype}; "
                     + ("int8 matmul accumulates into i32" if integer
                        else "float matmul accumulates into f32 (dst must be f32 or, for i8 inputs, i32)"))
    if k != k2:
        raise c.fail(f"stat {_fmt(stat_ap)} has K={k} rows but mov {_fmt(mov_ap)} has {k2}; they must match")
    if k > pe["rows"]:
        raise c.fail(f"stat {_fmt(stat_ap)} has K={k} rows (partitions); pe.rows is {pe['rows']}")
    if m > pe["cols"]:
        raise c.fail(f"stat {_fmt(stat_ap)} has M={m} columns; pe.cols is {pe['cols']}")
    if n > pe["max_n"]:
        raise c.fail(f"mov {_fmt(mov_ap)} has N={n} columns; pe.max_n is {pe['max_n']}")
    if (dm, dn) != (m, n):
        raise c.fail(f"dst {_fmt(dst_ap)} is {dm}x{dn}, expected [M={m}, N={n}]")
    dst = c.view("dst")
    dst2d = _view_reshape(dst, (m, n))
    start = c.attr("start") == 1

    if integer:
        return _int8_matmul(c, k, m, n, dst, dst2d, start)
    # operands widened (or gathered) into work arrays: the same C-contiguous f32 matrices a
    # fresh array would hold, so the BLAS call and its bits are the same, without allocating
    stat_f32 = _f32_operand(c, "stat", (k, m))
    mov_f32 = _f32_operand(c, "mov", (k, n))

    def product() -> np.ndarray:
        return np.matmul(stat_f32().T, mov_f32())

    if dst2d is None:  # a psum pattern that cannot be seen as [M,N]: go through a copy
        if start:
            return lambda: np.copyto(dst, product().reshape(dst.shape))

        def accumulate_reshaped():
            dst[...] = dst + product().reshape(dst.shape)
        return accumulate_reshaped
    prod = None if start else work_array(c.mem, "matmul", (m, n), np.float32)
    direct = _direct_matmul(stat_f32, mov_f32, dst2d, prod)
    if direct is not None:
        return direct
    if start:
        def matmul_into_dst():
            np.matmul(stat_f32().T, mov_f32(), out=dst2d)
        return matmul_into_dst

    narrow = _narrow_matmul_accumulate(stat_f32, mov_f32, dst2d, prod)
    if narrow is not None:
        return narrow

    def matmul_accumulate():
        np.matmul(stat_f32().T, mov_f32(), out=prod)
        np.add(dst2d, prod, out=dst2d)  # the f32 PSUM add
    return matmul_accumulate


def _narrow_matmul_accumulate(stat_f32, mov_f32, dst2d: np.ndarray, prod: np.ndarray) -> Executor | None:
    """matmul_accumulate for a PSUM tile of one or two columns, with operands fixed at build time: the
    add as one 1-D call per column (see narrow: ~1.4 -> ~0.6 us on [32, 2]), the same bits."""
    stat, mov = _fixed(stat_f32), _fixed(mov_f32)
    add = column_calls(np.add, (dst2d, prod), dst2d) if stat is not None and mov is not None else None
    if add is None:
        return None
    stat_t, matmul = stat.T, np.matmul

    def matmul_accumulate_narrow():
        matmul(stat_t, mov, prod)
        add()
    return matmul_accumulate_narrow


def _int8_matmul(c: _Ctx, k: int, m: int, n: int, dst: np.ndarray, dst2d: np.ndarray | None, start: bool) -> Executor:
    """int8 matmul: i8 operands widened into f32 work arrays, their product in f32, which is exact
    (|i8·i8| <= 2^14 and K <= pe.rows = 128, so every partial sum is an integer below 2^24 whatever the
    order), cast to int32 (exact: no value is out of range) and added to PSUM in int32 with wrap-around.
    The same integers as products in int64 wrapped to int32, from four numpy calls without temporaries."""
    if k * (1 << 14) > 1 << 24:
        raise c.fail(f"K={k} rows: an int8 product sum could exceed f32's exact integers")  # (pe.rows forbids it)
    stat_f32 = _f32_operand(c, "stat", (k, m))
    mov_f32 = _f32_operand(c, "mov", (k, n))
    product = work_array(c.mem, "matmul", (m, n), np.float32)
    if dst2d is None:  # a psum pattern that cannot be seen as [M,N]: go through a copy
        def int8_matmul_reshaped():
            np.matmul(stat_f32().T, mov_f32(), out=product)
            exact = product.astype(np.int32).reshape(dst.shape)
            if start:
                np.copyto(dst, exact)
            else:
                np.add(dst, exact, out=dst)
        return int8_matmul_reshaped
    if start:
        def int8_matmul():
            np.matmul(stat_f32().T, mov_f32(), out=product)
            np.copyto(dst2d, product, casting="unsafe")
        return int8_matmul
    as_int = work_array(c.mem, "matmul:i32", (m, n), np.int32)

    def int8_matmul_accumulate():
        np.matmul(stat_f32().T, mov_f32(), out=product)
        np.copyto(as_int, product, casting="unsafe")
        np.add(dst2d, as_int, out=dst2d)  # int32 with wrap-around
    return int8_matmul_accumulate


_DIRECT_ACCUMULATE_MIN = 4096  # PSUM elements


def _direct_matmul(stat_f32, mov_f32, dst2d: np.ndarray, prod: np.ndarray | None) -> Executor | None:
    """The float matmul as one BLAS call straight into PSUM (the accumulating one, given its work
    array `prod`, without the temporary product and second pass), when both operands are arrays
    fixed at build time and blas_gemm vouches for the call being numpy's own, bit for bit; else None."""
    if prod is not None and dst2d.size < _DIRECT_ACCUMULATE_MIN:
        return None  # its NaN check (a gemv) costs more than the add it saves on a small tile
    stat, mov = stat_f32(), mov_f32()
    if stat is not stat_f32() or mov is not mov_f32():
        return None  # operands rebuilt on every read: no fixed memory to hand to BLAS
    gemm = gemm_call(stat.T, mov, dst2d, prod)
    if gemm is None:
        return None
    if _fixed(stat_f32) is not None and _fixed(mov_f32) is not None:
        return gemm  # memory read as it is: nothing to refill

    def matmul_direct():
        stat_f32()  # refills a widened operand's work array (a no-op for f32 memory)
        mov_f32()
        gemm()
    return matmul_direct


def _build_transpose(c: _Ctx) -> Executor:
    pe = c.arch.raw["pe"]
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    k, m = c.rows_free("src")
    dm, dk = c.rows_free("dst")
    if (dm, dk) != (m, k):
        raise c.fail(f"dst {_fmt(dst_ap)} is {dm}x{dk}, expected the transpose of src [{k},{m}]: [{m},{k}]")
    if k > pe["rows"]:
        raise c.fail(f"src {_fmt(src_ap)} has K={k} rows (partitions); pe.rows is {pe['rows']}")
    if m > pe["cols"]:
        raise c.fail(f"src {_fmt(src_ap)} has M={m} columns; pe.cols is {pe['cols']}")
    if k > pe["max_n"]:
        raise c.fail(f"src {_fmt(src_ap)} has K={k} rows; the identity it is multiplied by needs "
                     f"N=K <= pe.max_n ({pe['max_n']})")
    if dst_ap.dtype == "f32":
        convert = _widener(src_ap.dtype)
    elif dst_ap.dtype == "i32" and _is_int(src_ap.dtype):
        convert = lambda x: cast(x, "i32")
    else:
        raise c.fail(f"dst {_fmt(dst_ap)} has dtype {dst_ap.dtype}; expected f32 "
                     "(or i32 for an integer src)")
    read = _reader(c.view("src"), (k, m))
    dst2d = _view_reshape(c.view("dst"), (m, k))
    if dst2d is not None:  # one strided copy (numpy reads an overlapping src before writing)
        return lambda: np.copyto(dst2d, convert(read()).T)
    store = _writer(c.view("dst"), (m, k))
    return lambda: store(np.ascontiguousarray(convert(read()).T))


# ---- ACT -----------------------------------------------------------------------------------------

def _build_activate(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    c.same_rows_and_free("src", "dst")
    src = c.view("src")
    shape, rows, ndim = src.shape, src.shape[0], src.ndim
    read = _reader(src, shape)
    store = _writer(c.view("dst"), shape)
    func, mode, alpha = c.attr("func"), c.attr("mode"), float(c.attr("alpha"))
    segments = int(c.arch.raw["act_table"]["segments"])
    scale_v = c.per_partition("scale_ap", rows, ndim) if c.has("scale_ap") else None
    bias_v = c.per_partition("bias_ap", rows, ndim) if c.has("bias_ap") else None
    scale, bias = _f32_scalar(c.attr("scale")), _f32_scalar(c.attr("bias"))
    accum = None
    if c.has("accum"):
        accum_ap = c.ap("accum")
        r, f = c.rows_free("accum")
        if (r, f) != (rows, 1):
            raise c.fail(f"accum {_fmt(accum_ap)} must be [{rows},1], got {r} rows x {f} free elements")
        round_accum = _rounder(accum_ap.dtype)
        store_accum = _writer(c.view("accum"), (rows,) + (1,) * (ndim - 1))
        free_axes = tuple(range(1, ndim))

        def accum(y: np.ndarray) -> None:
            store_accum(round_accum(np.sum(y, axis=free_axes, dtype=np.float32, keepdims=True)))
    passthrough = func in ("identity", "copy")
    try:
        act = activation_function(func, mode, segments, alpha)
    except ValueError as exc:
        raise c.fail(str(exc)) from None
    # fp32 multiply then fp32 add, each rounded once; absent terms are not applied
    terms = []
    if scale_v is not None:
        widen_scale = _widener(c.ap("scale_ap").dtype)
        terms.append((np.multiply, lambda: widen_scale(scale_v)))
    elif scale != 1.0:
        terms.append((np.multiply, _constant(scale)))
    if bias_v is not None:
        widen_bias = _widener(c.ap("bias_ap").dtype)
        terms.append((np.add, lambda: widen_bias(bias_v)))
    elif bias != 0.0:
        terms.append((np.add, _constant(bias)))
    one_call = one_pass_function(func, mode, _prod(shape)) if _prod(shape) < _ONE_PASS_MAX else None
    if one_call is not None:
        return _activate_one_pass(c, one_call, shape, terms, accum)
    widen, round_dst = _widener(src_ap.dtype), _rounder(dst_ap.dtype)

    @_quiet
    def activate():
        x = widen(read())
        for term, operand in terms:
            x = term(x, operand())
        # identity/copy are exact: skip the f64 round trip inside activation()
        y = x if passthrough else act(x)
        store(round_dst(y))
        if accum is not None:
            accum(y)
    return activate


_ONE_PASS_MAX = 4096  # elements: the one-call path is for small tiles; larger ones keep numerics' own path


def _activate_one_pass(c: _Ctx, one_call, shape: tuple[int, ...], terms, accum) -> Executor:
    """activate of a function numerics evaluates at this size as one float64 ufunc call: that call made
    once from the f32 operand (after the scale and bias terms, each one f32 ufunc into a work array)
    into the f32 result, numpy widening and rounding in its buffers (see numerics.one_pass_function): the
    same bits as `activate`'s general path from a few numpy calls instead of eight or more (a sigmoid
    over 256 elements: ~7 us -> ~3 us). With accum the result goes to a C-contiguous work array first,
    as the general path's fresh result array is, so its sum runs in the same order."""
    src_f32 = _f32_operand(c, "src", shape)
    if accum is None:
        out, finish = _f32_result(c, shape)
    else:
        out = work_array(c.mem, "act", shape, np.float32)
        store, round_dst = _writer(c.view("dst"), shape), _rounder(c.ap("dst").dtype)

        def finish():
            store(round_dst(out))
            accum(out)
    before = work_array(c.mem, "act_in", shape, np.float32) if terms else None

    @_quiet
    def activate_one_pass():
        x = src_f32()
        for term, operand in terms:
            term(x, operand(), out=before)
            x = before
        one_call(x, out)  # computed as if x did not overlap out
        finish()
    return activate_one_pass


# ---- DVE / POOL elementwise ------------------------------------------------------------------------

def _flag(fn):
    return lambda a, b, rtype: fn(a, b).astype(rtype)


def _logical(fn):
    return lambda a, b, rtype: fn(np.not_equal(a, 0), np.not_equal(b, 0)).astype(rtype)


# arithmetic ops are one ufunc each (the f32 fast paths call them with out=)
_FLOAT_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                 "max": np.maximum, "min": np.minimum, "pow": np.power, "mod": np.fmod}


def _plain(ufunc):
    return lambda a, b, _t: ufunc(a, b)


# (a, b, result type) -> result: f32 operands on the float path, int64 on the integer path
_FLOAT_ALU = {
    **{name: _plain(ufunc) for name, ufunc in _FLOAT_UFUNCS.items()},
    "eq": _flag(np.equal), "ne": _flag(np.not_equal), "gt": _flag(np.greater),
    "ge": _flag(np.greater_equal), "lt": _flag(np.less), "le": _flag(np.less_equal),
    "and": _logical(np.logical_and), "or": _logical(np.logical_or), "xor": _logical(np.logical_xor),
    "bypass": lambda a, b, _t: a,
}


class _IntZeroDivision(ArithmeticError):
    pass


def _nonzero_divisor(b):
    if np.any(np.equal(b, 0)):
        raise _IntZeroDivision()
    return b


def _int_div(a, b, _t):
    b = _nonzero_divisor(b)
    r = np.fmod(a, b)  # C remainder: a - r is an exact multiple of b
    return (a - r) // b


def _int_mod(a, b, _t):
    return np.fmod(a, _nonzero_divisor(b))


def _int_pow(a, b, _t):
    real = np.trunc(np.power(np.asarray(a, np.float64), np.asarray(b, np.float64)))
    return np.clip(real, -9.2e18, 9.2e18).astype(np.int64)


_INT_ALU = dict(_FLOAT_ALU, div=_int_div, mod=_int_mod, pow=_int_pow)


def _alu(op: str, integer: bool):
    table = _INT_ALU if integer else _FLOAT_ALU
    if op not in table:
        raise _Static(f"unknown ALU op {op!r} (expected one of {', '.join(ALU_OPS)})")
    return table[op]


def _run_alu(c: _Ctx, compute: Callable[[], np.ndarray], store, dtype: str) -> Executor:
    op, round_dst = c.op, _rounder(dtype)

    @_quiet
    def run():
        try:
            value = compute()
        except _IntZeroDivision:
            raise ExecError(f"{op}: integer division by zero") from None
        store(round_dst(value))
    return run


_UNBUFFERED_CHECK_MIN = 4096  # elements: below, the NaN check of an unbuffered add/mul costs more than it saves
_SHORT_ROW = 64  # free elements per partition below which numpy's buffering beats row-by-row loops


def _buffering_pays(shape: tuple[int, ...]) -> bool:
    """Whether numpy's default (buffered) ufunc call is the faster one for a tile of `shape`: on a small
    tile of short rows an unbuffered call runs its inner loop once per row of a few elements and sets a
    context variable around it (a [32, 16] subtract: ~3.4 us against ~2.0 us buffered); long rows
    are where unbuffered pays (see unbuffered)."""
    return _prod(shape) < _UNBUFFERED_CHECK_MIN and _prod(shape[1:]) < _SHORT_ROW


def _build_tensor_tensor(c: _Ctx) -> Executor:
    a_ap, b_ap, dst_ap = c.ap("a"), c.ap("b"), c.ap("dst")
    c.same_rows_and_free("a", "dst")
    c.same_rows_and_free("b", "dst")
    dst = c.view("dst")
    shape = dst.shape
    read_a, read_b = _reader(c.view("a"), shape), _reader(c.view("b"), shape)
    integer = all(_is_int(ap.dtype) for ap in (a_ap, b_ap, dst_ap))
    try:
        fn = _alu(c.attr("op"), integer)
    except _Static as exc:
        raise c.fail(str(exc)) from None
    if integer:
        i64 = np.int64
        compute = lambda: fn(read_a().astype(i64), read_b().astype(i64), i64)
        return _run_alu(c, compute, _writer(dst, shape), dst_ap.dtype)
    ufunc = _FLOAT_UFUNCS.get(c.attr("op"))
    if ufunc is None:  # compares and logical ops: through their 0/1 conversion
        f32, widen_a, widen_b = np.float32, _widener(a_ap.dtype), _widener(b_ap.dtype)
        compute = lambda: fn(widen_a(read_a()), widen_b(read_b()), f32)
        return _run_alu(c, compute, _writer(dst, shape), dst_ap.dtype)
    a_f32, b_f32 = _f32_operand(c, "a", shape), _f32_operand(c, "b", shape)
    out, finish = _f32_result(c, shape)
    general = _tensor_tensor_f32(c, ufunc, shape, a_f32, b_f32, out, finish)
    a_fixed, b_fixed = _fixed(a_f32), _fixed(b_f32)
    if a_fixed is not None and b_fixed is not None and finish is _nothing_to_finish:
        return binary_tile(ufunc, a_fixed, b_fixed, out, general) or general
    return general


def _tensor_tensor_f32(c: _Ctx, ufunc, shape, a_f32, b_f32, out: np.ndarray, finish) -> Executor:
    """tensor_tensor on the f32 datapath as numpy's ufunc call into `out`, then `finish` (see _f32_result)."""
    a_fixed, b_fixed = _fixed(a_f32), _fixed(b_f32)
    if a_fixed is not None and b_fixed is not None and finish is _nothing_to_finish:
        narrow = column_calls(ufunc, (a_fixed, b_fixed), out)
        if narrow is not None:
            return _quiet(narrow)

    def tensor_tensor():
        ufunc(a_f32(), b_f32(), out=out)  # numpy computes as if the operands did not overlap out
        finish()
    buffered = _quiet(tensor_tensor)
    if ufunc in ORDER_FREE:
        return buffered if _buffering_pays(shape) else quiet_unbuffered(tensor_tensor)
    if ufunc not in NAN_PAIR_SENSITIVE or _prod(shape) < _UNBUFFERED_CHECK_MIN:
        return buffered
    # add, multiply: exact unbuffered unless both operands hold a NaN at one element (see
    # unbuffered). A result without NaN rules that out; with one, the untouched inputs go again
    # through numpy's default. Where out overlaps an input, an f32 operand without NaN is the
    # check instead (read before out changes; a second pass over memory, so only then).
    a_view, b_view = c.view("a"), c.view("b")
    if not may_overlap(out, a_view) and not may_overlap(out, b_view):
        @quiet_unbuffered
        def compute_unbuffered():
            ufunc(a_f32(), b_f32(), out=out)
            return np.isnan(out).any()

        @_quiet
        def compute_buffered():
            ufunc(a_f32(), b_f32(), out=out)

        def tensor_tensor_checked():
            if compute_unbuffered():
                compute_buffered()
            finish()
        return tensor_tensor_checked
    f32_operands = [view for name, view in (("b", b_view), ("a", a_view)) if c.ap(name).dtype == "f32"]
    if not f32_operands:
        return buffered
    operand, unbuffered = f32_operands[0], quiet_unbuffered(tensor_tensor)
    has_nan = quiet_unbuffered(lambda: np.isnan(operand).any())

    def tensor_tensor_prechecked():
        return buffered() if has_nan() else unbuffered()
    return tensor_tensor_prechecked


def _build_tensor_scalar(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    c.same_rows_and_free("src", "dst")
    dst = c.view("dst")
    shape = dst.shape
    read = _reader(c.view("src"), shape)
    stages = []  # (op, scalar attr, per-partition view or None, its dtype, reversed)
    for k in (0, 1):
        op = c.attr(f"op{k}")
        if op == "bypass":  # bypass passes the tensor through (whatever revK says)
            continue
        ap_name = f"s{k}_ap"
        view = c.per_partition(ap_name, shape[0], len(shape)) if c.has(ap_name) else None
        stages.append((op, c.attr(f"s{k}"), view, c.ap(ap_name).dtype if view is not None else None,
                       c.attr(f"rev{k}") == 1))
    integer = _is_int(src_ap.dtype) and _is_int(dst_ap.dtype) and all(
        _is_int(vdt) if view is not None else _scalar_is_int(s) for _, s, view, vdt, _ in stages)
    rtype = np.int64 if integer else np.float32
    steps = []
    for op, s, view, vdt, rev in stages:
        try:
            fn = _alu(op, integer)
        except _Static as exc:
            raise c.fail(str(exc)) from None
        if view is not None and not integer and vdt == "f32":
            get = _constant(view)  # (f32 widens to itself)
        elif view is not None:
            widen_s = (lambda x: x.astype(np.int64)) if integer else _widener(vdt)
            get = (lambda v=view, w=widen_s: w(v))
        else:
            get = _constant(np.int64(int(s)) if integer else _f32_scalar(s))
        steps.append((fn, get, rev))
    ufuncs = [_FLOAT_UFUNCS.get(op) for op, *_ in stages]
    if not integer and steps and None not in ufuncs:
        scalars = [None if view is not None else steps[i][1]() for i, (_, _, view, _, _) in enumerate(stages)]
        return _tensor_scalar_f32(c, shape, [(u, get, rev) for u, (_, get, rev) in zip(ufuncs, steps)], scalars)
    widen = (lambda x: x.astype(np.int64)) if integer else _widener(src_ap.dtype)

    def compute():
        t = widen(read())
        for fn, get, rev in steps:
            t = fn(get(), t, rtype) if rev else fn(t, get(), rtype)
        return t
    return _run_alu(c, compute, _writer(dst, shape), dst_ap.dtype)


def _tensor_scalar_f32(c: _Ctx, shape, steps, scalars) -> Executor:
    """tensor_scalar on the f32 datapath, each stage one ufunc (the same f32 operations as fresh
    temporaries): a first stage of two into a contiguous work array, the last one straight into the
    result. dst is written only by that last call, so a per-partition scalar inside dst is read
    before it changes (numpy computes a call as if its operands did not overlap its output).
    `scalars`: each stage's immediate (f32), or None for a per-partition operand. Stages run without
    numpy's operand buffering where that is exact (see unbuffered): an add or multiply only while its
    scalar holds no NaN (immediates decided here, per-partition ones checked per call); on a small tile
    of short rows numpy's default is faster (see _buffering_pays), and a small f32 tile fixed in memory
    runs as one compiled loop (tile_alu)."""
    src_f32 = _f32_operand(c, "src", shape)
    out, finish = _f32_result(c, shape)
    general = _tensor_scalar_f32_calls(c, shape, steps, scalars, src_f32, out, finish)
    fixed = [(ufunc, _fixed(get), rev) for ufunc, get, rev in steps]
    if _fixed(src_f32) is not None and finish is _nothing_to_finish and all(k is not None for _, k, _ in fixed):
        return stages_tile(_fixed(src_f32), fixed, out, general) or general
    return general


def _tensor_scalar_f32_calls(c: _Ctx, shape, steps, scalars, src_f32, out: np.ndarray, finish) -> Executor:
    """_tensor_scalar_f32 as numpy calls (the stages' ufuncs) into `out`, then `finish`."""
    (ufunc, get, rev), first = steps[-1], steps[:-1]
    between = work_array(c.mem, "alu", shape, np.float32) if first else None
    narrow = _narrow_tensor_scalar(src_f32, steps, between, out) if finish is _nothing_to_finish else None
    if narrow is not None:
        return narrow

    def tensor_scalar():
        t = src_f32()
        for f, g, r in first:
            if r:
                f(g(), t, out=between)
            else:
                f(t, g(), out=between)
            t = between
        if rev:
            ufunc(get(), t, out=out)
        else:
            ufunc(t, get(), out=out)
        finish()
    buffered = _quiet(tensor_scalar)
    if _buffering_pays(shape):
        return buffered
    if any(u not in ORDER_FREE and (u not in NAN_PAIR_SENSITIVE or (k is not None and np.isnan(k)))
           for (u, _, _), k in zip(steps, scalars)):
        return buffered
    unbuffered = quiet_unbuffered(tensor_scalar)
    nan_checks = [g for (u, g, _), k in zip(steps, scalars) if u in NAN_PAIR_SENSITIVE and k is None]
    if not nan_checks:
        return unbuffered

    def tensor_scalar_checked():
        for get_scalars in nan_checks:
            if np.isnan(get_scalars()).any():
                return buffered()
        return unbuffered()
    return tensor_scalar_checked


def _nothing_to_finish() -> None:
    """_f32_result's finish when the result is computed in dst itself."""


def _constant(value):
    """A getter of `value` itself (memory seen as it is, or an immediate), which `_fixed` recognises."""
    def get():
        return value
    get.fixed = value
    return get


def _fixed(get: Callable[[], np.ndarray]):
    """What `get` returns when it is a `_constant` (nothing to refill: a caller may hold on to it), else
    None (a work array refilled on each call, or a copy)."""
    return getattr(get, "fixed", None)


def _narrow_tensor_scalar(src_f32, steps, between: np.ndarray | None, out: np.ndarray) -> Executor | None:
    """_tensor_scalar_f32 for a tile of one or two columns whose operands are all fixed at build time:
    each stage as one 1-D call per column (see narrow), the same stages into the same arrays."""
    t = _fixed(src_f32)
    if t is None:
        return None
    calls = []
    for i, (ufunc, get, rev) in enumerate(steps):
        k = _fixed(get)
        target = out if i == len(steps) - 1 else between
        stage = None if k is None else column_calls(ufunc, (k, t) if rev else (t, k), target)
        if stage is None:
            return None
        calls.append(stage)
        t = target
    if len(calls) == 1:
        return _quiet(calls[0])
    first, second = calls

    def tensor_scalar_narrow():
        first()
        second()
    return _quiet(tensor_scalar_narrow)


def _f32_result(c: _Ctx, shape: tuple[int, ...]) -> tuple[np.ndarray, Callable[[], None]]:
    """(out, finish): the f32 array of `shape` an ALU result is computed into, and what then stores
    it to dst with the single rounding of the write. An f32 dst seen in `shape` is its own out
    (finish does nothing); otherwise a work array, rounded into dst by one numpy cast for bf16/f16
    (the device's rounding there) or by numerics.cast."""
    dst_ap, dst = c.ap("dst"), c.view("dst")
    shaped = _view_reshape(dst, shape)
    if shaped is not None and dst_ap.dtype == "f32":
        return shaped, _nothing_to_finish
    work = work_array(c.mem, "dst", shape, np.float32)
    if shaped is not None and ("f32", dst_ap.dtype) in _IEEE_CASTS:
        return work, lambda: np.copyto(shaped, work, casting="unsafe")
    store, round_dst = _writer(dst, shape), _rounder(dst_ap.dtype)
    return work, lambda: store(round_dst(work))


def _build_select(c: _Ctx) -> Executor:
    dst_ap = c.ap("dst")
    dtypes = [c.ap(n).dtype for n in ("a", "b", "dst")]
    for name in ("pred", "a", "b"):
        c.same_rows_and_free(name, "dst")
    dst = c.view("dst")
    shape = dst.shape
    pred_ap = c.ap("pred")
    read_p = _reader(c.view("pred"), shape)
    pred_f = _widener(pred_ap.dtype) if pred_ap.dtype in FLOAT_DTYPES else (lambda x: x)
    store = _writer(dst, shape)
    if len(set(dtypes)) == 1:  # pure data selection: bit-exact
        read_a, read_b = _reader(_raw(c.view("a")), shape), _reader(_raw(c.view("b")), shape)
        store_raw = _writer(_raw(dst), shape)
        return lambda: store_raw(np.where(pred_f(read_p()) != 0, read_a(), read_b()))
    read_a, read_b = _reader(c.view("a"), shape), _reader(c.view("b"), shape)
    if all(_is_int(d) for d in dtypes):
        widen_a = widen_b = lambda x: x.astype(np.int64)
    else:
        widen_a, widen_b = _widener(dtypes[0]), _widener(dtypes[1])
    round_dst = _rounder(dst_ap.dtype)

    def select():
        store(round_dst(np.where(pred_f(read_p()) != 0, widen_a(read_a()), widen_b(read_b()))))
    return select


def _reduce_fn(op: str, integer: bool):
    acc = np.int64 if integer else np.float32
    if op == "sum":
        return lambda x, axis: np.sum(x, axis=axis, dtype=acc)
    if op == "max":
        return lambda x, axis: np.max(x, axis=axis)
    if op == "min":
        return lambda x, axis: np.min(x, axis=axis)
    raise _Static(f"unknown reduce op {op!r} (expected sum, max or min)")


_SMALL_WINDOW = 64  # reduced elements per output up to which max/min go slice by slice
_F32_NEG_ZERO_BITS = np.int32(np.iinfo(np.int32).min)  # -0.0 seen as int32
_SPARSE_ZEROS = 64  # zero extremes in at most 1/64 of the windows are checked by index


def _windowed_extreme(op: str, axes: int, shape: tuple[int, ...]):
    """np.max / np.min over the innermost `axes` dims of a float32 array of `shape`, one elementwise
    np.maximum / np.minimum per window position: numpy's reduce walks a few elements per output
    through its generic iterator, ~20x slower on pooling windows. Max and min are exact, so the
    result is the same whatever the order, except where np.max itself depends on its order: NaN
    (which payload) and a zero result from a window holding both +0 and -0 (only possible if the
    input holds a -0 at all). Then the caller falls back to np.max / np.min. None when this does not
    pay (large windows). (Folding one window axis at a time instead is faster on 2x2 windows that
    tile the input but 3.7x slower on overlapping 3x3 stride-2 ones: its inner loops run along the
    window.)"""
    window = shape[len(shape) - axes:]
    count = _prod(window)
    if op not in ("max", "min") or not 1 < count <= _SMALL_WINDOW or axes == 0:
        return None
    positions = [np.unravel_index(i, window) for i in range(count)]
    pick = np.maximum if op == "max" else np.minimum
    keys = [(Ellipsis,) + tuple(int(j) for j in pos) for pos in positions]
    last: list = [None, None]  # the last x and its views (an executor reading in place passes one object)

    def extreme(x: np.ndarray) -> np.ndarray | None:
        if last[0] is not x:
            last[0], last[1] = x, ([x[key] for key in keys], _memory_cover(x).view(np.int32))
        parts, cover_bits = last[1]
        out = pick(parts[0], parts[1])
        for part in parts[2:]:
            pick(out, part, out=out)
        if np.isnan(out.max() if op == "max" else out.min()):  # NaN propagates through the reduction
            return None
        zero = out == 0  # only windows whose extreme is a zero can hold both signs
        zeros = int(np.count_nonzero(zero))
        if zeros == 0 or cover_bits.min() != _F32_NEG_ZERO_BITS:  # -0: the unique smallest int32 pattern
            return out
        bits = x.view(np.int32)
        if zeros * _SPARSE_ZEROS < zero.size:  # a few: look at those windows alone
            zero = np.nonzero(zero)
        return None if _mixed_zeros(bits, keys, zero) else out
    return extreme


def _memory_cover(x: np.ndarray) -> np.ndarray:
    """A read-only view holding every element of x (and possibly the gaps between them) in few,
    contiguous rows, for a cheap scan: pooling windows overlap, and seen through x's own strides a
    min over them walks each element several times through numpy's generic iterator. The cover is
    the address range x spans within each step of its outermost axis, when those ranges do not
    overlap; otherwise x itself in memory order."""
    order = sorted(range(x.ndim), key=lambda d: -abs(x.strides[d]))
    if x.size == 0 or any(st < 0 for st in x.strides):
        return x
    outer = order[0]
    inner_bytes = sum((x.shape[d] - 1) * x.strides[d] for d in order[1:]) + x.itemsize
    if x.strides[outer] < inner_bytes or inner_bytes % x.itemsize:
        return x.transpose(order)
    return np.lib.stride_tricks.as_strided(x, (x.shape[outer], inner_bytes // x.itemsize),
                                           (x.strides[outer], x.itemsize), writeable=False)


def _mixed_zeros(bits: np.ndarray, keys, zero) -> bool:
    """Whether a window whose extreme is a zero holds both +0 and -0 (`bits`: the input as int32;
    `zero`: those windows as a boolean mask over the output, or as the index arrays of a few)."""
    mask = zero if isinstance(zero, np.ndarray) else None
    has_neg0 = np.zeros(mask.shape if mask is not None else zero[0].size, bool)
    has_pos0 = np.zeros_like(has_neg0)
    for key in keys:
        b = bits[key] if mask is not None else bits[key][zero]
        has_neg0 |= b == _F32_NEG_ZERO_BITS
        has_pos0 |= b == 0
    both = has_neg0 & has_pos0
    return bool((both & mask).any() if mask is not None else both.any())


def _build_reduce(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    src = c.view("src")
    axes = int(c.attr("axes"))
    nfree = src.ndim - 1
    if axes > nfree:
        raise c.fail(f"axes={axes} but src {_fmt(src_ap)} has only {nfree} free dims")
    out_shape = src.shape[:src.ndim - axes]
    if dst_ap.num_elements != _prod(out_shape) or c.rows_free("dst")[0] != out_shape[0]:
        raise c.fail(f"dst {_fmt(dst_ap)} has shape {dst_ap.shape}; reducing the innermost {axes} "
                     f"free dims of src {src.shape} gives {out_shape}")
    integer = _is_int(src_ap.dtype) and _is_int(dst_ap.dtype)
    try:
        fn = _reduce_fn(c.attr("op"), integer)
    except _Static as exc:
        raise c.fail(str(exc)) from None
    axis = tuple(range(src.ndim - axes, src.ndim))
    read = _reader(src, src.shape)
    widen = (lambda x: x.astype(np.int64)) if integer else _widener(src_ap.dtype)
    store = _writer(c.view("dst"), out_shape)
    round_dst = _rounder(dst_ap.dtype)

    if not integer and c.attr("op") == "sum" and WindowSum.worth_it(src.shape, axes):
        window_sum = WindowSum(src.shape, axes)

        @_quiet
        def reduce_window_sum():
            store(round_dst(window_sum(widen(read()))))
        return reduce_window_sum

    fast = None if integer else _windowed_extreme(c.attr("op"), axes, src.shape)
    if fast is not None:
        @_quiet
        def reduce_window():
            x = widen(read())
            out = fast(x)
            store(round_dst(fn(x, axis) if out is None else out))
        return reduce_window

    op = c.attr("op")
    if not integer and op in ("max", "min") and axes > 0:
        # numpy's reduce without an initial value walks each window element by element (~1 ns
        # each); with ∓inf as the initial value it runs its vector loop, ~3x faster. Same value
        # whatever the order; the bits may differ only by a NaN's payload or a zero's sign, which
        # those windows leave to np.max / np.min
        pick, start = (np.maximum, np.float32(-np.inf)) if op == "max" else (np.minimum, np.float32(np.inf))

        @_quiet
        def reduce_from_initial():
            x = widen(read())
            out = pick.reduce(x, axis=axis, initial=start)
            store(round_dst(out if _order_free_extreme(x, out) else fn(x, axis)))
        return reduce_from_initial

    @_quiet
    def reduce():
        store(round_dst(fn(widen(read()), axis)))
    return reduce


def _order_free_extreme(x: np.ndarray, out: np.ndarray) -> bool:
    """Whether `out`, the max or min of float32 `x` over its innermost dims (out's shape is x's
    outer dims), is the same in every summation order: no NaN, and no window whose extreme is a zero
    holds both +0 and -0."""
    if np.isnan(out).any():
        return False
    zero = out == 0
    if not zero.any():
        return True
    windows = x.reshape(out.shape + (-1,)).view(np.int32)[zero]
    return not ((windows == _F32_NEG_ZERO_BITS).any(axis=-1) & (windows == 0).any(axis=-1)).any()


# bytes from which transpose32 goes block by block through a work array (below, numpy's one strided
# copy is faster: its working set stays in cache)
_BLOCKWISE_TRANSPOSE = 3 << 17


def _build_transpose32(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    p, f = c.rows_free("src")
    c.same_rows_and_free("dst", "src")
    if p % 32 or f % 32:
        raise c.fail(f"src {_fmt(src_ap)} is {p}x{f}; 32x32 block transpose needs both multiples of 32")
    blocks = (p // 32, 32, f // 32, 32)
    src, dst = c.view("src"), c.view("dst")
    # dst[a, r, b, c] = src[a, c, b, r]
    if src_ap.dtype == dst_ap.dtype or (src_ap.dtype, dst_ap.dtype) in _IEEE_CASTS:
        same = src_ap.dtype == dst_ap.dtype
        src4 = _view_reshape(_raw(src) if same else src, blocks)
        dst4 = _view_reshape(_raw(dst) if same else dst, blocks)
        if src4 is not None and dst4 is not None:  # one strided copy (numpy copies first if they overlap)
            src_t = src4.transpose(0, 3, 2, 1)
            if same and p * f * src4.itemsize >= _BLOCKWISE_TRANSPOSE:
                # gather each transposed block into a contiguous [32, 32] (reading a block's rows
                # from 32 partitions at a time), then store whole 128-byte block rows: the scattered
                # accesses stay inside one 4 KiB block, and src is read in full before dst changes
                blocks_t = work_array(c.mem, "transpose32", (p // 32, f // 32, 32, 32), src4.dtype)
                gather_from, store_from = src4.transpose(0, 2, 3, 1), blocks_t.transpose(0, 2, 1, 3)

                def transpose_blockwise():
                    np.copyto(blocks_t, gather_from)
                    np.copyto(dst4, store_from)
                return transpose_blockwise
            if same:
                return lambda: np.copyto(dst4, src_t)

            @_quiet  # NaN and overflow to inf are the cast's intended results
            def transpose_cast():
                np.copyto(dst4, src_t, casting="unsafe")
            return transpose_cast
    read, store = _reader(src, blocks), _writer(dst, blocks)
    convert = _converter(src_ap.dtype, dst_ap.dtype)
    return lambda: store(convert(np.ascontiguousarray(read().transpose(0, 3, 2, 1))))


def _build_stats(c: _Ctx) -> Executor:
    """Mean and variance per partition in float64, rounded once into dst: the same operations as
    `x.mean(axis=1)` and `x.var(axis=1)` on the widened float64 array (numpy's sum of each row,
    divided by the count; deviations from that mean, squared, summed, divided), with the row sums
    taken once for both and every pass over C-contiguous work arrays (the same layout, so the same
    pairwise summation order, as the fresh arrays numpy's methods allocate)."""
    dst_ap = c.ap("dst")
    p, f = c.rows_free("src")
    if c.rows_free("dst") != (p, 2):
        raise c.fail(f"dst {_fmt(dst_ap)} must be [{p},2] (mean, variance per partition)")
    src_f32 = _f32_operand(c, "src", (p, f))
    store = _writer(c.view("dst"), (p, 2))
    dtype = dst_ap.dtype
    x = work_array(c.mem, "stats", (p, f), np.float64)
    mean = np.empty((p, 1), np.float64)
    sq_sum = np.empty(p, np.float64)
    out = np.empty((p, 2), np.float64)
    center = quiet_unbuffered(lambda: np.subtract(x, mean, out=x))  # the sums keep numpy's buffering

    @_quiet
    def stats():
        np.copyto(x, src_f32())  # f32 -> f64 is exact
        np.add.reduce(x, axis=1, keepdims=True, out=mean)
        np.true_divide(mean, f, out=mean)
        center()
        np.square(x, out=x)
        np.add.reduce(x, axis=1, out=sq_sum)
        out[:, 0] = mean[:, 0]
        np.true_divide(sq_sum, f, out=out[:, 1])
        store(cast(out, dtype))
    return stats


# ---- POOL only ---------------------------------------------------------------------------------------

def _build_preduce(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    p, f = c.rows_free("src")
    if dst_ap.num_elements != f:
        raise c.fail(f"dst {_fmt(dst_ap)} has {dst_ap.num_elements} elements; reducing src "
                     f"[{p},{f}] over partitions gives [1,{f}]")
    integer = _is_int(src_ap.dtype) and _is_int(dst_ap.dtype)
    try:
        fn = _reduce_fn(c.attr("op"), integer)
    except _Static as exc:
        raise c.fail(str(exc)) from None
    read = _reader(c.view("src"), (p, f))
    dst = c.view("dst")
    store = _writer(dst, (f,))
    widen = (lambda x: x.astype(np.int64)) if integer else _widener(src_ap.dtype)
    round_dst = _rounder(dst_ap.dtype)

    @_quiet
    def preduce():
        store(round_dst(fn(widen(read()), 0)))
    return preduce


def _build_pbroadcast(c: _Ctx) -> Executor:
    src_ap, dst_ap = c.ap("src"), c.ap("dst")
    rows, f = c.rows_free("dst")
    if src_ap.num_elements != f:
        raise c.fail(f"src {_fmt(src_ap)} has {src_ap.num_elements} elements; dst {_fmt(dst_ap)} "
                     f"needs [1,{f}] to copy to each of its {rows} partitions")
    read = _reader(c.view("src"), (1, f))
    dst = c.view("dst")
    shaped = _view_reshape(dst, (rows, f))
    convert = _converter(src_ap.dtype, dst_ap.dtype)
    if shaped is not None:
        return lambda: np.copyto(shaped, convert(read()))
    return lambda: np.copyto(dst, np.broadcast_to(convert(read()), (rows, f)).reshape(dst.shape))


def _build_gather(c: _Ctx) -> Executor:
    table_ap, idx_ap, dst_ap = c.ap("table"), c.ap("idx"), c.ap("dst")
    if not _is_int(idx_ap.dtype):
        raise c.fail(f"idx {_fmt(idx_ap)} has dtype {idx_ap.dtype}; indices must be an integer dtype")
    p, f = c.rows_free("dst")
    ip, ifree = c.rows_free("idx")
    if (ip, ifree) != (p, 1):
        raise c.fail(f"idx {_fmt(idx_ap)} must be [{p},1] (one row index per dst partition), "
                     f"got {ip} rows x {ifree} free elements")
    rows, row_size = c.rows_free("table")
    if row_size != f:
        raise c.fail(f"table {_fmt(table_ap)} rows have {row_size} elements, dst {_fmt(dst_ap)} "
                     f"rows have {f}; they must match")
    table = _reader(c.view("table"), (rows, f))
    idx = _reader(c.view("idx"), (p,))
    store = _writer(c.view("dst"), (p, f))
    convert = _converter(table_ap.dtype, dst_ap.dtype)

    def gather():
        ids = idx()
        bad = (ids < 0) | (ids >= rows)
        if bad.any():
            where = int(np.argmax(bad))
            raise ExecError(f"gather: idx value {int(ids[where])} (partition {where} of idx "
                            f"{_fmt(idx_ap)}) is out of range for table {_fmt(table_ap)} with "
                            f"{rows} rows")
        store(convert(table()[ids.astype(np.intp)]))
    return gather


def _build_nop(c: _Ctx) -> Executor:
    return lambda: None


_BUILDERS: dict[str, Callable[[_Ctx], Executor]] = {
    "dma_copy": _build_copy,
    "matmul": _build_matmul,
    "transpose": _build_transpose,
    "activate": _build_activate,
    "tensor_tensor": _build_tensor_tensor,
    "tensor_scalar": _build_tensor_scalar,
    "select": _build_select,
    "reduce": _build_reduce,
    "copy": _build_copy,
    "memset": _build_memset,
    "iota": _build_iota,
    "transpose32": _build_transpose32,
    "stats": _build_stats,
    "preduce": _build_preduce,
    "pbroadcast": _build_pbroadcast,
    "gather": _build_gather,
    "nop": _build_nop,
}
