"""Device numerics: casts (rounding, saturation, NaN), the f32 datapath, activation functions."""
from __future__ import annotations

import math
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from device_model import numerics as nm
from device_model.dtypes import np_dtype
from device_model.isa import ACT_FUNCS

DOC = Path(__file__).resolve().parents[2] / "docs" / "numerics.md"

# (significand bits incl. the implicit one, min normal exponent, max finite) of each small float
FORMATS = {
    "bf16": (8, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
    "f16": (11, -14, 65504.0),
    "fp8e4": (4, -6, 448.0),
    "fp8e5": (3, -14, 57344.0),
}


def reference_round(v: np.ndarray, fmt: str) -> np.ndarray:
    """Round-to-nearest-even of exact float64 values into `fmt`, written from the definition."""
    p, emin, fmax = FORMATS[fmt]
    out = np.empty_like(v)
    for i, x in enumerate(v):
        if math.isnan(x):
            out[i] = math.nan
            continue
        if math.isinf(x) or x == 0:
            r = x
        else:
            e = max(math.frexp(x)[1] - 1, emin)  # exponent of the leading bit, clamped to subnormals
            q = math.ldexp(1.0, e - (p - 1))
            r = float(np.rint(x / q)) * q
        if abs(r) > fmax:
            saturating = fmt.startswith("fp8") and (fmt == "fp8e4" or not math.isinf(x))
            r = math.copysign(fmax if saturating else math.inf, x)
        out[i] = r
    return out


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        a, b = np.asarray(a).astype(np.float64), np.asarray(b).astype(np.float64)
    same_nan = np.isnan(a) == np.isnan(b)
    same = (a == b) & (np.signbit(a) == np.signbit(b))
    return bool(np.all(same_nan & (same | np.isnan(a))))


# --- float casts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_cast_matches_round_to_nearest_even_definition(fmt):
    rng = np.random.default_rng(2458)
    dt = np_dtype(fmt)
    # every finite value of the format, its midpoints to the next value, and one f32 ulp either side
    if dt.itemsize == 1:
        grid = np.arange(256, dtype=np.uint8).view(dt).astype(np.float32)
    else:
        grid = rng.integers(0, 1 << 16, 4000, dtype=np.uint16).view(dt).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    mids = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)  # exact in f32
    near = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))])
    randoms = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    randoms = randoms[~np.isnan(randoms)]  # NaN payloads: the NaN case is in `specials`
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 3.4e38], np.float32)
    x = np.concatenate([grid, near, randoms, specials])
    got = nm.cast(x, fmt)
    assert got.dtype == dt
    assert bits_equal(got, reference_round(x.astype(np.float64), fmt))


def test_bf16_and_f16_ties_round_to_even():
    bf = nm.cast(np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 256 + 1, 256 + 3], np.float32), "bf16")
    assert bf.astype(np.float64).tolist() == [1.0, 1 + 2**-6, -1.0, 256.0, 260.0]
    h = nm.cast(np.array([1 + 2**-11, 1 + 3 * 2**-11, 2049, 2051], np.float32), "f16")
    assert h.astype(np.float64).tolist() == [1.0, 1 + 2**-9, 2048.0, 2052.0]


def test_bf16_and_f16_overflow_to_inf():
    assert nm.cast(np.array([65519.0, 65520.0, -1e6], np.float32), "f16").tolist() == [65504.0, np.inf, -np.inf]
    bf = nm.cast(np.array([np.finfo(np.float32).max, -np.inf], np.float32), "bf16").astype(np.float32)
    assert bf.tolist() == [np.inf, -np.inf]
    assert np.isnan(nm.cast(np.array([np.nan], np.float32), "bf16").astype(np.float32))[0]


