"""Fast paths for small instructions give the same bits as the reference paths they replace: bf16
operands widened into the high halves of zeroed work arrays (`_f32_operand`), a replay calling
executors without their own np.errstate, windowed max/min folded one window axis at a time, memset
through an unsigned view, hardswish in place, cast copies through
a contiguous work array, the dst rounding and integer widening shortcuts, window sums keeping the
element views of the array they read."""
from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

from device_model import numerics
from device_model.arch import load_arch
from device_model.assembly import assemble
from device_model.dtypes import np_dtype
from device_model.engines import (
    _converter,
    _Ctx,
    _f32_operand,
    _reader,
    _rounder,
    _scalar_is_int,
    _widener,
    _windowed_extreme,
    bare_executor,
    build_executor,
)
from device_model.events import Observer
from device_model.isa import AP, Instr
from device_model.machine import Machine
from device_model.memory import Memory
from device_model.numerics import cast, to_f32
from device_model.window_sum import WindowSum
from device_model.workspace import work_array

ARCH = load_arch()


def _memory() -> Memory:
    return Memory(ARCH, 1 << 16, 160 << 10, 8 << 10)


def _ap(off: int, parts: int, dims, dtype: str) -> AP:
    return AP("sbuf", off, tuple(dims), dtype, 0, parts)


def _operand(mem: Memory, ap: AP, shape: tuple[int, ...], name: str = "mov"):
    ins = Instr("pe", "matmul", {name: ap})
    return _f32_operand(_Ctx(ins, mem, ARCH), name, shape)


def _reference(mem: Memory, ap: AP, shape: tuple[int, ...]) -> np.ndarray:
    return _widener(ap.dtype)(_reader(mem.view(ap), shape)())


def test_bf16_operand_widens_every_bit_pattern_like_the_shift():
    """All 65,536 bf16 patterns (NaN payloads, infinities, subnormals, -0), contiguous and strided, in
    executors of different sizes sharing the work array (built small first, then large, then small),
    run interleaved with an f16 operand of the same name after random data was written everywhere."""
    mem = _memory()
    rng = np.random.default_rng(5)
    mem.sbuf[...] = rng.integers(0, 256, mem.sbuf.shape, dtype=np.uint8)
    patterns = rng.permutation(np.arange(1 << 16, dtype=np.uint16))
    work_array(mem, "mov:bf16", (1 << 17,), np.uint8)[...] = 0xFF  # whatever a buffer held before
    cases = [
        (_ap(0, 128, ((1, 512),), "bf16"), (128, 512)),                # contiguous rows
        (_ap(4096, 16, ((38, 8), (2, 8)), "bf16"), (16, 64)),          # gapped, like a conv's window
        (_ap(8192, 96, ((1, 1024),), "bf16"), (96, 1024)),             # larger: grows the shared buffer
        (_ap(20480, 3, ((1, 4), (8, 5)), "bf16"), (3, 20)),            # inner stride above outer
        (_ap(40960, 64, ((1, 300),), "f16"), (64, 300)),               # another dtype, same name
    ]
    ops = [_operand(mem, ap, shape) for ap, shape in cases]
    for trial in range(3):
        for (ap, shape), op in zip(cases, ops):
            view = mem.view(ap).view(np.uint16)
            view[...] = rng.choice(patterns, view.shape)
            if trial == 0 and ap.dtype == "bf16":
                view.reshape(-1)[:min(view.size, 1 << 16)] = patterns[:min(view.size, 1 << 16)]
            got, want = op(), _reference(mem, ap, shape)
            assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
            assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
    every = _ap(0, 128, ((1, 512),), "bf16")
    mem.view(every).view(np.uint16).reshape(-1)[:] = np.arange(1 << 16, dtype=np.uint16)
    got = ops[0]()
    want = mem.view(every).astype(np.float32)
    assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()


def test_bf16_operand_values_are_the_ml_dtypes_cast():
    mem = _memory()
    ap = _ap(0, 4, ((1, 6),), "bf16")
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3.5, 65504.0] * 3, np.float32)
    mem.view(ap)[...] = values.astype(ml_dtypes.bfloat16).reshape(4, 6)
    got = _operand(mem, ap, (4, 6))()
    want = values.astype(ml_dtypes.bfloat16).astype(np.float32).reshape(4, 6)
    assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()


