"""The fast exact-mode activations give the same f32 bits as the float64 formulas they replaced.

The reference formulas are copied here as they were before the fast paths (numerics._EXACT may change;
these must not), evaluated on the whole array and rounded once to f32, like the old activation().
Since every destination dtype is rounded from that f32 value, equal f32 bits mean equal bits in every
destination dtype; the test still rounds to each one to show it."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import scipy.special as sp

from device_model import activation_fast as fast
from device_model import numerics as nm

F32 = np.float32


def _neg_inf_to_zero(x, y):
    return np.where(np.isneginf(x), -0.0, y)


def _old_gelu_tanh(x):
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    return _neg_inf_to_zero(x, x * sp.expit(2.0 * u))


OLD = {
    "gelu": lambda x: _neg_inf_to_zero(x, 0.5 * x * sp.erfc(-x / math.sqrt(2.0))),
    "gelu_tanh": _old_gelu_tanh,
    "sigmoid": sp.expit,
    "silu": lambda x: _neg_inf_to_zero(x, x * sp.expit(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "exp": np.exp,
    "tanh": np.tanh,
    "log": np.log,
    "sqrt": np.sqrt,
}
DESTINATIONS = ("f32", "bf16", "f16", "fp8e4", "fp8e5")
ONE_UFUNC = {"exp", "tanh", "log", "sqrt"}  # the fast path runs the formula's own ufunc: NaN bits included


def old_activation(func: str, x32: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(OLD[func](x32.astype(np.float64)), dtype=np.float64).astype(F32)


def expected_nan_bits(func: str, x32_nan: np.ndarray) -> np.ndarray:
    """The bits the fast path gives for NaN inputs: the formula's own for a single ufunc, else the input's
    payload quietened (a formula's NaN payload depends on the element's position in its array: numpy's
    remainder loops swap a multiply's operands)."""
    if func in ONE_UFUNC:
        return old_activation(func, x32_nan).view(np.uint32)
    with np.errstate(invalid="ignore"):
        return x32_nan.astype(np.float64).astype(F32).view(np.uint32)


def every_pattern(dtype) -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(dtype).astype(F32)


def hard_f32(seed: int, n: int) -> np.ndarray:
    """Random f32 bit patterns (every exponent), values spread over each function's fast domain and
    its edges, tiny and subnormal values, and f32 neighbours of the domain bounds."""
    rng = np.random.default_rng(seed)
    bounds = np.array([fast.GELU_LO, fast.GELU_TANH_LO, fast.SIGMOID_LO, fast.SOFTPLUS_LO,
                       0.0, 5.5, 8.0, 16.0, 88.0, 745.0, 2.0 ** -56, 2.0 ** -125, 2.0 ** -126, 1.0, 2.0], F32)
    near_bounds = np.concatenate([bounds + k * np.spacing(bounds) for k in range(-64, 65)])
    return np.concatenate([
        rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(F32),
        rng.uniform(-10.0, 10.0, n).astype(F32),
        (rng.standard_normal(n) * 3).astype(F32),
        rng.uniform(-100.0, 100.0, n // 4).astype(F32),
        (np.exp(rng.uniform(-104.0, 5.0, n // 4)) * rng.choice([-1.0, 1.0], n // 4)).astype(F32),
        near_bounds, -near_bounds,
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17549435e-38, -1.17549435e-38,
                  3.4028235e38, -3.4028235e38], F32),
    ])


def assert_same_bits(func: str, x32: np.ndarray) -> None:
    new = nm.activation(func, x32)
    old = old_activation(func, x32)
    nan = np.isnan(x32)
    assert np.isnan(new[nan]).all() and np.isnan(old[nan]).all()
    assert np.array_equal(new[nan].view(np.uint32), expected_nan_bits(func, x32[nan]))
    keep = ~nan
    differ = np.flatnonzero(new[keep].view(np.uint32) != old[keep].view(np.uint32))
    assert differ.size == 0, (func, x32[keep][differ[:5]], new[keep][differ[:5]], old[keep][differ[:5]])
    for dst in DESTINATIONS:
        a, b = nm.cast(new[keep], dst), nm.cast(old[keep], dst)
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (func, dst)


@pytest.mark.parametrize("func", sorted(OLD))
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=["bf16", "f16"])
def test_every_16_bit_pattern_gives_the_old_bits(func, dtype):
    assert_same_bits(func, every_pattern(dtype))


@pytest.mark.parametrize("func", sorted(OLD))
def test_millions_of_random_f32_give_the_old_bits(func):
    assert_same_bits(func, hard_f32(seed=sorted(OLD).index(func) + 11, n=1_000_000))


def test_near_midpoint_results_take_the_reference_path():
    # the window test flags exactly the float64 values within rel_err * |y| of an f32 midpoint
    mid = np.float64(1.0) + 2.0 ** -24  # halfway between 1 and the next f32
    ulp = 2.0 ** -52
    rel = 2.0 ** -40
    window = math.ceil(rel * 2.0 ** 53)
    y = np.array([mid, mid + window * ulp, mid - window * ulp, mid + (window + 1) * ulp,
                  mid - (window + 1) * ulp, 1.0, 1.5, -mid])
    assert fast.near_f32_midpoint(y, rel).tolist() == [True, True, True, False, False, False, False, True]


def test_an_approximation_at_its_error_bound_still_gives_the_reference_bits():
    # approx = reference * (1 ± 2^-34): with rel_err covering that, the window test must send every
    # element that the error could round differently to the reference
    x = hard_f32(seed=3, n=200_000)
    x = x[~(np.abs(x) < 2.0 ** -100)]  # results must be normal f32 where approx is not exact
    keep = ~np.isnan(x)
    ref = OLD["gelu"]
    sign = np.where(np.arange(x.size) % 2 == 0, 1.0, -1.0)

    def off_by(v):
        return ref(v) * (1.0 + sign[: v.size] * 2.0 ** -34)

    old = old_activation("gelu", x)[keep].view(np.uint32)
    with np.errstate(all="ignore"):
        right = fast.certified_f32(x, off_by, ref, 2.0 ** -33, -10.0, np.inf)
        too_narrow = fast.certified_f32(x, off_by, ref, 2.0 ** -50, -10.0, np.inf)
    assert np.array_equal(right[keep].view(np.uint32), old)
    assert not np.array_equal(too_narrow[keep].view(np.uint32), old)  # the check is what makes it exact


@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 0, 2), (7,), (128, 513)])
def test_shapes_and_strides(shape):
    rng = np.random.default_rng(17)
    x = (rng.standard_normal(shape) * 4).astype(F32)
    for func in OLD:
        got = nm.activation(func, x)
        assert got.shape == x.shape and got.dtype == F32
        assert np.array_equal(got.view(np.uint32), old_activation(func, x).view(np.uint32))
    strided = (rng.standard_normal((64, 300)) * 4).astype(F32)[:, ::3]
    assert np.array_equal(nm.activation("gelu", strided).view(np.uint32),
                          old_activation("gelu", strided).view(np.uint32))