def test_fp8_saturates_and_keeps_nan():
    x = np.array([448, 460, 464, 1e6, np.inf, -np.inf, -1e6, np.nan, 1.0625, 1.1875, 2**-10, 3 * 2**-10],
                 np.float32)
    e4 = nm.cast(x, "fp8e4").astype(np.float64)
    assert e4[:7].tolist() == [448, 448, 448, 448, 448, -448, -448]
    assert np.isnan(e4[7])
    assert e4[8:].tolist() == [1.0, 1.25, 0.0, 2**-8]  # ties to even, also among subnormals
    y = np.array([57344, 61440, 1e9, np.inf, -np.inf, -1e9, np.nan], np.float32)
    e5 = nm.cast(y, "fp8e5").astype(np.float64)
    assert e5[:6].tolist() == [57344, 57344, 57344, np.inf, -np.inf, -57344]
    assert np.isnan(e5[6])


def test_float64_input_is_made_f32_first():
    # the device holds f32: a float64 value is rounded to f32, then once to the target
    v = np.array([1 + 2**-8 + 2**-30])
    assert nm.cast(v, "f32")[0] == np.float32(1 + 2**-8)
    assert nm.cast(v, "bf16").astype(np.float64)[0] == 1.0
    assert bits_equal(nm.cast(v, "bf16"), nm.cast(nm.cast(v, "f32"), "bf16"))


def test_small_float_sources_widen_exactly():
    src = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
    assert bits_equal(nm.to_f32(src), src.astype(np.float32))
    b = np.array([1.5, -3.25, 1e38], ml_dtypes.bfloat16)
    assert bits_equal(nm.cast(b, "fp8e4"), nm.cast(b.astype(np.float32), "fp8e4"))
    assert nm.to_f32(b).dtype == np.float32


# --- integer casts ---------------------------------------------------------------------------------

def test_float_to_int8_half_even_saturating_nan_zero():
    x = np.array([2.5, 3.5, -2.5, -0.5, 0.5, 1.5, 127.4, 127.5, 300, -300, -128.5, np.inf, -np.inf, np.nan],
                 np.float32)
    assert nm.cast(x, "i8").tolist() == [2, 4, -2, 0, 0, 2, 127, 127, 127, -128, -128, 127, -128, 0]
    assert nm.cast(np.array([-1.0, 255.5, 254.5, np.nan], np.float32), "u8").tolist() == [0, 255, 254, 0]


@pytest.mark.parametrize("dtype", ["i16", "i32", "u32", "i64"])
def test_float_to_wide_ints_saturate(dtype):
    info = np.iinfo(np_dtype(dtype))
    x = np.array([np.inf, -np.inf, np.nan, 2.0**70, -(2.0**70), 6.5, -7.5], np.float32)
    got = nm.cast(x, dtype)
    assert got.dtype == np_dtype(dtype)
    assert got.tolist() == [info.max, info.min, 0, info.max, info.min, 6, max(-8, info.min)]
    if dtype == "i64":
        assert nm.cast(np.array([-(2.0**63)], np.float32), "i64")[0] == info.min
        assert nm.cast(np.array([2.0**62], np.float32), "i64")[0] == 2**62


def test_int_to_int_saturates():
    assert nm.cast(np.array([300, -300, 5], np.int32), "i8").tolist() == [127, -128, 5]
    assert nm.cast(np.array([-1, 256], np.int64), "u8").tolist() == [0, 255]
    assert nm.cast(np.array([2**32 - 1], np.uint32), "i32").tolist() == [2**31 - 1]
    assert nm.cast(np.array([-(2**63)], np.int64), "i32").tolist() == [-(2**31)]
    assert nm.cast(np.array([2**64 - 1], np.uint64), "i64").tolist() == [2**63 - 1]
    assert nm.cast(np.array([-5], np.int64), "u32").tolist() == [0]
    assert nm.cast(np.array([True, False]), "i8").tolist() == [1, 0]
    assert nm.cast(np.array([True, False]), "bf16").astype(np.float32).tolist() == [1.0, 0.0]