def test_replay_runs_bare_executors_in_one_errstate_with_the_event_paths_results():
    """An unobserved run calls each executor without its own np.errstate, inside one: an activate
    whose scale overflows (3e38 * 1e30 in the quiet executor itself), log of zeros and negatives, then
    -inf * 0 and a cast that overflows give what the event path gives, and no warning escapes where
    warnings are errors."""
    prog = assemble(_NAN_LOG, "nan_log")
    x = np.random.default_rng(3).standard_normal((128, 64)).astype(np.float32)
    x[:, :8] = 0.0
    x[:, 8:12] = 3e38
    results = []
    for observed in (False, True):
        m = Machine(ARCH).load(prog)
        m.write_tensor("x", x)
        if observed:
            m.attach(_Completions())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.run()
        results.append((m.time, m.read_tensor("y").view(np.uint16).tobytes(), m.memory.sbuf.tobytes()))
    assert results[0] == results[1]
    # the activate ran without its own errstate (an executor setting numpy's config itself, like the
    # unbuffered DVE ufuncs, keeps it: bare_executor leaves anything but _quiet's wrapper as it is)
    assert all(bare_executor(f) is not f for e in m._engines if e.name == "act" for f in e.execs)


class _Completions(Observer):
    def on_complete(self, ev) -> None:
        pass


_ROWS = "sbuf[0:+128]@{:#x}{{1:64}}:{}"
_NAN_LOG = "\n".join([
    ".arch xpu1",
    ".tensor input x @0x0 shape=128x64 dtype=f32",
    ".tensor output y @0x8000 shape=128x64 dtype=bf16",
    f"dma0 dma_copy dst={_ROWS.format(0, 'f32')} src=hbm@0x0{{64:128,1:64}}:f32 signal=s0+=1",
    f"act activate dst={_ROWS.format(0x400, 'f32')} src={_ROWS.format(0, 'f32')} func=log mode=exact scale=1e30 "
    "wait=s0>=1 signal=s1+=1",
    f"dve tensor_tensor dst={_ROWS.format(0x400, 'f32')} a={_ROWS.format(0x400, 'f32')} b={_ROWS.format(0, 'f32')} "
    "op=mul wait=s1>=1 signal=s1+=1",
    f"dma1 dma_copy dst=hbm@0x8000{{64:128,1:64}}:bf16 src={_ROWS.format(0x400, 'f32')} wait=s1>=2",
])


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("window", [(2, 2), (3, 3), (2, 3, 2)])
def test_windowed_extreme_folds_pooling_layouts_like_numpy(op, window):
    """Windows read in place from a partition-strided image (window axes interleaved with kept ones,
    as a pooling reads them), with ±0, ±inf, subnormals, NaN; each case either equals np.max / np.min
    bit for bit or is left to numpy (a NaN, or a zero extreme from a window mixing +0 and -0)."""
    rng = np.random.default_rng(len(window) * 10 + (op == "max"))
    fast = _windowed_extreme(op, len(window), (16, 3, 4) + window)
    ref_fn = np.max if op == "max" else np.min
    taken = 0
    for trial in range(24):
        image = rng.standard_normal((16, 3 * window[0] + 1, 4 * window[1] + 2, window[-1] if len(window) == 3 else 1))
        image = image.astype(np.float32)
        flat = image.reshape(-1)
        for value, share in ((0.0, 0.3 if trial % 3 else 0.0), (-0.0, 0.05 * (trial % 4 == 1)), (np.inf, 0.01),
                             (-np.inf, 0.01), (1e-45, 0.02), (np.nan, 0.002 * (trial % 5 == 4))):
            flat[rng.random(flat.size) < share] = value
        if trial % 2:
            image = np.maximum(image, np.float32(0.0))  # a ReLU'd input: +0 only
        s = image.strides
        shape = (16, 3, 4) + window
        strides = (s[0], s[1] * window[0], s[2] * window[1], s[1], s[2]) + ((s[3],) if len(window) == 3 else ())
        x = np.lib.stride_tricks.as_strided(image, shape, strides)
        got = fast(x)
        ref = ref_fn(x, axis=tuple(range(3, x.ndim)))
        if got is None:
            assert np.isnan(ref).any() or (ref == 0).any()
            continue
        taken += 1
        assert got.view(np.uint32).tobytes() == np.ascontiguousarray(ref).view(np.uint32).tobytes()
    assert taken >= 12


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16", "fp8e4", "fp8e5", "i8", "i32"])
def test_memset_writes_the_bytes_a_typed_store_writes(dtype):
    """memset through the unsigned view equals `dst[...] = cast(value)` byte for byte, over awkward
    values (±0, ±inf, NaN, subnormal, ties, out of range), on a gapped multi-partition pattern."""
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 1.0 + 2.0**-8, 3.0e38, -7.5, 300, -129, 2**31]
    size = {"f32": 4, "i32": 4, "bf16": 2, "f16": 2}.get(dtype, 1)
    ap = _ap(64, 5, ((7 * 3, 4), (1, 3)), dtype)
    for value in values:
        mem, ref = _memory(), _memory()
        rng = np.random.default_rng(size)
        mem.sbuf[...] = ref.sbuf[...] = rng.integers(0, 256, mem.sbuf.shape, dtype=np.uint8)
        ins = Instr("dve", "memset", {"dst": ap}, {"value": value})
        build_executor(ins, mem, ARCH)()
        integral = dtype.startswith("i") and _scalar_is_int(value)
        const = cast(np.array(int(value), np.int64) if integral else np.array(value, np.float64), dtype)
        ref.view(ap)[...] = np.asarray(const, dtype=ref.view(ap).dtype).reshape(())
        assert mem.sbuf.tobytes() == ref.sbuf.tobytes(), value


