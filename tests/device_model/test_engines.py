"""Functional semantics of every opcode (device_model.engines) against independent numpy references.

Exact equality wherever the semantics are exact. Tolerances, where used: float matmul sums in f32
in BLAS order, so it is checked against a float64 reference with the f32 summation error bound
K·2⁻²⁴·Σ|aᵢbᵢ|; f32 sums (accum, reduce, preduce) likewise against n·2⁻²⁴·Σ|xᵢ| (any order).
"""
from __future__ import annotations

import contextlib
import copy

import ml_dtypes
import numpy as np
import pytest

from device_model.arch import arch_from_dict, load_arch
from device_model.dtypes import np_dtype
from device_model.engines import ExecError, build_executor, instr_bytes, instr_flops
from device_model.isa import AP, OPCODES, Instr
from device_model.memory import Memory

ARCH = load_arch()
BF16 = ml_dtypes.bfloat16
ENGINE = {"dma_copy": "dma0", "matmul": "pe", "transpose": "pe", "activate": "act", "preduce": "pool",
          "pbroadcast": "pool", "gather": "pool", "transpose32": "dve", "nop": "dve"}


def _dims(free: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    dims, stride = [], 1
    for c in reversed(free):
        dims.append((stride, c))
        stride *= c
    return tuple(reversed(dims))


def sb(off: int, parts: int, *free: int, dtype: str = "f32", pstart: int = 0, space: str = "sbuf") -> AP:
    """A contiguous [parts, *free] pattern in sbuf (or psum)."""
    return AP(space, off, _dims(free), dtype, pstart, parts)


def ps(off: int, parts: int, *free: int, dtype: str = "f32") -> AP:
    return sb(off, parts, *free, dtype=dtype, space="psum")


def hb(off: int, *shape: int, dtype: str = "f32") -> AP:
    return AP("hbm", off, _dims(shape), dtype)


@pytest.fixture
def mem() -> Memory:
    return Memory(ARCH, 1 << 20)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def put(mem: Memory, ap: AP, values) -> np.ndarray:
    """Store `values` (converted with numpy/ml_dtypes) at `ap`; returns what was stored."""
    arr = np.asarray(values).astype(np_dtype(ap.dtype)).reshape(ap.shape)
    mem.view(ap)[...] = arr
    return arr


def get(mem: Memory, ap: AP) -> np.ndarray:
    return mem.view(ap).copy()


def run(mem: Memory, opcode: str, operands: dict, arch=ARCH, **attrs) -> None:
    build_executor(Instr(ENGINE.get(opcode, "dve"), opcode, operands, attrs), mem, arch)()


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def bits(x: np.ndarray) -> np.ndarray:
    return x.view(f"u{x.dtype.itemsize}")


def test_every_opcode_has_semantics(mem):
    # host_call is performed by the machine's host runner, everything else by engines
    for op in OPCODES:
        if op == "host_call":
            continue
        ins = Instr(OPCODES[op].engines[0], op, {}, {})
        with pytest.raises(ExecError, match="missing operand") if OPCODES[op].required else contextlib.nullcontext():
            build_executor(ins, mem, ARCH)()


# ---- DMA and dtype edge cases ------------------------------------------------------------------

def test_dma_same_dtype_is_bit_exact_and_reshapes_in_c_order(mem, rng):
    raw = rng.integers(0, 2**32, size=(128, 64), dtype=np.uint64).astype(np.uint32)
    raw[0, :3] = [0x7FC00123, 0xFFC0BEEF, 0x7F800001]  # NaNs with payloads (one signalling)
    src = hb(0, 128, 64)
    mem.view(src).view(np.uint32)[...] = raw
    dst = sb(64, 128, 8, 8)
    run(mem, "dma_copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(bits(get(mem, dst)).reshape(128, 64), raw)
    # different shapes, same element count: C order on both sides
    flat = hb(1 << 16, 8192)
    run(mem, "dma_copy", {"dst": flat, "src": src})
    np.testing.assert_array_equal(bits(get(mem, flat)), raw.reshape(-1))


def test_dma_f32_to_bf16_rounds_ties_to_even(mem):
    one = 1.0
    values = f32([one + 2**-8,          # halfway between 1 and 1+2^-7: even is 1
                  one + 3 * 2**-8,      # halfway between 1+2^-7 and 1+2^-6: even is 1+2^-6
                  one + 2**-8 + 2**-20,  # just above halfway: up
                  -(one + 2**-8),
                  3.4e38,                # above halfway from bf16 max to 2^128: inf
                  np.float32(2**-130)])  # subnormal: kept in bf16 (same exponent range)
    src, dst = hb(0, 6), hb(64, 6, dtype="bf16")
    put(mem, src, values)
    run(mem, "dma_copy", {"dst": dst, "src": src})
    got = get(mem, dst).astype(np.float64)
    np.testing.assert_array_equal(got, [1.0, 1 + 2**-6, 1 + 2**-7, -1.0, np.inf, 2**-130])


def test_dma_f32_to_fp8e4_saturates(mem):
    src, dst = hb(0, 7), hb(64, 7, dtype="fp8e4")
    put(mem, src, [1000.0, -1e30, np.inf, -np.inf, 300.0, 0.3, np.nan])
    run(mem, "dma_copy", {"dst": dst, "src": src})
    got = get(mem, dst).astype(np.float64)
    # e4m3: step 32 in [256, 448]; 300 -> 288; 0.3 = 1.2·2^-2 -> 1.25·2^-2 (3 mantissa bits)
    np.testing.assert_array_equal(got[:6], [448.0, -448.0, 448.0, -448.0, 288.0, 0.3125])
    assert np.isnan(got[6])


def test_dma_casts_to_integers_with_half_to_even_and_saturation(mem):
    src, dst = hb(0, 10), hb(64, 10, dtype="i8")
    put(mem, src, [2.5, 3.5, -2.5, -3.5, 127.5, 126.5, -200.0, 1e10, np.nan, -0.4])
    run(mem, "dma_copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), [2, 4, -2, -4, 127, 126, -128, 127, 0, 0])
    isrc, idst = hb(128, 4, dtype="i32"), hb(256, 4, dtype="i8")
    put(mem, isrc, [300, -300, 5, -128])
    run(mem, "dma_copy", {"dst": idst, "src": isrc})
    np.testing.assert_array_equal(get(mem, idst), [127, -128, 5, -128])
    big, bdst = hb(512, 2, dtype="i32"), hb(640, 2, dtype="f32")
    put(mem, big, [2**24 + 1, 2**24 + 3])  # ties: to even f32 (2^24 and 2^24 + 4)
    run(mem, "dma_copy", {"dst": bdst, "src": big})
    np.testing.assert_array_equal(get(mem, bdst), f32([2**24, 2**24 + 4]))


@pytest.mark.parametrize("dtype", ["fp8e4", "fp8e5", "f16", "bf16"])
def test_widening_every_bit_pattern_to_f32_is_exact(mem, dtype):
    size = np_dtype(dtype).itemsize
    patterns = np.arange(1 << (8 * size), dtype=f"u{size}")
    src, dst = hb(0, patterns.size, dtype=dtype), hb(1 << 18, patterns.size)
    mem.view(src).view(patterns.dtype)[...] = patterns
    run(mem, "dma_copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(bits(get(mem, dst)), bits(patterns.view(np_dtype(dtype)).astype(np.float32)))


def test_dma_stride_zero_source_broadcasts_one_row_to_every_partition(mem, rng):
    row = put(mem, hb(0, 64), rng.standard_normal(64))
    src = AP("hbm", 0, ((0, 128), (1, 64)), "f32")
    dst = sb(0, 128, 64, dtype="bf16")
    run(mem, "dma_copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), np.broadcast_to(row.astype(BF16), (128, 64)))


def test_strided_multi_dim_source_reads_the_named_elements(mem, rng):
    whole = put(mem, sb(0, 16, 8, 12), rng.standard_normal((16, 8, 12)))
    # every other row of the 8, columns 2..9, partitions 4..11
    src = AP("sbuf", 2 * 4, ((24, 4), (1, 8)), "f32", 4, 8)
    dst = sb(4096, 8, 32)
    run(mem, "copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), whole[4:12, ::2, 2:10].reshape(8, 32))


# ---- PE ------------------------------------------------------------------------------------------

def _f32_sum_check(got, x, axis):
    """|got - exact| <= n·2⁻²⁴·Σ|x|: the error bound of any f32 summation order."""
    x64 = x.astype(np.float64)
    n = x64.size // np.sum(x64, axis=axis).size
    bound = n * 2.0**-24 * np.abs(x64).sum(axis=axis)
    assert np.all(np.abs(got.astype(np.float64) - x64.sum(axis=axis)) <= bound)


def _matmul_bound_check(got, a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64.T @ b64
    bound = a.shape[0] * 2.0**-24 * (np.abs(a64).T @ np.abs(b64)) + 1e-30
    assert np.all(np.abs(got.astype(np.float64) - ref) <= bound)


@pytest.mark.parametrize("stat_dt,mov_dt", [("bf16", "bf16"), ("fp8e4", "fp8e5"), ("f16", "f32")])
def test_float_matmul_is_stat_transposed_times_mov_in_f32(mem, stat_dt, mov_dt, rng):
    stat, mov, dst = sb(0, 128, 64, dtype=stat_dt), sb(4096, 128, 256, dtype=mov_dt), ps(0, 64, 256)
    a = put(mem, stat, rng.standard_normal((128, 64)) * 4)
    b = put(mem, mov, rng.standard_normal((128, 256)) * 4)
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=1)
    got = get(mem, dst)
    assert got.dtype == np.float32
    _matmul_bound_check(got, a, b)
    # the result is not rounded to the input dtype
    assert not np.array_equal(got, got.astype(np_dtype(stat_dt)).astype(np.float32))


def test_matmul_accumulates_in_f32_when_start_is_0(mem, rng):
    stat, mov = sb(0, 128, 32, dtype="bf16"), sb(4096, 128, 128, dtype="bf16")
    acc, alone = ps(0, 32, 128), ps(2048, 32, 128)
    put(mem, stat, rng.standard_normal((128, 32)))
    put(mem, mov, rng.standard_normal((128, 128)))
    run(mem, "matmul", {"dst": acc, "stat": stat, "mov": mov}, start=1)
    first = get(mem, acc)
    a2 = put(mem, stat, rng.standard_normal((128, 32)) * 1e-3)
    b2 = put(mem, mov, rng.standard_normal((128, 128)))
    run(mem, "matmul", {"dst": acc, "stat": stat, "mov": mov}, start=0)
    run(mem, "matmul", {"dst": alone, "stat": stat, "mov": mov}, start=1)
    second = get(mem, alone)
    _matmul_bound_check(second, a2, b2)
    np.testing.assert_array_equal(get(mem, acc), first + second)  # one f32 add per element


def test_matmul_flattens_multi_dim_free_axes(mem, rng):
    stat, mov, dst = sb(0, 16, 2, 4, dtype="bf16"), sb(512, 16, 3, 5, dtype="bf16"), ps(0, 8, 15)
    a = put(mem, stat, rng.integers(-8, 8, (16, 2, 4)))
    b = put(mem, mov, rng.integers(-8, 8, (16, 3, 5)))
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=1)
    ref = a.astype(np.float64).reshape(16, 8).T @ b.astype(np.float64).reshape(16, 15)
    np.testing.assert_array_equal(get(mem, dst), ref)  # small integers: exact


def test_matmul_into_a_gapped_psum_pattern(mem, rng):
    stat, mov = sb(0, 16, 8, dtype="bf16"), sb(512, 16, 16, dtype="bf16")
    dst = AP("psum", 0, ((32, 2), (1, 8)), "f32", 0, 8)  # two runs of 8 with a gap: not a plain [8,16]
    a = put(mem, stat, rng.integers(-8, 8, (16, 8)))
    b = put(mem, mov, rng.integers(-8, 8, (16, 16)))
    ref = (a.astype(np.float64).T @ b.astype(np.float64)).reshape(8, 2, 8)
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=1)
    np.testing.assert_array_equal(get(mem, dst), ref)
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=0)
    np.testing.assert_array_equal(get(mem, dst), 2 * ref)
    assert np.all(get(mem, ps(32, 8, 8)) == 0)  # the gap is untouched


def test_int8_matmul_is_exact_and_wraps_int32(mem, rng):
    stat, mov, dst = sb(0, 128, 32, dtype="i8"), sb(4096, 128, 64, dtype="i8"), ps(0, 32, 64, dtype="i32")
    a = put(mem, stat, rng.integers(-128, 128, (128, 32)))
    b = put(mem, mov, rng.integers(-128, 128, (128, 64)))
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=1)
    np.testing.assert_array_equal(get(mem, dst), a.astype(np.int64).T @ b.astype(np.int64))
    # overflow: every product is (-128)·(-128)·128 = 2^21 on top of a near-max accumulator
    put(mem, stat, np.full((128, 32), -128))
    put(mem, mov, np.full((128, 64), -128))
    start = put(mem, dst, rng.integers(2**31 - 2**21, 2**31, (32, 64)))
    run(mem, "matmul", {"dst": dst, "stat": stat, "mov": mov}, start=0)
    total = start.astype(np.int64) + 2**21
    wrapped = (total + 2**31) % 2**32 - 2**31
    assert np.all(total > 2**31 - 1) and np.all(wrapped < 0)
    np.testing.assert_array_equal(get(mem, dst), wrapped)


@pytest.mark.parametrize("case,operands,expect", [
    ("M > cols", {"stat": sb(0, 64, 200, dtype="bf16"), "mov": sb(4096, 64, 16, dtype="bf16"),
                      "dst": ps(0, 128, 16)}, "M=200"),
    ("N > max_n", {"stat": sb(0, 64, 8, dtype="bf16"), "mov": sb(4096, 64, 600, dtype="bf16"),
                       "dst": ps(0, 8, 600)}, "N=600"),
    ("K mismatch", {"stat": sb(0, 64, 8, dtype="bf16"), "mov": sb(4096, 32, 16, dtype="bf16"),
                        "dst": ps(0, 8, 16)}, "K=64"),
    ("dst bf16", {"stat": sb(0, 64, 8, dtype="bf16"), "mov": sb(4096, 64, 16, dtype="bf16"),
                      "dst": ps(0, 8, 16, dtype="bf16")}, "dst"),
    ("int8 into f32", {"stat": sb(0, 64, 8, dtype="i8"), "mov": sb(4096, 64, 16, dtype="i8"),
                           "dst": ps(0, 8, 16)}, "i32"),
    ("float and int", {"stat": sb(0, 64, 8, dtype="i8"), "mov": sb(4096, 64, 16, dtype="bf16"),
                           "dst": ps(0, 8, 16, dtype="i32")}, "cannot mix float and int"),
    ("u8 input", {"stat": sb(0, 64, 8, dtype="u8"), "mov": sb(4096, 64, 16, dtype="u8"),
                      "dst": ps(0, 8, 16, dtype="i32")}, "dtype u8"),
    ("dst shape", {"stat": sb(0, 64, 8, dtype="bf16"), "mov": sb(4096, 64, 16, dtype="bf16"),
                       "dst": ps(0, 8, 15)}, "expected \\[M=8, N=16\\]"),
    ("out of bounds", {"stat": sb(0, 64, 8, dtype="bf16"), "mov": sb(4096, 64, 16, dtype="bf16"),
                           "dst": ps(16384 - 32, 8, 16)}, "out of bounds"),
])
def test_static_matmul_errors_raise_only_when_executed(mem, case, operands, expect):
    ex = build_executor(Instr("pe", "matmul", operands, {"start": 1}), mem, ARCH)  # no raise here
    with pytest.raises(ExecError, match=expect) as err:
        ex()
    assert str(err.value).startswith("matmul:")


def test_k_larger_than_pe_rows_raises_at_execution(mem):
    raw = copy.deepcopy(ARCH.raw)
    raw["pe"]["rows"] = 64
    small = arch_from_dict(raw)
    ins = Instr("pe", "matmul", {"dst": ps(0, 8, 16), "stat": sb(0, 128, 8, dtype="bf16"),
                                 "mov": sb(4096, 128, 16, dtype="bf16")})
    ex = build_executor(ins, mem, small)
    with pytest.raises(ExecError, match=r"K=128 rows .*pe.rows is 64"):
        ex()


def test_transpose_is_exact(mem, rng):
    src, dst = sb(0, 64, 96, dtype="bf16"), ps(0, 96, 64)
    a = put(mem, src, rng.standard_normal((64, 96)))
    run(mem, "transpose", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), a.astype(np.float32).T)
    isrc, idst = sb(8192, 32, 16, dtype="i8"), ps(8192, 16, 32, dtype="i32")
    ia = put(mem, isrc, rng.integers(-128, 128, (32, 16)))
    run(mem, "transpose", {"dst": idst, "src": isrc})
    np.testing.assert_array_equal(get(mem, idst), ia.T.astype(np.int32))
    ex = build_executor(Instr("pe", "transpose", {"dst": ps(0, 96, 63), "src": src}), mem, ARCH)
    with pytest.raises(ExecError, match="transpose"):
        ex()


# ---- ACT -----------------------------------------------------------------------------------------

def test_activate_per_partition_scale_bias_and_accum(mem, rng):
    src, dst = sb(0, 128, 4, 16, dtype="bf16"), sb(1024, 128, 4, 16, dtype="bf16")
    scale_ap, bias_ap, accum = sb(2048, 128, 1), sb(2052, 128, 1), sb(2056, 128, 1)
    x = put(mem, src, rng.standard_normal((128, 4, 16)))
    s = put(mem, scale_ap, rng.uniform(0.1, 1.0, (128, 1)))
    b = put(mem, bias_ap, rng.standard_normal((128, 1)))
    run(mem, "activate", {"dst": dst, "src": src, "scale_ap": scale_ap, "bias_ap": bias_ap,
                          "accum": accum}, func="exp", mode="exact")
    t = x.astype(np.float32) * s[:, :, None] + b[:, :, None]  # f32 multiply, then f32 add
    y = np.exp(t.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(get(mem, dst), y.astype(BF16))
    # accum sums y before dst's rounding to bf16
    _f32_sum_check(get(mem, accum)[:, 0], y, axis=(1, 2))
    assert not np.allclose(get(mem, accum)[:, 0], get(mem, dst).astype(np.float64).sum(axis=(1, 2)),
                           rtol=1e-6, atol=0)


def test_activate_scalar_scale_bias_round_after_each_op(mem):
    src, dst = sb(0, 2, 1), sb(64, 2, 1)
    u = 1 + 2**-12
    put(mem, src, [[u], [-3.0]])
    # u·u = 1 + 2^-11 + 2^-24 rounds (tie, to even) to 1 + 2^-11 in f32; a fused multiply-add would
    # keep the 2^-24
    run(mem, "activate", {"dst": dst, "src": src}, func="identity", scale=u, bias=-(1 + 2**-11))
    got = get(mem, dst)
    assert got[0, 0] == 0.0
    run(mem, "activate", {"dst": dst, "src": src}, func="leaky_relu", scale=2.0, bias=1.0, alpha=0.5)
    np.testing.assert_array_equal(get(mem, dst), f32([[3 + 2**-11], [0.5 * (2 * -3.0 + 1)]]))


def test_activate_table_mode_uses_the_presets_segments(mem):
    src, dst = sb(0, 4, 256), sb(2048, 4, 256)
    x = put(mem, src, np.linspace(-6, 6, 1024).reshape(4, 256))
    run(mem, "activate", {"dst": dst, "src": src}, func="sigmoid", mode="exact")
    exact = get(mem, dst)
    np.testing.assert_allclose(exact, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
    run(mem, "activate", {"dst": dst, "src": src}, func="sigmoid", mode="table")
    table = get(mem, dst)
    assert not np.array_equal(table, exact)
    assert np.max(np.abs(table - exact)) < 1e-4  # 256 segments on [-16, 0]: error ~ h²/8·max|f''|
    raw = copy.deepcopy(ARCH.raw)
    raw["act_table"]["segments"] = 4
    run(mem, "activate", {"dst": dst, "src": src}, arch=arch_from_dict(raw), func="sigmoid", mode="table")
    assert np.max(np.abs(get(mem, dst) - exact)) > 1e-3


def test_activate_shape_and_per_partition_errors_raise_on_execution(mem):
    bad = [{"dst": sb(0, 8, 16), "src": sb(64, 8, 15)},
           {"dst": sb(0, 8, 16), "src": sb(64, 8, 16), "scale_ap": sb(256, 8, 2)},
           {"dst": sb(0, 8, 16), "src": sb(64, 8, 16), "accum": sb(256, 4, 1)}]
    for operands in bad:
        ex = build_executor(Instr("act", "activate", operands), mem, ARCH)
        with pytest.raises(ExecError, match="^activate: "):
            ex()



@pytest.mark.parametrize("attrs, message", [({"func": "nope"}, "unknown activation function"),
                                            ({"func": "sigmoid", "mode": "fuzzy"}, "unknown activation mode"),
                                            ({"func": "leaky_relu", "alpha": float("inf")}, "alpha must be")])
def test_activate_bad_function_arguments_raise_on_execution_not_at_load(mem, attrs, message):
    """The function is bound when the executor is built; a bad one still fails only when reached."""
    ex = build_executor(Instr("act", "activate", {"dst": sb(0, 8, 16), "src": sb(64, 8, 16)}, attrs), mem, ARCH)
    with pytest.raises(ExecError, match=f"^activate: {message}"):
        ex()

# ---- DVE / POOL ----------------------------------------------------------------------------------

_F32_REF = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
    "min": np.minimum, "pow": np.power, "mod": np.fmod,
    "eq": lambda a, b: (a == b), "ne": lambda a, b: (a != b), "gt": lambda a, b: (a > b),
    "ge": lambda a, b: (a >= b), "lt": lambda a, b: (a < b), "le": lambda a, b: (a <= b),
    "and": lambda a, b: (a != 0) & (b != 0), "or": lambda a, b: (a != 0) | (b != 0),
    "xor": lambda a, b: (a != 0) ^ (b != 0), "bypass": lambda a, b: a,
}


@pytest.mark.parametrize("op", sorted(_F32_REF))
def test_tensor_tensor_float_ops(mem, op, rng):
    a_ap, b_ap, dst = sb(0, 32, 48, dtype="bf16"), sb(256, 32, 48), sb(512, 32, 48)
    a = put(mem, a_ap, rng.uniform(0.5, 4, (32, 48)) * rng.choice([-1, 1, 0], (32, 48)))
    b = put(mem, b_ap, rng.uniform(0.5, 3, (32, 48)) * rng.choice([-1, 1, 0], (32, 48)))
    if op == "pow":
        a = put(mem, a_ap, np.abs(a) + 0.5)
    b[0, :4] = a[0, :4]  # some equal pairs for the compares
    put(mem, b_ap, b)
    run(mem, "tensor_tensor", {"dst": dst, "a": a_ap, "b": b_ap}, op=op)
    with np.errstate(all="ignore"):
        ref = f32(_F32_REF[op](a.astype(np.float32), b))
    np.testing.assert_array_equal(get(mem, dst), ref)


def test_tensor_tensor_integer_ops_are_exact_and_saturate(mem):
    a_ap, b_ap = sb(0, 4, 6, dtype="i32"), sb(64, 4, 6, dtype="i32")
    a = put(mem, a_ap, [[-7, 7, -7, 7, 2**30 + 1, 100]] * 4)
    put(mem, b_ap, [[2, 2, -2, -2, 1, 3]] * 4)
    out = sb(128, 4, 6, dtype="i32")
    run(mem, "tensor_tensor", {"dst": out, "a": a_ap, "b": b_ap}, op="div")
    np.testing.assert_array_equal(get(mem, out)[0], [-3, 3, 3, -3, 2**30 + 1, 33])  # toward zero
    run(mem, "tensor_tensor", {"dst": out, "a": a_ap, "b": b_ap}, op="mod")
    np.testing.assert_array_equal(get(mem, out)[0], [-1, 1, -1, 1, 0, 1])  # sign of the dividend
    run(mem, "tensor_tensor", {"dst": out, "a": a_ap, "b": b_ap}, op="add")
    np.testing.assert_array_equal(get(mem, out)[0], a[0] + [2, 2, -2, -2, 1, 3])  # 2^30+2 exact
    small = sb(256, 4, 6, dtype="i8")
    run(mem, "tensor_tensor", {"dst": small, "a": a_ap, "b": b_ap}, op="mul")
    np.testing.assert_array_equal(get(mem, small)[0], [-14, 14, 14, -14, 127, 127])
    run(mem, "tensor_tensor", {"dst": out, "a": a_ap, "b": b_ap}, op="pow")
    np.testing.assert_array_equal(get(mem, out)[0], [49, 49, 0, 0, 2**30 + 1, 10**6])
    put(mem, b_ap, np.zeros((4, 6)))
    ex = build_executor(Instr("dve", "tensor_tensor", {"dst": out, "a": a_ap, "b": b_ap}, {"op": "div"}),
                        mem, ARCH)
    with pytest.raises(ExecError, match="division by zero"):
        ex()


def test_tensor_tensor_stride_zero_operand_broadcasts_a_column(mem, rng):
    a_ap = sb(0, 16, 32)
    col_ap = sb(512, 16, 1)
    a = put(mem, a_ap, rng.standard_normal((16, 32)))
    col = put(mem, col_ap, rng.standard_normal((16, 1)))
    dst = sb(1024, 16, 32)
    run(mem, "tensor_tensor", {"dst": dst, "a": a_ap, "b": AP("sbuf", 512, ((0, 32),), "f32", 0, 16)},
        op="sub")
    np.testing.assert_array_equal(get(mem, dst), a - col)


def test_tensor_tensor_shape_mismatch_raises_on_execution(mem):
    ex = build_executor(Instr("dve", "tensor_tensor", {"dst": sb(0, 4, 8), "a": sb(64, 4, 8),
                                                       "b": sb(128, 4, 7)}), mem, ARCH)
    with pytest.raises(ExecError, match="operand b .* 4 rows x 7 free elements, expected 4 x 8"):
        ex()


def test_tensor_scalar_float_with_per_partition_and_reversed_operands(mem, rng):
    src, dst, s1 = sb(0, 8, 10, dtype="bf16"), sb(64, 8, 10), sb(128, 8, 1)
    x = put(mem, src, rng.standard_normal((8, 10)))
    v = put(mem, s1, rng.standard_normal((8, 1)))
    run(mem, "tensor_scalar", {"dst": dst, "src": src, "s1_ap": s1},
        op0="sub", s0=2.5, rev0=1, op1="mul", s1=99.0)
    np.testing.assert_array_equal(get(mem, dst), (np.float32(2.5) - x.astype(np.float32)) * v)
    run(mem, "tensor_scalar", {"dst": dst, "src": src}, op0="max", s0=0.0, op1="bypass", rev1=1)
    np.testing.assert_array_equal(get(mem, dst), np.maximum(x.astype(np.float32), 0))
    run(mem, "tensor_scalar", {"dst": dst, "src": src}, op0="div", s0=0.1)
    np.testing.assert_array_equal(get(mem, dst), x.astype(np.float32) / np.float32(0.1))


def test_tensor_scalar_integer_index_arithmetic_is_exact(mem, rng):
    src, dst = sb(0, 4, 5, dtype="i32"), sb(64, 4, 5, dtype="i32")
    x = put(mem, src, rng.integers(0, 2**20, (4, 5)))
    run(mem, "tensor_scalar", {"dst": dst, "src": src}, op0="mul", s0=1000, op1="add", s1=7.0)
    np.testing.assert_array_equal(get(mem, dst), x.astype(np.int64) * 1000 + 7)  # beyond 2^24
    run(mem, "tensor_scalar", {"dst": dst, "src": src}, op0="div", s0=3)
    np.testing.assert_array_equal(get(mem, dst), x // 3)
    per = sb(128, 4, 1, dtype="i64")
    v = put(mem, per, [[2**40], [-3], [0], [7]])
    run(mem, "tensor_scalar", {"dst": sb(256, 4, 5, dtype="i64"), "src": src, "s1_ap": per},
        op0="bypass", op1="add")
    np.testing.assert_array_equal(get(mem, sb(256, 4, 5, dtype="i64")), x + v)
    # a fractional scalar takes the f32 path: 7 * 0.5 = 3.5 rounds half to even
    put(mem, src, np.full((4, 5), 7))
    run(mem, "tensor_scalar", {"dst": dst, "src": src}, op0="mul", s0=0.5)
    np.testing.assert_array_equal(get(mem, dst), np.full((4, 5), 4))
    ex = build_executor(Instr("dve", "tensor_scalar", {"dst": dst, "src": src}, {"op0": "mod", "s0": 0}),
                        mem, ARCH)
    with pytest.raises(ExecError, match="division by zero"):
        ex()


def test_select_is_bit_exact_for_one_dtype_and_casts_otherwise(mem, rng):
    pred, a_ap, b_ap, dst = sb(0, 8, 16, dtype="u8"), sb(64, 8, 16), sb(192, 8, 16), sb(320, 8, 16)
    p = put(mem, pred, rng.integers(0, 3, (8, 16)))
    a = put(mem, a_ap, rng.standard_normal((8, 16)))
    b = put(mem, b_ap, rng.standard_normal((8, 16)))
    mem.view(a_ap).view(np.uint32)[0, 0] = 0x7FC00ABC
    p[0, 0] = 1
    put(mem, pred, p)
    a = get(mem, a_ap)
    run(mem, "select", {"dst": dst, "pred": pred, "a": a_ap, "b": b_ap})
    np.testing.assert_array_equal(bits(get(mem, dst)), bits(np.where(p != 0, a, b)))
    half = sb(448, 8, 16, dtype="bf16")
    run(mem, "select", {"dst": half, "pred": pred, "a": a_ap, "b": b_ap})
    np.testing.assert_array_equal(get(mem, half)[1:], np.where(p != 0, a, b)[1:].astype(BF16))


def test_reduce_innermost_axes(mem, rng):
    src = sb(0, 16, 4, 8)
    x = put(mem, src, rng.standard_normal((16, 4, 8)))
    d1 = sb(256, 16, 4)
    run(mem, "reduce", {"dst": d1, "src": src}, op="sum", axes=1)
    _f32_sum_check(get(mem, d1), x, axis=2)
    d2 = sb(320, 16, 1)  # trailing 1 accepted
    run(mem, "reduce", {"dst": d2, "src": src}, op="max", axes=2)
    np.testing.assert_array_equal(get(mem, d2)[:, 0], x.max(axis=(1, 2)))
    run(mem, "reduce", {"dst": d2, "src": src}, op="min", axes=2)
    np.testing.assert_array_equal(get(mem, d2)[:, 0], x.min(axis=(1, 2)))
    isrc, idst = sb(512, 4, 64, dtype="i32"), sb(1024, 4, 1, dtype="i32")
    ix = put(mem, isrc, rng.integers(2**24, 2**25, (4, 64)))
    run(mem, "reduce", {"dst": idst, "src": isrc}, op="sum")
    np.testing.assert_array_equal(get(mem, idst)[:, 0], ix.astype(np.int64).sum(axis=1))  # exact
    ex = build_executor(Instr("dve", "reduce", {"dst": d2, "src": src}, {"axes": 3}), mem, ARCH)
    with pytest.raises(ExecError, match="axes=3"):
        ex()


def test_copy_into_a_strided_multi_dim_destination(mem, rng):
    src = sb(0, 8, 32)
    x = put(mem, src, rng.standard_normal((8, 32)))
    dst = AP("sbuf", 1024, ((24, 4), (1, 8)), "bf16", 2, 8)  # rows of 8 at stride 24
    run(mem, "copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), x.reshape(8, 4, 8).astype(BF16))
    gap = AP("sbuf", 1024 + 16, ((24, 4), (1, 8)), "bf16", 2, 8)
    assert np.all(get(mem, gap).astype(np.float32) == 0)


def test_copy_casts_and_memset_fills(mem, rng):
    src, dst = sb(0, 8, 4, 4), sb(256, 8, 16, dtype="bf16")
    x = put(mem, src, rng.standard_normal((8, 4, 4)))
    run(mem, "copy", {"dst": dst, "src": src})
    np.testing.assert_array_equal(get(mem, dst), x.reshape(8, 16).astype(BF16))
    m8 = sb(512, 8, 5, dtype="i8")
    run(mem, "memset", {"dst": m8}, value=3.5)
    np.testing.assert_array_equal(get(mem, m8), np.full((8, 5), 4))
    run(mem, "memset", {"dst": m8}, value=-1000)
    np.testing.assert_array_equal(get(mem, m8), np.full((8, 5), -128))
    mb = sb(640, 8, 5, dtype="bf16")
    run(mem, "memset", {"dst": mb}, value=1 + 2**-8)
    np.testing.assert_array_equal(get(mem, mb).astype(np.float32), np.ones((8, 5)))
    mi = sb(768, 8, 2, dtype="i64")
    run(mem, "memset", {"dst": mi}, value=2**60 + 1)
    assert np.all(get(mem, mi) == 2**60 + 1)


def test_iota(mem):
    dst = sb(0, 6, 2, 4, dtype="i32")
    run(mem, "iota", {"dst": dst}, base=5, pstep=100, step=3)
    p = np.arange(6)[:, None, None]
    i = np.arange(8).reshape(2, 4)[None]
    np.testing.assert_array_equal(get(mem, dst), 5 + 100 * p + 3 * i)
    big = sb(256, 2, 3, dtype="i64")
    run(mem, "iota", {"dst": big}, base=2**60, pstep=1, step=2**40)
    np.testing.assert_array_equal(get(mem, big), [[2**60, 2**60 + 2**40, 2**60 + 2**41],
                                                  [2**60 + 1, 2**60 + 2**40 + 1, 2**60 + 2**41 + 1]])
    shifted = sb(256, 4, 3, dtype="i16", pstart=60)  # p counts from the pattern's first partition
    run(mem, "iota", {"dst": shifted}, base=-1, pstep=10, step=1)
    np.testing.assert_array_equal(get(mem, shifted), -1 + 10 * np.arange(4)[:, None] + np.arange(3))
    fl = sb(512, 3, 4)
    run(mem, "iota", {"dst": fl}, base=0.5, pstep=0.25, step=-1.5)
    np.testing.assert_array_equal(get(mem, fl), 0.5 + 0.25 * np.arange(3)[:, None] - 1.5 * np.arange(4))


def test_transpose32_swaps_inside_each_block(mem, rng):
    src, dst = sb(0, 64, 2, 48), sb(1024, 64, 96, dtype="bf16")
    x = put(mem, src, rng.standard_normal((64, 2, 48)))
    run(mem, "transpose32", {"dst": dst, "src": src})
    flat, got = x.reshape(64, 96), get(mem, dst)
    for a in range(2):
        for b in range(3):
            block = flat[32 * a:32 * a + 32, 32 * b:32 * b + 32]
            np.testing.assert_array_equal(got[32 * a:32 * a + 32, 32 * b:32 * b + 32], block.T.astype(BF16))
    ex = build_executor(Instr("dve", "transpose32", {"dst": sb(0, 48, 32), "src": sb(256, 48, 32)}),
                        mem, ARCH)
    with pytest.raises(ExecError, match="multiples of 32"):
        ex()


def test_stats_mean_and_population_variance(mem, rng):
    src, dst = sb(0, 16, 8, 32, dtype="bf16"), sb(1024, 16, 2)
    x = put(mem, src, rng.standard_normal((16, 8, 32)) * 3 + 1000)  # large mean: needs a careful variance
    run(mem, "stats", {"dst": dst, "src": src})
    x64 = x.astype(np.float64).reshape(16, -1)
    mean = x64.mean(axis=1)
    var = ((x64 - mean[:, None]) ** 2).mean(axis=1)
    got = get(mem, dst)
    np.testing.assert_allclose(got[:, 0], mean.astype(np.float32), rtol=1e-7)
    np.testing.assert_allclose(got[:, 1], var.astype(np.float32), rtol=1e-6)


def test_preduce_and_pbroadcast(mem, rng):
    src = sb(0, 64, 40)
    x = put(mem, src, rng.standard_normal((64, 40)))
    dst = sb(256, 1, 40)
    run(mem, "preduce", {"dst": dst, "src": src}, op="sum")
    _f32_sum_check(get(mem, dst)[0], x, axis=0)
    for op, ref in (("max", x.max(axis=0)), ("min", x.min(axis=0))):
        run(mem, "preduce", {"dst": dst, "src": src}, op=op)
        np.testing.assert_array_equal(get(mem, dst)[0], ref)
    isrc, idst = sb(1024, 64, 8, dtype="i32"), sb(1024, 1, 8, dtype="i32", pstart=64)
    ix = put(mem, isrc, rng.integers(2**24, 2**24 + 1000, (64, 8)))  # odd values: inexact in f32
    run(mem, "preduce", {"dst": idst, "src": isrc}, op="sum")
    np.testing.assert_array_equal(get(mem, idst)[0], ix.astype(np.int64).sum(axis=0))  # exact
    row = sb(512, 1, 5, 8, pstart=3)
    r = put(mem, row, rng.standard_normal((1, 5, 8)))
    out = sb(1024, 128, 40, dtype="bf16")
    run(mem, "pbroadcast", {"dst": out, "src": row})
    np.testing.assert_array_equal(get(mem, out), np.broadcast_to(r.reshape(1, 40).astype(BF16), (128, 40)))


def test_gather_rows_from_hbm_and_sbuf_tables(mem, rng):
    table_ap = hb(0, 100, 16)
    table = put(mem, table_ap, rng.standard_normal((100, 16)))
    idx_ap, dst = sb(0, 32, 1, dtype="i32"), sb(64, 32, 4, 4, dtype="bf16")
    ids = put(mem, idx_ap, rng.integers(0, 100, (32, 1)))
    run(mem, "gather", {"dst": dst, "table": table_ap, "idx": idx_ap})
    np.testing.assert_array_equal(get(mem, dst).reshape(32, 16), table[ids[:, 0]].astype(BF16))
    stab = sb(1024, 20, 8, dtype="u8")  # sbuf table: partitions are rows
    st = put(mem, stab, rng.integers(0, 255, (20, 8)))
    sidx, sdst = sb(2048, 5, 1, dtype="u32"), sb(2056, 5, 8, dtype="u8")
    si = put(mem, sidx, [[19], [0], [7], [7], [3]])
    run(mem, "gather", {"dst": sdst, "table": stab, "idx": sidx})
    np.testing.assert_array_equal(get(mem, sdst), st[si[:, 0]])


@pytest.mark.parametrize("bad", [100, -1])
def test_gather_index_out_of_range_names_value_and_rows(mem, bad):
    table_ap, idx_ap, dst = hb(0, 100, 16), sb(0, 4, 1, dtype="i32"), sb(64, 4, 16)
    put(mem, idx_ap, [[1], [2], [bad], [3]])
    ex = build_executor(Instr("pool", "gather", {"dst": dst, "table": table_ap, "idx": idx_ap}), mem, ARCH)
    with pytest.raises(ExecError, match=rf"idx value {bad} .*100 rows"):
        ex()


def test_gather_needs_integer_indices(mem):
    ex = build_executor(Instr("pool", "gather", {"dst": sb(64, 4, 16), "table": hb(0, 100, 16),
                                                 "idx": sb(0, 4, 1)}), mem, ARCH)
    with pytest.raises(ExecError, match="integer"):
        ex()


def test_out_of_bounds_pattern_raises_on_execution_with_its_spelling(mem):
    ap = AP("sbuf", 0x2FF80, ((1, 64),), "f32", 0, 128)
    ex = build_executor(Instr("dve", "copy", {"dst": sb(0, 128, 64), "src": ap}), mem, ARCH)
    with pytest.raises(ExecError, match=r"copy: operand src out of bounds: sbuf\[0:\+128\]@0x2ff80"):
        ex()


def test_nop_does_nothing(mem):
    before = [mem.hbm.copy(), mem.sbuf.copy(), mem.psum.copy()]
    build_executor(Instr("pe", "nop"), mem, ARCH)()
    assert all(np.array_equal(a, b) for a, b in zip(before, [mem.hbm, mem.sbuf, mem.psum]))


def test_flops_and_bytes_for_the_profiler():
    mm = Instr("pe", "matmul", {"dst": ps(0, 64, 256), "stat": sb(0, 128, 64, dtype="bf16"),
                                "mov": sb(0, 128, 256, dtype="bf16")})
    assert instr_flops(mm) == 2 * 128 * 64 * 256 and instr_bytes(mm) == 0
    act = Instr("act", "activate", {"dst": sb(0, 128, 512), "src": sb(0, 128, 512)})
    assert instr_flops(act) == 128 * 512
    dma = Instr("dma3", "dma_copy", {"dst": sb(0, 128, 512, dtype="bf16"), "src": hb(0, 128, 512)})
    assert instr_flops(dma) == 0 and instr_bytes(dma) == 128 * 512 * 2
    assert instr_flops(Instr("dve", "nop")) == 0