def test_int_to_float_rounds_once_from_the_integer():
    # via f32 this would round twice: 2^24+2^16+1 -> 2^24+2^16 (a bf16 tie) -> 2^24
    assert nm.cast(np.array([2**24 + 2**16 + 1], np.int32), "bf16").astype(np.float64)[0] == 2**24 + 2**17
    # via f64 this would round twice: 2^60+2^36+1 -> 2^60+2^36 (an f32 tie) -> 2^60
    assert nm.cast(np.array([2**60 + 2**36 + 1], np.int64), "f32")[0] == np.float32(2**60 + 2**37)
    assert nm.cast(np.array([2**60 + 2**36], np.int64), "f32")[0] == np.float32(2**60)
    assert nm.cast(np.array([-(2**63)], np.int64), "f32")[0] == np.float32(-(2.0**63))
    assert nm.cast(np.array([1000, -1000, 2**40], np.int64), "fp8e4").astype(np.float64).tolist() == \
        [448.0, -448.0, 448.0]
    assert nm.cast(np.array([70000], np.int32), "f16")[0] == np.inf


def reference_round_int(v: int, p: int, fmax: float, saturate: bool) -> float:
    """Nearest-even of a Python int with p significant bits, in exact integer arithmetic."""
    mag, shift = abs(v), max(abs(v).bit_length() - p, 0)
    q, rem = mag >> shift, mag & ((1 << shift) - 1)
    half = (1 << (shift - 1)) if shift else 1
    if shift and (rem > half or (rem == half and q & 1)):
        q += 1
    r = float(q << shift)
    if r > fmax:
        r = fmax if saturate else math.inf
    return math.copysign(r, v) if v else 0.0


def test_int_to_float_matches_exact_rounding_on_random_ints():
    rng = np.random.default_rng(5602)
    ints = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 1500, dtype=np.int64),
                           rng.integers(-(2**31), 2**31 - 1, 1500).astype(np.int64),
                           rng.integers(-70000, 70000, 1500).astype(np.int64)])
    formats = {**FORMATS, "f32": (24, -126, float(np.finfo(np.float32).max))}
    for fmt, (p, _, fmax) in formats.items():
        got = nm.cast(ints, fmt).astype(np.float64).tolist()
        want = [reference_round_int(v, p, fmax, fmt.startswith("fp8")) for v in ints.tolist()]
        assert got == want, fmt


def test_to_f32_rounds_wide_ints_to_nearest_even():
    got = nm.to_f32(np.array([2**24 + 1, 2**24 + 3, 127, -(2**31)], np.int32))
    assert got.dtype == np.float32
    assert got.tolist() == [2**24, 2**24 + 4, 127.0, -(2.0**31)]
    assert nm.to_f32(np.array([2**32 - 1], np.uint32))[0] == np.float32(2**32)


def test_cast_shapes_and_errors():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert nm.cast(x, "i16").shape == (2, 3, 4)
    assert nm.cast(np.float32(2.5), "i8").shape == ()
    with pytest.raises(ValueError, match="unknown dtype"):
        nm.cast(x, "f128")
    with pytest.raises(ValueError, match="real number"):
        nm.cast(np.array([1j]), "f32")


# --- activation: exact mode ------------------------------------------------------------------------