def _hardswish_as_first_written(x: np.ndarray) -> np.ndarray:
    return numerics._neg_inf_to_zero(x, x * numerics._hardsigmoid(x, numerics.HARDSWISH_ALPHA, numerics.HARDSWISH_BETA))


@pytest.mark.parametrize("specials", [False, True])
def test_hardswish_in_place_equals_the_formula_bit_for_bit(specials):
    """Every f32 near the kinks (±3 and 0, a few ulps either side), random values over many scales,
    and (with specials) ±0, ±inf, NaN payloads, subnormals, ±max, a -inf next to a NaN."""
    rng = np.random.default_rng(21 + specials)
    near = np.array([-3.0, 3.0, 0.0, -1.5, 1.5], np.float32)
    steps = np.arange(-64, 65, dtype=np.int32)
    kinks = (near.view(np.int32)[:, None] + steps[None, :]).reshape(-1).view(np.float32)
    scaled = (rng.standard_normal(4000) * np.exp2(rng.integers(-30, 30, 4000))).astype(np.float32)
    x = np.concatenate([kinks, scaled])
    if specials:
        nans = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FA12345], np.uint32).view(np.float32)
        odd = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1e-39, 3.4e38, -3.4e38], np.float32)
        x = np.concatenate([x, nans, odd, [np.float32(-np.inf)], nans[:1]])
    rng.shuffle(x)
    with np.errstate(all="ignore"):  # (signalling NaNs, inf * 0: results here, not errors)
        xd = x.astype(np.float64)
        want = _hardswish_as_first_written(xd)
        got = numerics._hardswish(xd)
    assert got.view(np.uint64).tobytes() == want.view(np.uint64).tobytes()
    got32 = numerics.activation("hardswish", x.reshape(-1, 1))
    assert got32.view(np.uint32).tobytes() == want.astype(np.float32).reshape(-1, 1).view(np.uint32).tobytes()


