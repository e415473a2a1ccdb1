"""Fast table-mode activations (device_model.activation_table) give the same f32 bits as the table
evaluation they replaced, kept here as it was (numerics' own _lookup/_gate/_table_eval may change; this
must not): every bf16 and f16 bit pattern, millions of seeded f32 values near knots, table ends, ±0,
subnormals, NaN and ±inf, for several segment counts; NaN results included (table mode gives the
canonical NaN for every NaN input, so whole arrays are compared bit for bit)."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from device_model import activation_table, jit
from device_model import numerics as nm

F32, F64 = np.float32, np.float64
FUNCS = activation_table.FUNCS
DOMAIN_FUNCS = activation_table.DOMAIN_FUNCS  # log, sqrt, rsqrt, reciprocal: mantissa lookups
DESTINATIONS = ("f32", "bf16", "f16", "fp8e4", "fp8e5")


# --- the reference: numerics' table evaluation before activation_table ---------------------------

def _old_lookup(func, segments, u):
    spec = nm.TABLES[func]
    table = nm._table(func, segments)
    clamped = np.empty(np.shape(u), F64)
    np.clip(u, spec.lo, spec.hi, out=clamped)
    np.copyto(clamped, spec.lo, where=np.isnan(clamped))
    u = clamped
    t = (u - spec.lo) * (segments / (spec.hi - spec.lo))
    knot = np.minimum(np.floor(t), segments - 1)
    i = knot.astype(np.intp)
    frac = t - knot
    return np.take(table, i) + frac * np.take(nm._table_steps(func, segments), i)


def _old_gate(func, segments, x):
    minus_a = -np.abs(x)
    left = np.where(minus_a < nm.TABLES[func].lo, 0.0, _old_lookup(func, segments, minus_a))
    return np.where(x > 0, 1.0 - left, left)


def _old_table_eval(func, x, segments):
    if func in ("sigmoid", "silu", "gelu", "gelu_tanh"):
        g = _old_gate(func, segments, x)
        return g if func == "sigmoid" else np.where(np.isneginf(x), -0.0, x * g)
    if func in ("tanh", "erf"):
        a = np.abs(x)
        return np.copysign(np.where(a > nm.TABLES[func].hi, 1.0, _old_lookup(func, segments, a)), x)
    if func == "softplus":
        a = np.abs(x)
        return np.maximum(x, 0.0) + np.where(a > nm.TABLES[func].hi, 0.0, _old_lookup(func, segments, a))
    assert func == "exp"
    t = np.multiply(x, 1.0 / math.log(2.0), out=np.empty(np.shape(x), F64))
    np.clip(t, -400.0, 400.0, out=t)
    np.copyto(t, 0.0, where=np.isnan(t))
    k = np.floor(t)
    return np.ldexp(_old_lookup(func, segments, t - k), k.astype(np.int32))


def _old_mantissa_exponent(a, lo_mantissa):
    m, e = np.frexp(np.where(a > 0, a, 1.0))
    small = m < lo_mantissa
    while np.any(small):
        m = np.where(small, 2 * m, m)
        e = np.where(small, e - 1, e)
        small = m < lo_mantissa
    return m, e


def _old_domain_eval(func, x, segments):
    if func == "log":
        m, e = _old_mantissa_exponent(x, math.sqrt(0.5))
        y = e * math.log(2.0) + (m - 1.0) * _old_lookup(func, segments, m)
        return np.where((x > 0) & np.isfinite(x), y, np.log(x))
    if func in ("sqrt", "rsqrt"):
        m, e = _old_mantissa_exponent(x, 1.0)
        odd = (e % 2) != 0
        m, e = np.where(odd, 2 * m, m), np.where(odd, e - 1, e)
        half = (e // 2) if func == "sqrt" else -(e // 2)
        y = np.ldexp(_old_lookup(func, segments, m), half.astype(np.int32))
        special = np.sqrt(x) if func == "sqrt" else 1.0 / np.sqrt(x)
        return np.where((x > 0) & np.isfinite(x), y, special)
    assert func == "reciprocal"
    m, e = _old_mantissa_exponent(np.abs(x), 1.0)
    y = np.copysign(np.ldexp(_old_lookup(func, segments, m), (-e).astype(np.int32)), x)
    return np.where((x != 0) & np.isfinite(x), y, 1.0 / x)


def old_table_activation(func: str, x32: np.ndarray, segments: int) -> np.ndarray:
    """activation(func, x32, "table", segments) as it was (one block of numerics._activation_f32)."""
    with np.errstate(all="ignore"):
        xd = np.asarray(x32, F32).astype(F64)
        y = (_old_domain_eval if func in DOMAIN_FUNCS else _old_table_eval)(func, xd, segments)
        nan = np.isnan(xd)
        if nan.any():
            y = np.where(nan, np.nan, y)
        return np.asarray(y, dtype=F64).astype(F32)


@pytest.fixture(autouse=True, params=["compiled", "passes"])
def evaluation(request, monkeypatch):
    """Every test runs through the compiled loops (the default where numba is installed) and through
    the numpy passes (XPU_JIT=0, or no numba)."""
    if request.param == "compiled":
        monkeypatch.delenv("XPU_JIT", raising=False)
        fresh = {kind: jit.Kernel(k.py_func, k.signature, k.helpers) for kind, k in activation_table.LOOPS.items()}
        monkeypatch.setattr(activation_table, "LOOPS", fresh)
        for kind, kernel in fresh.items():
            assert kernel.compiled() is not None, (kind, kernel.unavailable)
    else:
        monkeypatch.setattr(activation_table, "compiled_loop", lambda kind: None)
    return request.param


# --- inputs ---------------------------------------------------------------------------------------

def every_pattern(dtype) -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(dtype).astype(F32)


def _neighbours(v: np.ndarray, reach: int) -> np.ndarray:
    """The f32 values within `reach` ulps of each of v (f32), both signs."""
    v = np.asarray(v, F32)
    steps = [v]
    up = down = v
    for _ in range(reach):
        with np.errstate(over="ignore"):  # f32 max steps to inf: wanted
            up, down = np.nextafter(up, F32(np.inf)), np.nextafter(down, F32(-np.inf))
        steps += [up, down]
    near = np.concatenate(steps)
    return np.concatenate([near, -near])


def knot_inputs(func: str, segments: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """f32 inputs whose table coordinate lands on or next to a knot, the table's ends and the
    function's cut-offs, plus random values over and beyond the table's range."""
    spec = nm.TABLES[func]
    j = rng.integers(0, segments + 1, n)
    if func == "exp":  # x = (k + j / segments) * ln 2: knots of the fraction for every exponent k
        k = rng.integers(-160, 130, n)
        knots = ((k + j / segments) * math.log(2.0)).astype(F32)
        ends = np.array([400.0 * math.log(2.0), 88.72, 89.0, 103.0, 104.0, 128 * math.log(2.0),
                         -149 * math.log(2.0), -126 * math.log(2.0)], F32)
        spread = rng.uniform(-300.0, 300.0, n).astype(F32)
    else:
        knots = (spec.lo + (spec.hi - spec.lo) * (j / segments)).astype(F32)
        ends = np.array([spec.lo, spec.hi, 2 * spec.lo - spec.hi, 2 * spec.hi - spec.lo], F32)
        spread = rng.uniform(3 * spec.lo - 2 * spec.hi, 3 * spec.hi - 2 * spec.lo, n).astype(F32)
    ulps = rng.integers(-3, 4, n).astype(F32)
    jittered = knots + ulps * np.spacing(knots)
    return np.concatenate([knots, -knots, jittered, -jittered, _neighbours(ends, 64), spread])


def hard_f32(seed: int, n: int) -> np.ndarray:
    """Every exponent (random bit patterns, so NaN payloads and ±inf too), normal-ish values, tiny and
    subnormal values, and the special values."""
    rng = np.random.default_rng(seed)
    return np.concatenate([
        rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(F32),
        (rng.standard_normal(n) * 4).astype(F32),
        rng.uniform(-20.0, 20.0, n).astype(F32),
        (np.exp(rng.uniform(-104.0, 5.0, n // 4)) * rng.choice([-1.0, 1.0], n // 4)).astype(F32),
        _neighbours(np.array([0.0, 1e-45, 1.17549435e-38, 3.4028235e38], F32), 16),
        np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0], F32),
        np.array([0x7F800001, 0xFF800001, 0x7FC00001, 0xFFFFFFFF], np.uint32).view(F32),  # NaN payloads
    ])


def assert_same_bits(func: str, x32: np.ndarray, segments: int) -> None:
    new = nm.activation(func, x32, "table", segments)
    old = old_table_activation(func, x32, segments)
    assert new.shape == old.shape and new.dtype == F32
    new, old = new.reshape(-1), old.reshape(-1)
    differ = np.flatnonzero(new.view(np.uint32) != old.view(np.uint32))
    flat = np.asarray(x32).reshape(-1)
    assert differ.size == 0, (func, segments, flat[differ[:5]], new[differ[:5]], old[differ[:5]])
    for dst in DESTINATIONS:
        a, b = nm.cast(new, dst), nm.cast(old, dst)
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (func, dst)


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("segments", [256, 37, 1])
def test_every_16_bit_pattern_gives_the_old_bits(func, dtype, segments):
    assert_same_bits(func, every_pattern(dtype), segments)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("segments", [256, 100, 3])
def test_values_at_knots_and_table_ends_give_the_old_bits(func, segments):
    rng = np.random.default_rng(FUNCS.index(func) * 10 + segments)
    assert_same_bits(func, knot_inputs(func, segments, rng, 200_000), segments)


@pytest.mark.parametrize("func", FUNCS)
def test_millions_of_random_f32_give_the_old_bits(func):
    assert_same_bits(func, hard_f32(seed=FUNCS.index(func) + 41, n=400_000), 256)


@pytest.mark.parametrize("func", DOMAIN_FUNCS)
@pytest.mark.parametrize("segments", [256, 37, 1])
def test_mantissa_lookups_give_the_old_bits_on_16_bit_patterns_knots_and_random_f32(func, segments):
    rng = np.random.default_rng(DOMAIN_FUNCS.index(func) * 10 + segments)
    spec = nm.TABLES[func]
    # mantissas on and next to the knots, times powers of two of both parities, both signs
    m = spec.lo + (spec.hi - spec.lo) * (rng.integers(0, segments + 1, 20_000) / segments)
    scaled = (m * np.ldexp(1.0, rng.integers(-130, 126, m.size))).astype(F32)
    knots = np.concatenate([scaled, -scaled, _neighbours(scaled[:2000], 2)])
    for x in (every_pattern(ml_dtypes.bfloat16), every_pattern(np.float16), knots, hard_f32(seed=segments, n=100_000)):
        assert_same_bits(func, x, segments)


def test_mantissa_lookups_on_tiles_and_scalars():
    rng = np.random.default_rng(61)
    tile = (rng.random((128, 1)) * 8).astype(F32)
    tile[3, 0], tile[9, 0], tile[17, 0] = 0.0, -2.0, np.nan
    for func in DOMAIN_FUNCS:
        assert_same_bits(func, tile, 256)
        assert_same_bits(func, tile[::2], 256)
        for value in (0.5, 3.0, 0, -1.0):
            got = nm.activation(func, value, "table")
            want = old_table_activation(func, nm.to_f32(value), 256)
            assert got.shape == () and got.reshape(1).view(np.uint32) == want.reshape(1).view(np.uint32)


def test_the_presets_segment_counts_are_covered():
    from device_model.arch import load_arch, preset_names
    for name in preset_names():
        assert int(load_arch(name).raw["act_table"]["segments"]) in (256, 37, 1), name


@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 0, 2), (7,), (128, 513)])
def test_shapes_strides_and_blocks(shape):
    rng = np.random.default_rng(59)
    x = (rng.standard_normal(shape) * 8).astype(F32)
    for func in FUNCS:
        assert_same_bits(func, x, 256)
    # a NaN / inf / beyond-table element in only some blocks of a strided view
    big = (rng.standard_normal((64, 1200)) * 3).astype(F32)
    big[5, 7], big[60, 900], big[30, 30] = np.nan, -np.inf, 1e6
    for func in FUNCS:
        assert_same_bits(func, big[:, ::3], 256)
        assert_same_bits(func, big.T, 37)


def test_python_scalars_and_non_f32_inputs():
    for func in FUNCS:
        for value in (0.5, -3.0, 0, 100):
            got = nm.activation(func, value, "table")
            want = old_table_activation(func, nm.to_f32(value), 256)
            assert got.shape == () and got.reshape(1).view(np.uint32) == want.reshape(1).view(np.uint32)
        x16 = every_pattern(np.float16).astype(np.float16)
        assert np.array_equal(nm.activation(func, x16, "table").view(np.uint32),
                              old_table_activation(func, x16.astype(F32), 256).view(np.uint32))


def test_every_nan_input_gives_the_canonical_nan():
    x = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC00000, 0x7FFFFFFF], np.uint32).view(F32)
    for func in FUNCS:
        got = nm.activation(func, x, "table")
        assert (got.view(np.uint32) == np.float32(np.nan).view(np.uint32)).all(), func


def test_table_scratch_is_per_thread_so_concurrent_machines_get_their_own_results():
    """Table-mode scratch buffers are shared by the calls of one thread (executors of a TUI worker and
    of the main thread may run at once): two threads on different inputs each get the lone result."""
    import threading

    from device_model.numerics import activation_function

    rng = np.random.default_rng(17)
    sigmoid = activation_function("sigmoid", "table")
    inputs = [(rng.standard_normal(20000) * 6).astype(np.float32) for _ in range(2)]
    expect = [sigmoid(x) for x in inputs]
    failures: list[int] = []

    def hammer(i: int) -> None:
        for _ in range(30):
            if not np.array_equal(sigmoid(inputs[i]).view(np.uint32), expect[i].view(np.uint32)):
                failures.append(i)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