SQ2 = math.sqrt(2.0)
REFERENCE = {  # written with the math module, element by element
    "identity": lambda x: x, "copy": lambda x: x, "relu": lambda x: max(x, 0.0),
    # written without the cancellation of 1 + erf / 1 + tanh for negative x
    "gelu": lambda x: 0.5 * x * math.erfc(-x / SQ2),
    "gelu_tanh": lambda x: x / (1 + math.exp(-2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "exp": math.exp, "log": lambda x: math.log(abs(x) + 0.01), "tanh": math.tanh,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)), "silu": lambda x: x / (1 + math.exp(-x)),
    "erf": math.erf, "sqrt": lambda x: math.sqrt(abs(x)), "rsqrt": lambda x: 1 / math.sqrt(abs(x) + 0.01),
    "reciprocal": lambda x: 1 / (x if x != 0 else 0.5), "square": lambda x: x * x, "abs": abs,
    "neg": lambda x: -x, "sign": lambda x: float((x > 0) - (x < 0)),
    "hardsigmoid": lambda x: min(1.0, max(0.0, 0.2 * x + 0.5)),
    "hardswish": lambda x: x * min(1.0, max(0.0, x / 6 + 0.5)),
    "softplus": lambda x: math.log1p(math.exp(x)),
    "leaky_relu": lambda x: x if x >= 0 else float(np.float32(0.01)) * x,  # alpha is held as f32
    "floor": math.floor, "ceil": math.ceil, "round": lambda x: float(round(x)),  # Python rounds half even
    "isnan": lambda x: float(math.isnan(x)), "not": lambda x: float(x == 0),
}
INPUT_FIX = {"log": lambda x: np.abs(x) + np.float32(0.01), "sqrt": np.abs,
             "rsqrt": lambda x: np.abs(x) + np.float32(0.01),
             "reciprocal": lambda x: np.where(x == 0, np.float32(0.5), x)}


@pytest.mark.parametrize("func", ACT_FUNCS)
def test_exact_mode_matches_math_reference(func):
    assert set(REFERENCE) == set(ACT_FUNCS)
    x = np.concatenate([np.linspace(-12, 12, 1201), [-2.5, -0.5, 0.5, 1.5, 2.5, 0.0]]).astype(np.float32)
    x = INPUT_FIX.get(func, lambda v: v)(x).astype(np.float32)
    got = nm.activation(func, x, "exact")
    assert got.dtype == np.float32 and got.shape == x.shape
    want = np.array([REFERENCE[func](float(v)) for v in x], np.float64)
    if func == "log":
        want = np.log(x.astype(np.float64))  # the fix-up above is applied to the input, not the reference
    elif func == "sqrt":
        want = np.sqrt(x.astype(np.float64))
    elif func == "rsqrt":
        want = 1 / np.sqrt(x.astype(np.float64))
    # rounded once from float64: within half an f32 ulp of the true value (plus the reference's f64 noise)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2**-24 * 1.01, atol=1e-37)


def test_exact_mode_nan_and_special_values():
    nan = np.array([np.nan], np.float32)
    for func in ACT_FUNCS:
        out = nm.activation(func, nan)
        assert (out[0] == 1.0) if func == "isnan" else np.isnan(out[0]), func
    x = np.array([np.inf, -np.inf, 0.0, -1.0], np.float32)
    assert nm.activation("gelu", x).tolist() == [np.inf, 0.0, 0.0, pytest.approx(-0.15865525)]
    assert nm.activation("silu", x)[:3].tolist() == [np.inf, 0.0, 0.0]
    assert nm.activation("log", x).tolist()[:3] == [np.inf, pytest.approx(np.nan, nan_ok=True), -np.inf]
    assert nm.activation("rsqrt", np.array([0.0, np.inf], np.float32)).tolist() == [np.inf, 0.0]
    assert nm.activation("exp", np.array([89.0, -104.0], np.float32)).tolist() == [np.inf, 0.0]
    assert nm.activation("leaky_relu", np.array([-2.0], np.float32), alpha=0.5)[0] == -1.0