def _exp_table_as_first_written(x, segments):
    t = np.clip(np.nan_to_num(x) * (1.0 / math.log(2.0)), -400.0, 400.0)
    k = np.floor(t)
    return np.ldexp(nm._lookup("exp", segments, t - k), k.astype(np.int32))


def test_table_exp_is_unchanged_bit_for_bit():
    rng = np.random.default_rng(23)
    x = np.concatenate([every_pattern(ml_dtypes.bfloat16), every_pattern(np.float16),
                        rng.integers(0, 1 << 32, 300_000, dtype=np.uint64).astype(np.uint32).view(F32),
                        (rng.standard_normal(300_000) * 30).astype(F32),
                        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3.4028235e38, -3.4028235e38], F32)])
    with np.errstate(invalid="ignore"):  # signalling NaN patterns
        xd = x.astype(np.float64)
    for segments in (256, 37):
        with np.errstate(all="ignore"):
            ref = np.where(np.isnan(xd), np.nan, _exp_table_as_first_written(xd, segments)).astype(F32)
        got = nm.activation("exp", x, "table", segments)
        assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes(), segments


@pytest.mark.parametrize("mode", ["exact", "table"])
def test_blocked_evaluation_gives_the_whole_array_bits(mode, monkeypatch):
    """activation() runs large arrays block by block; every function is elementwise, so the bits are
    those of one pass over the whole array (odd sizes, strided input, NaN/inf included)."""
    rng = np.random.default_rng(29)
    x = np.concatenate([every_pattern(ml_dtypes.bfloat16), (rng.standard_normal(40_000) * 20).astype(F32),
                        rng.integers(0, 1 << 32, 2_999, dtype=np.uint64).astype(np.uint32).view(F32)])
    x = x.reshape(-1, 7)[:, ::2]  # not contiguous, and not a multiple of the block
    for func in nm.ACT_FUNCS:
        got = nm.activation(func, x, mode, alpha=0.3)
        with monkeypatch.context() as m:
            m.setattr(nm, "_ACT_BLOCK", 1 << 30)
            m.setattr(nm, "_FAST_EXACT", {})
            nm._bound_activation.cache_clear()  # bound functions captured the fast path
            whole = nm.activation(func, x, mode, alpha=0.3)
        nm._bound_activation.cache_clear()
        fast_payload = func in OLD and func not in ONE_UFUNC and mode == "exact"
        keep = ~np.isnan(x) if fast_payload else np.ones(x.shape, bool)  # fast paths' NaN payloads
        assert got.shape == x.shape
        assert np.array_equal(got[keep].view(np.uint32), whole[keep].view(np.uint32)), func