def _awkward_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random bit patterns (NaN payloads, infinities, subnormals, -0) mixed with values at integer
    and half-integer ties, at the edges of the integer ranges, and at bf16/f16 rounding ties."""
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    edges = np.array([-2**31, -2**31 - 256, 2**31 - 128, 2**31, -129, -128.5, -128, 127, 127.5, 128, 255.5,
                      -32768.5, 32767.5, 0.5, 1.5, 2.5, -0.5, -2.5, 0.0, -0.0, 65504, 65520, 3.4e38], np.float32)
    ties = (bits[: n // 4] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    small = (rng.standard_normal(n) * np.exp2(rng.integers(0, 12, n))).astype(np.float32)
    return np.concatenate([bits.view(np.float32), edges, ties.view(np.float32), small, np.round(small) + 0.5])


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "i32", "bf16", "f16", "u32", "fp8e4"])
def test_rounder_shortcuts_give_the_bits_of_cast(dtype):
    """_rounder from f32 (and from the integer ALU's int64, in range and beyond) equals numerics.cast,
    in whole arrays that stay in range (the shortcut) and that do not (cast itself)."""
    rng = np.random.default_rng(len(dtype) * 7 + ord(dtype[-1]))
    round_dst = _rounder(dtype)
    x = _awkward_f32(rng, 6000)
    finite_small = x[np.isfinite(x) & (np.abs(x) < 100)]
    ints = rng.integers(-2**40, 2**40, 3000).astype(np.int64)
    in_range = rng.integers(0, 100, 3000).astype(np.int64)
    cases = [x, finite_small, x[:0], ints, in_range, np.array([np.nan], np.float32), np.float32(7.5)[None]]
    if dtype[0] in "iu":  # whole arrays at the edges of the range: in it, and one step beyond either end
        lo, hi = int(np.iinfo(np_dtype(dtype)).min), int(np.iinfo(np_dtype(dtype)).max)
        for a, b in ((lo, hi), (lo - 1, hi), (lo, hi + 1)):
            cases.append(np.array([a, b, (a + b) // 2, 0], np.int64))
            cases.append(np.array([a, b, a + 0.5, b - 0.5, b + 0.5, a - 0.5, 0.5, -0.0], np.float64).astype(np.float32))
    with np.errstate(all="ignore"):
        for v in cases:
            got, want = round_dst(v), cast(v, dtype)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
            assert not np.shares_memory(got, v)


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "i32"])
def test_integer_widening_is_to_f32(dtype):
    """Small integers widen by numpy's cast with to_f32's bits: every value for 8/16 bits, for i32
    the extremes, runs around every power of two from 2^24 (ties to even) and random values."""
    info = np.iinfo(np_dtype(dtype))
    if info.bits <= 16:
        x = np.arange(info.min, info.max + 1, dtype=np.int64).astype(np_dtype(dtype))
    else:
        around = [np.arange(-300, 301) + sign * (1 << e) for e in range(24, 32) for sign in (1, -1)]
        rng = np.random.default_rng(4)
        x = np.concatenate(around + [rng.integers(info.min, info.max, 100_000), [info.min, info.max, 0]])
        x = np.clip(x, info.min, info.max).astype(np.int32)
    got = _widener(dtype)(x)
    assert got.dtype == np.float32 and got.view(np.uint32).tobytes() == to_f32(x).view(np.uint32).tobytes()


@pytest.mark.parametrize("src_dt", ["f32", "bf16", "f16", "fp8e4", "i8", "u8", "i32", "i64"])
@pytest.mark.parametrize("dst_dt", ["f32", "bf16", "fp8e5", "i8", "i32", "i64", "u32"])
def test_data_movement_conversion_is_the_device_cast(src_dt, dst_dt):
    """_converter (dma_copy, copy, gather, transpose32 conversions) equals numerics.cast over random bits
    (the same dtype is a bit copy, NaN payloads kept, by design)."""
    if src_dt == dst_dt:
        assert _converter(src_dt, dst_dt)(np.zeros(3, np_dtype(src_dt))).dtype == np_dtype(src_dt)
        return
    rng = np.random.default_rng(3)
    size = np_dtype(src_dt).itemsize
    raw = rng.integers(0, 256, 4096 * size, dtype=np.uint8)
    x = raw.view(np_dtype(src_dt)).reshape(64, 64)
    with np.errstate(all="ignore"):
        got, want = _converter(src_dt, dst_dt)(x), cast(x, dst_dt)
        small = np.clip(x.astype(np.float64), -100, 100).astype(np_dtype(src_dt)) if src_dt[0] in "iu" else x
        got_small, want_small = _converter(src_dt, dst_dt)(small), cast(small, dst_dt)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert got_small.tobytes() == want_small.tobytes()


def test_window_sum_reuses_the_views_of_an_array_whose_contents_change():
    """A pooling sum run on the same in-place view (new contents each run) and on another view of the
    same layout in turn gives np.sum's bits every time (the element views it keeps see new data)."""
    rng = np.random.default_rng(17)
    buf = np.zeros((2, 64, 4096), np.float32)
    views = [np.lib.stride_tricks.as_strided(buf[k], (64, 2, 16, 2, 2), (4096 * 4, 256, 8, 128, 4)) for k in (0, 1)]
    ws = WindowSum(views[0].shape, 2)
    for trial in range(6):
        buf[...] = rng.standard_normal(buf.shape) * np.exp2(rng.integers(-20, 20, buf.shape))
        buf.reshape(-1)[rng.random(buf.size) < 0.1] = -0.0
        for x in (views[trial % 2], views[0]):
            want = np.sum(x, axis=(3, 4), dtype=np.float32)
            assert ws(x).view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
    assert ws._plans[views[0].strides] is not None  # the elementwise plan, not np.sum, answered


@pytest.mark.parametrize("op", ["max", "min"])
def test_windowed_extreme_reuses_the_views_of_an_array_whose_contents_change(op):
    """The same in-place view with new contents each run (with -0 and NaN on some runs), and another
    view of the same layout in turn: each result is np.max / np.min's bits or left to numpy."""
    rng = np.random.default_rng(23)
    buf = np.zeros((2, 64, 4096), np.float32)
    views = [np.lib.stride_tricks.as_strided(buf[k], (64, 2, 16, 2, 2), (4096 * 4, 256, 8, 128, 4)) for k in (0, 1)]
    fast = _windowed_extreme(op, 2, views[0].shape)
    ref_fn = np.max if op == "max" else np.min
    answered = 0
    for trial in range(8):
        buf[...] = np.maximum(rng.standard_normal(buf.shape), 0.0) * (1 if trial % 2 else -1)
        if trial % 4 == 1:
            buf.reshape(-1)[rng.random(buf.size) < 0.2] = -0.0
        if trial % 4 == 3:
            buf.reshape(-1)[rng.integers(0, buf.size, 3)] = np.nan
        for x in (views[trial % 2], views[0]):
            got, want = fast(x), ref_fn(x, axis=(3, 4))
            if got is None:
                assert np.isnan(want).any() or (want == 0).any()
                continue
            answered += 1
            assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
    assert answered >= 8