def test_exact_mode_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    ops = {  # device func -> (onnx op, attributes)
        "relu": ("Relu", {}), "gelu": ("Gelu", {}), "gelu_tanh": ("Gelu", {"approximate": "tanh"}),
        "exp": ("Exp", {}), "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}), "erf": ("Erf", {}),
        "abs": ("Abs", {}), "neg": ("Neg", {}), "sign": ("Sign", {}), "hardsigmoid": ("HardSigmoid", {}),
        "hardswish": ("HardSwish", {}), "softplus": ("Softplus", {}), "leaky_relu": ("LeakyRelu", {}),
        "floor": ("Floor", {}), "ceil": ("Ceil", {}), "round": ("Round", {}), "identity": ("Identity", {}),
    }
    positive_ops = {"log": ("Log", {}), "sqrt": ("Sqrt", {}), "reciprocal": ("Reciprocal", {})}
    nodes, outputs = [], []
    for func, (op, attrs) in {**ops, **positive_ops}.items():
        src = "P" if func in positive_ops else "X"
        nodes.append(helper.make_node(op, [src], [func], **attrs))
        outputs.append(helper.make_tensor_value_info(func, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "unary", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None])
                                                for n in ("X", "P")], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.linspace(-9, 9, 3001).astype(np.float32)
    p = np.geomspace(1e-6, 1e6, 3001).astype(np.float32)
    results = dict(zip([o.name for o in outputs], sess.run(None, {"X": x, "P": p})))
    for func, want in results.items():
        got = nm.activation(func, p if func in positive_ops else x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=func)


# --- activation: table mode ------------------------------------------------------------------------

# documented bounds at 256 segments (docs/numerics.md): (max abs err, max rel err), rel floor 1e-3.
# exp/log/sqrt/rsqrt/reciprocal are range-reduced: only the relative error is meaningful.
TABLE_BOUNDS = {
    "sigmoid": (5e-5, 5e-4), "silu": (8e-5, 1.9e-3), "gelu": (3.7e-5, 1.6e-3), "gelu_tanh": (3.7e-5, 1.8e-3),
    "tanh": (9.5e-5, 3.3e-4), "erf": (3e-5, 8.2e-5), "softplus": (1.25e-4, 4.9e-4),
    "exp": (None, 1.1e-6), "log": (8e-6, 1.3e-6), "sqrt": (None, 4.3e-6), "rsqrt": (None, 1.3e-5),
    "reciprocal": (None, 3.9e-6),
}


def test_table_bounds_cover_every_table_function():
    assert set(TABLE_BOUNDS) == set(nm.TABLE_FUNCS)
    assert set(nm.TABLE_FUNCS) <= set(ACT_FUNCS)


@pytest.mark.parametrize("func", list(TABLE_BOUNDS))
def test_table_error_within_documented_bounds(func):
    rng = np.random.default_rng(8176)
    abs_bound, rel_bound = TABLE_BOUNDS[func]
    r = nm.table_max_error(func, 256)
    assert r["points"] >= 100_000
    if abs_bound is not None:
        assert r["max_abs_err"] < abs_bound
    assert r["max_rel_err"] < rel_bound
    assert r["max_rel_err"] > rel_bound / 3  # the table really is approximate (the bound is tight)
    # random points off the measuring grid stay within the bound too
    lo, hi = float(nm.error_grid(func).min()), float(nm.error_grid(func).max())
    x = rng.uniform(max(lo, -30), min(hi, 30), 20_000).astype(np.float32)
    exact = nm.activation(func, x, "exact").astype(np.float64)
    table = nm.activation(func, x, "table").astype(np.float64)
    rel = np.abs(table - exact) / np.maximum(np.abs(exact), nm.REL_ERR_FLOOR)
    assert rel.max() < rel_bound * 1.05


def test_more_segments_means_quadratically_smaller_error():
    # linear interpolation: error ~ 1/segments^2 (16x for 4x the segments, ideally); the range-reduced
    # functions are compared at fewer segments, before their error reaches f32 rounding
    for func, few in (("tanh", 256), ("gelu", 256), ("sigmoid", 256), ("exp", 32), ("reciprocal", 32)):
        coarse = nm.table_max_error(func, few)["max_abs_err" if func != "exp" else "max_rel_err"]
        fine = nm.table_max_error(func, 4 * few)["max_abs_err" if func != "exp" else "max_rel_err"]
        assert fine < coarse / 10, func