def _table_rows_and_values(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every f32 input of the given GELU table rows, and the table's float64 value y for each."""
    shift = fast._GELU_SHIFT
    t = np.arange(1 << shift, dtype=np.int64)
    bits = (rows[:, None].astype(np.int64) << shift) | t[None, :]
    x = bits.astype(np.uint32).view(F32).reshape(rows.size, -1)
    c = fast._gelu_table()[rows]
    tt = t.astype(np.float64)
    y = ((c[:, 3:4] * tt + c[:, 2:3]) * tt + c[:, 1:2]) * tt + c[:, 0:1]
    return x, y


def test_gelu_table_rows_keep_the_offset_and_bound_they_promise():
    """The check rests on this: on a poly row, y is beyond the reference's float64 value (away from zero)
    by at most 2 * GELU_TABLE_EPS * |reference| -- here on every input of 400 rows spread over the table."""
    table = fast._gelu_table()
    poly = np.flatnonzero((table[:, 0] != fast._GELU_FLAG) & (table[:, 2] != 0.0))
    rows = poly[np.linspace(0, poly.size - 1, 400).astype(np.int64)]
    x, y = _table_rows_and_values(rows)
    ref = OLD["gelu"](x.astype(np.float64))
    assert np.all(np.abs(y) >= np.abs(ref))
    assert np.all(np.abs(y - ref) <= 2 * fast.GELU_TABLE_EPS * np.abs(ref))
    assert x.min() < -3.9 and x.max() > 6.0 and np.abs(x).min() < 1e-16  # spread over the poly domain


def test_gelu_exact_rows_give_the_reference_value_itself():
    table = fast._gelu_table()
    exact = np.flatnonzero((table[:, 0] != fast._GELU_FLAG) & (table[:, 2] == 0.0))
    rows = exact[np.linspace(0, exact.size - 1, 300).astype(np.int64)]
    x, y = _table_rows_and_values(rows)
    ref = OLD["gelu"](x.astype(np.float64))
    assert np.array_equal(y.astype(F32).view(np.uint32), ref.astype(F32).view(np.uint32))


def test_gelu_awkward_values_in_a_large_array():
    rng = np.random.default_rng(41)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 2.0 ** -126, -(2.0 ** -126),
                        3.4028235e38, -3.4028235e38, -4.0, -16.0, 8.0, -8.0, 2.0 ** -56, -(2.0 ** -56)], F32)
    finite = special[np.isfinite(special)]
    with np.errstate(over="ignore", invalid="ignore"):  # f32 max + its spacing: inf - inf
        edges = np.concatenate([finite + k * np.spacing(finite) for k in range(-8, 9)])
    binades = np.ldexp(1.0, np.arange(-149, 128)).astype(F32)
    x = np.concatenate([special, edges, binades, -binades, np.nextafter(binades, F32(0)),
                        -np.nextafter(binades, F32(0)), (rng.standard_normal(8000) * 3).astype(F32)])
    x = rng.permutation(x)
    assert x.size >= 4096  # the table path, not the small-array reference
    assert_same_bits("gelu", x)


def test_gelu_check_is_what_makes_the_table_exact(monkeypatch):
    """Without the check (nothing flagged), the table's offset values round differently from the
    reference for some inputs: the check is doing the work."""
    x = hard_f32(seed=43, n=300_000)
    x = x[np.isfinite(x)]
    old = old_activation("gelu", x).view(np.uint32)
    assert np.array_equal(nm.activation("gelu", x).view(np.uint32), old)
    monkeypatch.setattr(fast, "_GELU_CHECK_HALF", -1)  # no value matches: nothing is flagged
    with np.errstate(all="ignore"):
        unchecked = fast.gelu_f32(x, OLD["gelu"]).view(np.uint32)
    assert not np.array_equal(unchecked, old)