def test_table_mode_range_behaviour():
    big = np.array([-50.0, 50.0, -1e30, 1e30, np.inf, -np.inf], np.float32)
    assert nm.activation("sigmoid", big, "table").tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert nm.activation("tanh", big, "table").tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0]
    assert nm.activation("erf", big, "table").tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0]
    for func in ("gelu", "gelu_tanh", "silu", "softplus"):
        want = np.array([0.0, 50.0, 0.0, 1e30, np.inf, 0.0], np.float32)
        assert np.array_equal(nm.activation(func, big, "table"), want), func
    # range-reduced functions stay accurate over the whole f32 range
    wide = np.geomspace(1e-37, 1e37, 5000).astype(np.float32)
    for func in ("sqrt", "rsqrt", "reciprocal", "log"):
        e = nm.activation(func, wide, "exact").astype(np.float64)
        t = nm.activation(func, wide, "table").astype(np.float64)
        assert np.max(np.abs(t - e) / np.maximum(np.abs(e), 1e-3)) < 2e-5, func
    assert nm.activation("exp", np.array([88.0, -87.0, 100.0, -110.0], np.float32), "table")[2:].tolist() == \
        [np.inf, 0.0]
    specials = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan], np.float32)
    for func in ("sqrt", "rsqrt", "reciprocal", "log"):
        assert bits_equal(nm.activation(func, specials, "table"), nm.activation(func, specials, "exact")), func
    assert bits_equal(nm.activation("exp", np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32), "table"),
                      [1.0, 1.0, np.inf, 0.0, np.nan])


def test_table_mode_propagates_nan():
    for func in nm.TABLE_FUNCS:
        assert np.isnan(nm.activation(func, np.array([np.nan], np.float32), "table"))[0], func


def test_table_mode_differs_from_exact():
    x = np.linspace(-3, 3, 1001).astype(np.float32)
    for func in ("gelu", "tanh", "sigmoid", "exp"):
        assert not np.array_equal(nm.activation(func, x, "table"), nm.activation(func, x, "exact")), func


def test_exact_functions_identical_in_both_modes():
    rng = np.random.default_rng(7354)
    x = np.concatenate([rng.normal(0, 10, 5000), [0.0, -0.0, np.inf, -np.inf, np.nan, 2.5, -2.5]]).astype(np.float32)
    for func in set(ACT_FUNCS) - set(nm.TABLE_FUNCS):
        assert bits_equal(nm.activation(func, x, "exact"), nm.activation(func, x, "table", segments=7)), func


def test_deterministic_bit_identical():
    rng = np.random.default_rng(2133)
    x = rng.normal(0, 5, 20_000).astype(np.float32)
    for func in nm.TABLE_FUNCS:
        first = nm.activation(func, x, "table")
        nm._table.cache_clear()
        again = nm.activation(func, x.copy(), "table")
        assert first.tobytes() == again.tobytes(), func
        assert nm.activation(func, x).tobytes() == nm.activation(func, x.copy()).tobytes(), func
    assert nm.cast(x, "bf16").tobytes() == nm.cast(x.copy(), "bf16").tobytes()


def test_activation_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unknown activation function"):
        nm.activation("swish", x)
    with pytest.raises(ValueError, match="unknown activation mode"):
        nm.activation("gelu", x, mode="fast")
    with pytest.raises(ValueError, match="segments"):
        nm.activation("gelu", x, mode="table", segments=0)
    with pytest.raises(ValueError, match="alpha"):
        nm.activation("leaky_relu", x, alpha=float("nan"))
    with pytest.raises(ValueError, match="no lookup table"):
        nm.table_max_error("relu")


def test_doc_error_table_is_current():
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- error-table:begin -->\n(.*?)<!-- error-table:end -->", text, re.DOTALL)
    assert m, "docs/numerics.md lost its error-table markers"
    assert m.group(1) == nm.error_table_markdown(256)
