"""Every rounding the device does: dtype casts, the f32 datapath, and the activation functions.

The device's datapath is float32: engines widen their inputs to f32 (`to_f32`), compute, and round
once when they write their destination (`cast`). A float64 value never exists on the device, so
`cast` first rounds a float64 (or Python float) input to f32 and then rounds that f32 value once to
the destination dtype — exactly what happens when the host stores f32 data and an engine converts it.
Integer inputs are rounded once, directly from the exact integer value. See docs/numerics.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import ml_dtypes
import numpy as np
import scipy.special as sp

from . import activation_fast as fast
from . import activation_table
from .dtypes import FLOAT_DTYPES, np_dtype
from .isa import ACT_FUNCS, ACT_MODES

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
FP8_MAX = {"fp8e4": 448.0, "fp8e5": 57344.0}
REL_ERR_FLOOR = 1e-3  # table_max_error: relative error = |table - exact| / max(|exact|, REL_ERR_FLOOR)
HARDSIGMOID_ALPHA, HARDSIGMOID_BETA = 0.2, 0.5  # ONNX HardSigmoid defaults (fixed on the device)
HARDSWISH_ALPHA, HARDSWISH_BETA = 1.0 / 6.0, 0.5  # ONNX HardSwish: x * hardsigmoid(x; 1/6, 0.5)


# --- casts ------------------------------------------------------------------------------------

def _is_ml_float(dt: np.dtype) -> bool:
    try:
        ml_dtypes.finfo(dt)
    except (ValueError, TypeError):
        return False
    return dt.kind == "V"


def _source_kind(x: np.ndarray) -> str:
    dt = x.dtype
    if dt == np.bool_:
        return "bool"
    if dt.kind in "iu":
        return "int"
    if dt.kind == "f" or _is_ml_float(dt):
        return "float"
    raise ValueError(f"cannot cast an array of dtype {dt} to a device dtype (expected a real number type)")


def _floats_to_f32(x: np.ndarray) -> np.ndarray:
    """A float array (any width, incl. ml_dtypes) as f32; wider types round to nearest-even once."""
    if x.dtype == F32:
        return x
    with np.errstate(over="ignore"):
        return x.astype(F32)


def _ints_to_f64_round_to_odd(x: np.ndarray) -> np.ndarray:
    """Integers as float64, exact when |x| < 2^53, otherwise rounded to odd (truncate, then set the
    last kept bit when anything was cut off). Rounding that value to nearest in any format of at most
    51 significant bits gives the correctly rounded integer (no double rounding)."""
    if x.dtype.itemsize < 8:
        return x.astype(F64)
    negative = x < 0
    mag = x.astype(np.uint64)
    if x.dtype.kind == "i":
        mag = np.where(negative, np.uint64(0) - mag, mag)  # two's complement magnitude (int64 min ok)
    shift = np.zeros(mag.shape, dtype=np.uint64)
    for bit in range(53, 64):
        shift += (mag >> np.uint64(bit)) > 0
    cut = (np.uint64(1) << shift) - np.uint64(1)
    sticky = ((mag & cut) != 0).astype(np.uint64) << shift
    kept = (mag & ~cut) | sticky
    out = kept.astype(F64)  # at most 53 significant bits: exact
    return np.where(negative, -out, out)


def _f64_to_f32_round_to_odd(v: np.ndarray) -> np.ndarray:
    f = v.astype(F32)
    inexact = f.astype(F64) != v
    even = (f.view(np.uint32) & 1) == 0
    toward = np.where(v > f.astype(F64), np.float32(np.inf), np.float32(-np.inf))
    return np.where(inexact & even, np.nextafter(f, toward), f)


def _ints_to_float(x: np.ndarray, dtype: str) -> np.ndarray:
    """Integer -> float dtype, rounded to nearest-even once from the exact integer."""
    v = _ints_to_f64_round_to_odd(x)
    if dtype in ("f32", "f16"):
        with np.errstate(over="ignore"):
            return v.astype(np_dtype(dtype))  # numpy rounds f64 -> f32/f16 directly
    return _f32_to_float(_f64_to_f32_round_to_odd(v), dtype)  # ml_dtypes would go f64 -> f32 -> type


def _f32_to_float(x32: np.ndarray, dtype: str) -> np.ndarray:
    """f32 -> float dtype: nearest-even; fp8 saturates (fp8e4 has no inf: ±inf -> ±448)."""
    if dtype == "f32":
        return x32
    if dtype == "fp8e4":
        x32 = np.clip(x32, -FP8_MAX[dtype], FP8_MAX[dtype])  # NaN stays NaN
    elif dtype == "fp8e5":
        x32 = np.where(np.isinf(x32), x32, np.clip(x32, -FP8_MAX[dtype], FP8_MAX[dtype]))
    with np.errstate(over="ignore", invalid="ignore"):  # NaN -> NaN is intended
        return x32.astype(np_dtype(dtype))


def _floats_to_int(x32: np.ndarray, dtype: str) -> np.ndarray:
    """f32 -> integer dtype: round half to even, saturate, NaN -> 0."""
    info = np.iinfo(np_dtype(dtype))
    with np.errstate(invalid="ignore"):  # signalling NaN payloads
        r = np.rint(x32.astype(F64))
    above = r >= float(info.max) + 1.0  # info.max + 1 is a power of two: exact in f64
    below = r < float(info.min)
    bad = np.isnan(r) | above | below
    out = np.where(bad, 0.0, r).astype(np.int64).astype(info.dtype)
    out[above] = info.max
    out[below] = info.min
    return out


def _ints_to_int(x: np.ndarray, dtype: str) -> np.ndarray:
    info = np.iinfo(np_dtype(dtype))
    if x.dtype.kind == "u":
        return np.minimum(x.astype(np.uint64), np.uint64(info.max)).astype(info.dtype)
    return np.clip(x.astype(np.int64), max(info.min, -(2 ** 63)), min(info.max, 2 ** 63 - 1)).astype(info.dtype)


def cast(x, dtype: str) -> np.ndarray:
    """Convert a numeric array to device dtype `dtype` the way the device does (see module doc).

    float -> bf16/f16/f32: nearest-even, overflow -> ±inf; -> fp8e4/fp8e5: nearest-even, finite
    overflow saturates to ±max (448 / 57344), ±inf -> ±448 for fp8e4 and stays ±inf for fp8e5; NaN
    stays NaN. float -> int: half to even, saturating, NaN -> 0. int -> int: saturating. int -> float:
    nearest-even from the exact integer. bool is 0/1. Returns a new array of np_dtype(dtype).
    """
    target = np_dtype(dtype)
    x = np.asarray(x)
    kind = _source_kind(x)
    if kind == "bool":
        x, kind = x.astype(np.uint8), "int"
    if kind == "float":
        x32 = _floats_to_f32(x)
        out = _f32_to_float(x32, dtype) if dtype in FLOAT_DTYPES else _floats_to_int(x32, dtype)
    elif dtype in FLOAT_DTYPES:
        out = _ints_to_float(x, dtype)
    else:
        out = _ints_to_int(x, dtype)
    assert out.dtype == target
    return out.copy() if out is x else out  # always a new array: callers may write into it


def to_f32(x) -> np.ndarray:
    """Widen a device array to the f32 datapath. Exact for every float device dtype and for
    i8/u8/i16; i32/u32/i64 values beyond 2^24 in magnitude round to the nearest f32 (ties to even)."""
    return cast(x, "f32")


# --- activation functions: exact ---------------------------------------------------------------

def _neg_inf_to_zero(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * gate(x) at x = -inf is inf * 0 = NaN in float arithmetic; the limit is (-)0."""
    neg_inf = np.isneginf(x)
    return np.where(neg_inf, -0.0, y) if neg_inf.any() else y  # np.where costs a pass: only when needed


def _gelu(x):
    return _neg_inf_to_zero(x, 0.5 * x * sp.erfc(-x / math.sqrt(2.0)))  # erfc: exact far left


def _gelu_tanh_gate(x):
    # 0.5 * (1 + tanh(u)) == sigmoid(2u), without cancellation for negative u
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    return sp.expit(2.0 * u)


def _gelu_tanh(x):
    return _neg_inf_to_zero(x, x * _gelu_tanh_gate(x))


def _silu(x):
    return _neg_inf_to_zero(x, x * sp.expit(x))


def _hardsigmoid(x, alpha=HARDSIGMOID_ALPHA, beta=HARDSIGMOID_BETA):
    return np.clip(alpha * x + beta, 0.0, 1.0)


def _hardswish(x):
    """x * hardsigmoid(x; 1/6, 0.5), with -inf giving -0: the same float64 operations as the formula
    (np.clip's min(max(t, 0), 1) spelled out), in place, and the -inf fix-up only when x holds a
    -inf (its min is -inf, or NaN when a NaN hides it)."""
    t = x * HARDSWISH_ALPHA
    t += HARDSWISH_BETA
    np.maximum(t, 0.0, out=t)
    np.minimum(t, 1.0, out=t)
    t *= x
    lowest = x.min() if x.size else 0.0
    return _neg_inf_to_zero(x, t) if not lowest > -np.inf else t


def _isnan(x):
    return np.isnan(x).astype(F64)


def _not(x):
    return np.where(np.isnan(x), np.nan, (x == 0).astype(F64))


_EXACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "copy": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": sp.expit,
    "silu": _silu,
    "erf": sp.erf,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "reciprocal": lambda x: 1.0 / x,
    "square": np.square,
    "abs": np.abs,
    "neg": np.negative,
    "sign": np.sign,
    "hardsigmoid": _hardsigmoid,
    "hardswish": _hardswish,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.rint,
    "isnan": _isnan,
    "not": _not,
}  # leaky_relu takes alpha: see activation()
assert set(_EXACT) | {"leaky_relu"} == set(ACT_FUNCS)

_F32_MAX = float(np.finfo(F32).max)
_ACT_BLOCK = 16384  # elements per pass of the formulas (see activation())


def _one_buffered_pass(ufunc: np.ufunc) -> Callable[[np.ndarray], np.ndarray]:
    """f32 -> f32 as ufunc in float64: the same float64 loop on the same values as widening the array
    first, then one rounding to f32; numpy does both conversions in its small buffers, in one call."""
    return lambda x32: ufunc(x32, out=np.empty(np.shape(x32), F32), dtype=F64)

# f32 -> f32 evaluations with the same bits as _EXACT[func] rounded to f32, for every input (see
# activation_fast): a cheap float64 approximation decides every element it provably rounds the same as
# the reference; the rest (a rounding midpoint within its error bound, outside its domain) runs
# _EXACT[func] itself. Functions that are one numpy ufunc run it in float64 in one call, numpy widening
# the input and rounding the result to f32 in its buffers (_one_buffered_pass).
_FAST_EXACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": lambda x32: fast.gelu_f32(x32, _gelu),  # a table of cubic pieces (see activation_fast)
    **{func: _one_buffered_pass(ufunc) for func, ufunc in
       (("exp", np.exp), ("tanh", np.tanh), ("log", np.log), ("sqrt", np.sqrt))},
    "gelu_tanh": lambda x32: fast.certified_f32(x32, fast.gelu_tanh_approx, _gelu_tanh, fast.LOGISTIC_REL_ERR,
                                                fast.GELU_TANH_LO, _F32_MAX, min_size=256),
    "sigmoid": lambda x32: fast.certified_f32(x32, fast.sigmoid_approx, sp.expit, fast.LOGISTIC_REL_ERR,
                                              fast.SIGMOID_LO, _F32_MAX),
    "silu": lambda x32: fast.certified_f32(x32, fast.silu_approx, _silu, fast.LOGISTIC_REL_ERR,
                                           fast.SIGMOID_LO, _F32_MAX),
    "softplus": lambda x32: fast.certified_f32(x32, fast.softplus_approx, _EXACT["softplus"],
                                               fast.LOGISTIC_REL_ERR, fast.SOFTPLUS_LO, _F32_MAX),
}


# Exact-mode functions whose float64 reference is one ufunc call, and the size from which activation()
# takes another route for them (None: never). Below it, activation() evaluates exactly that call on
# the widened array and rounds once (_whole_reference_f32, _activation_f32, _one_buffered_pass, or for
# relu the f32 maximum that _relu_probe found equal to it), so the same call made with dtype=float64
# on the f32 array into an f32 `out` gives its bits, NaN payloads included.
def _relu_f64(x32: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x32, 0.0, out=out, dtype=F64)


_ONE_CALL_BELOW: dict[str, tuple[Callable[[np.ndarray, np.ndarray], object], int | None]] = {
    **{func: (partial(ufunc, dtype=F64), None)
       for func, ufunc in (("exp", np.exp), ("tanh", np.tanh), ("log", np.log), ("sqrt", np.sqrt))},
    "sigmoid": (partial(sp.expit, dtype=F64), fast.CERTIFIED_MIN_SIZE),  # certified_f32 from there on
    "erf": (partial(sp.erf, dtype=F64), _ACT_BLOCK + 1),  # blocks beyond _ACT_BLOCK (the same bits, untested)
    "relu": (_relu_f64, None),
}


def one_pass_function(func: str, mode: str, size: int) -> Callable[[np.ndarray, np.ndarray], object] | None:
    """A function f such that `f(x32, out32)` writes activation(func, x32, mode) into the f32 array out32
    bit for bit (NaN payloads included) for every f32 array x32 of `size` elements, in one numpy call
    that widens and rounds in numpy's buffers; or None. An executor of a small activation then makes
    that one call instead of widening, evaluating, rounding and storing."""
    if mode == "table" and func in TABLES:
        return None
    entry = _ONE_CALL_BELOW.get(func)
    if entry is None or (entry[1] is not None and size >= entry[1]):
        return None
    return entry[0]


def _relu_f32(x32: np.ndarray) -> np.ndarray | None:
    """relu in f32 itself: max(x, 0) is exact, so it equals the float64 reference rounded back for
    every number (the import-time probe below covers -0); None for an array holding a NaN, which the
    reference quietens through its float64 round trip (np.maximum in f32 would keep a signalling one)."""
    lowest = x32.min() if x32.size else F32.type(0)
    if lowest != lowest:
        return None
    return np.maximum(x32, F32.type(0))


def _relu_probe() -> bool:
    """True when f32 np.maximum gives the reference's bits on zeros of both signs at every position
    of a vector (SIMD body and scalar tail), and on ordinary numbers."""
    x = np.tile(np.array([-0.0, 0.0, -1.5, 2.5, -0.0, -0.0, 1e-45, -1e-45], F32), 13)
    with np.errstate(all="ignore"):
        ref = np.maximum(x.astype(F64), 0.0).astype(F32)
    return bool(np.array_equal(ref.view(np.uint32), np.maximum(x, F32.type(0)).view(np.uint32)))


_RELU_IN_F32 = _relu_probe()


# --- activation functions: lookup tables -------------------------------------------------------

@dataclass(frozen=True)
class TableSpec:
    """One function's lookup table: `fn` sampled at `segments + 1` evenly spaced knots on [lo, hi]
    (stored as f32), linearly interpolated; `how` says how the function is built from it."""

    lo: float
    hi: float
    fn: Callable[[np.ndarray], np.ndarray]
    how: str


def _phi(x):
    return 0.5 * sp.erfc(-x / math.sqrt(2.0))


def _log_ratio(m):
    # log(m)/(m-1) (-> 1 at m = 1): keeps log's relative accuracy near x = 1
    d = m - 1.0
    safe = np.where(d == 0.0, 1.0, d)
    return np.where(d == 0.0, 1.0, np.log1p(d) / safe)


_SQRT_HALF = math.sqrt(0.5)

TABLES: dict[str, TableSpec] = {
    "sigmoid": TableSpec(-16.0, 0.0, sp.expit,
                         "T(x) for x<=0, 1-T(-x) for x>0; 0/1 beyond ±16"),
    "silu": TableSpec(-16.0, 0.0, sp.expit,
                      "x·sigmoid table; 0 below -16, x above 16"),
    "gelu": TableSpec(-8.0, 0.0, _phi,
                      "x·Φ table (Φ = normal cdf; 1-T(-x) for x>0); 0 below -8, x above 8"),
    "gelu_tanh": TableSpec(-8.0, 0.0, _gelu_tanh_gate,
                           "x·½(1+tanh(u)) table (1-T(-x) for x>0); 0 below -8, x above 8"),
    "tanh": TableSpec(0.0, 8.0, np.tanh, "odd: sign(x)·T(abs(x)); ±1 beyond ±8"),
    "erf": TableSpec(0.0, 4.0, sp.erf, "odd: sign(x)·T(abs(x)); ±1 beyond ±4"),
    "softplus": TableSpec(0.0, 16.0, lambda t: np.log1p(np.exp(-t)),
                          "max(x,0) + T(abs(x)), T(t) = log(1+e^-t); T = 0 beyond 16"),
    "exp": TableSpec(0.0, 1.0, np.exp2,
                     "x·log2(e) = k + f, f in [0,1): 2^k·T(f)"),
    "log": TableSpec(_SQRT_HALF, 2 * _SQRT_HALF, _log_ratio,
                     "x = m·2^e, m in [√½,√2): e·ln2 + (m-1)·T(m), T(m) = log(m)/(m-1)"),
    "sqrt": TableSpec(1.0, 4.0, np.sqrt, "x = m·4^k, m in [1,4): 2^k·T(m)"),
    "rsqrt": TableSpec(1.0, 4.0, lambda m: 1.0 / np.sqrt(m), "x = m·4^k, m in [1,4): 2^-k·T(m)"),
    "reciprocal": TableSpec(1.0, 2.0, lambda m: 1.0 / m, "x = ±m·2^e, m in [1,2): ±2^-e·T(m)"),
}
TABLE_FUNCS = tuple(TABLES)


def _check_segments(segments) -> int:
    if isinstance(segments, bool) or not isinstance(segments, (int, np.integer)) or not 1 <= segments <= 1 << 20:
        raise ValueError(f"segments must be an integer in 1..{1 << 20}, got {segments!r}")
    return int(segments)


@cache
def _table(func: str, segments: int) -> np.ndarray:
    spec = TABLES[func]
    knots = spec.lo + (spec.hi - spec.lo) * (np.arange(segments + 1, dtype=F64) / segments)
    knots[-1] = spec.hi
    values = spec.fn(knots).astype(F32).astype(F64)  # the table memory holds f32 entries
    values.setflags(write=False)
    return values


@cache
def _table_steps(func: str, segments: int) -> np.ndarray:
    """table[i + 1] - table[i] for every segment i (the same f64 subtraction, done once)."""
    table = _table(func, segments)
    steps = table[1:] - table[:-1]
    steps.setflags(write=False)
    return steps


def _lookup(func: str, segments: int, u: np.ndarray) -> np.ndarray:
    """Linear interpolation of `func`'s table at u (float64, clamped into the table's range; NaN
    reads the first knot)."""
    spec = TABLES[func]
    table = _table(func, segments)
    clamped = np.empty(np.shape(u), F64)
    np.clip(u, spec.lo, spec.hi, out=clamped)  # ±inf land on the ends, as a huge finite value would
    np.copyto(clamped, spec.lo, where=np.isnan(clamped))
    u = clamped
    t = (u - spec.lo) * (segments / (spec.hi - spec.lo))
    knot = np.minimum(np.floor(t), segments - 1)  # t >= +0: no lower clip; float ops vectorise
    i = knot.astype(np.intp)
    frac = t - knot  # == t - i: i converts to the same f64 exactly
    return np.take(table, i) + frac * np.take(_table_steps(func, segments), i)


def _mantissa_exponent(a: np.ndarray, lo_mantissa: float) -> tuple[np.ndarray, np.ndarray]:
    """a = m·2^e (a > 0 finite) with m in [lo_mantissa, 2·lo_mantissa)."""
    m, e = np.frexp(np.where(a > 0, a, 1.0))  # m in [0.5, 1)
    small = m < lo_mantissa
    while np.any(small):  # at most twice for lo_mantissa <= 1
        m = np.where(small, 2 * m, m)
        e = np.where(small, e - 1, e)
        small = m < lo_mantissa
    return m, e


def _table_eval(func: str, x: np.ndarray, segments: int) -> np.ndarray:
    # exp, the gates, tanh/erf and softplus: activation_table (tests/device_model/test_activation_table.py
    # keeps the formulas it replaced)
    if func == "log":
        m, e = _mantissa_exponent(x, _SQRT_HALF)
        y = e * math.log(2.0) + (m - 1.0) * _lookup(func, segments, m)
        return np.where((x > 0) & np.isfinite(x), y, np.log(x))  # 0 -> -inf, <0 -> NaN, inf -> inf
    if func in ("sqrt", "rsqrt"):
        m, e = _mantissa_exponent(x, 1.0)
        odd = (e % 2) != 0
        m, e = np.where(odd, 2 * m, m), np.where(odd, e - 1, e)  # m in [1,4), e even
        half = (e // 2) if func == "sqrt" else -(e // 2)
        y = np.ldexp(_lookup(func, segments, m), half.astype(np.int32))
        special = np.sqrt(x) if func == "sqrt" else 1.0 / np.sqrt(x)  # 0, inf, negatives
        return np.where((x > 0) & np.isfinite(x), y, special)
    if func == "reciprocal":
        m, e = _mantissa_exponent(np.abs(x), 1.0)
        y = np.copysign(np.ldexp(_lookup(func, segments, m), (-e).astype(np.int32)), x)
        return np.where((x != 0) & np.isfinite(x), y, 1.0 / x)
    raise AssertionError(func)


def activation(func: str, x, mode: str = "exact", segments: int = 256, alpha: float = 0.01) -> np.ndarray:
    """func(x) on the f32 datapath: the result is computed in float64 from the f32 input and rounded
    once to f32. mode="table" evaluates the functions in TABLE_FUNCS through `segments`-segment
    linear-interpolation tables (see TABLES); every other function is the same in both modes.
    NaN propagates for every function except isnan. `alpha` is leaky_relu's slope (held as f32)."""
    return activation_function(func, mode, segments, alpha)(x)


def activation_function(func: str, mode: str = "exact", segments: int = 256,
                        alpha: float = 0.01) -> Callable[[np.ndarray], np.ndarray]:
    """`activation` with its arguments checked once: a function of x alone (an executor calls it on
    every run; on a tile of a few hundred elements the checks would cost a third of the call)."""
    if func not in ACT_FUNCS:
        raise ValueError(f"unknown activation function {func!r} (expected one of {', '.join(ACT_FUNCS)})")
    if mode not in ACT_MODES:
        raise ValueError(f"unknown activation mode {mode!r} (expected one of {', '.join(ACT_MODES)})")
    segments = _check_segments(segments)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return _bound_activation(func, mode == "table" and func in TABLES, segments, alpha)


@cache
def _bound_activation(func: str, table: bool, segments: int, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    if table and func in activation_table.FUNCS:  # same bits as _table_eval, fewer passes
        spec = TABLES[func]
        run_table = activation_table.table_function(func, segments, spec.lo, spec.hi, _table(func, segments),
                                                    _table_steps(func, segments))

        def evaluate_table(x) -> np.ndarray:
            x32 = x if isinstance(x, np.ndarray) and x.dtype == F32 else to_f32(x)
            with np.errstate(all="ignore"):
                return run_table(x32)
        return evaluate_table
    fast_exact = None if table else _FAST_EXACT.get(func)
    relu_in_f32 = not table and func == "relu" and _RELU_IN_F32

    def evaluate(x) -> np.ndarray:
        x32 = x if isinstance(x, np.ndarray) and x.dtype == F32 else to_f32(x)  # only read: no copy
        with np.errstate(all="ignore"):
            if fast_exact is not None:
                return fast_exact(x32)
            if relu_in_f32:
                y = _relu_f32(x32)
                if y is not None:
                    return y
            if x32.size <= _ACT_BLOCK:
                return _activation_f32(func, x32, table, segments, alpha)
            # every function is elementwise: blocks keep the float64 temporaries in cache
            flat = np.ascontiguousarray(x32).reshape(-1)
            out = np.empty(flat.shape, F32)
            for start in range(0, flat.size, _ACT_BLOCK):
                out[start:start + _ACT_BLOCK] = _activation_f32(func, flat[start:start + _ACT_BLOCK], table,
                                                                segments, alpha)
            return out.reshape(x32.shape)
    if table and func in activation_table.DOMAIN_FUNCS:  # one compiled loop; evaluate() for the rest
        spec = TABLES[func]
        run_domain = activation_table.domain_function(func, segments, spec.lo, spec.hi, _table(func, segments),
                                                      _table_steps(func, segments), evaluate)

        def evaluate_domain(x) -> np.ndarray:
            x32 = x if isinstance(x, np.ndarray) and x.dtype == F32 else to_f32(x)
            with np.errstate(all="ignore"):
                return run_domain(x32)
        return evaluate_domain
    return evaluate




def _activation_f32(func: str, x32: np.ndarray, table: bool, segments: int, alpha: float) -> np.ndarray:
    xd = x32.astype(F64)
    if func == "leaky_relu":
        y = np.where(xd < 0, float(np.float32(alpha)) * xd, xd)
    elif table:
        y = _table_eval(func, xd, segments)
        nan = np.isnan(xd)
        if nan.any():  # np.where is a full pass: only when there is a NaN to restore
            y = np.where(nan, np.nan, y)
    else:
        y = _EXACT[func](xd)
    return np.asarray(y, dtype=F64).astype(F32)


# --- table accuracy ----------------------------------------------------------------------------

_GRID_POINTS = 100_001
# (spacing, a, b): "lin" = evenly spaced on [a, b]; "geo" = geometric on [a, b] (0 < a < b);
# "geo±" = geometric on [a, b] and on [-b, -a]
ERROR_GRIDS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "sigmoid": (("lin", -20.0, 20.0),),
    "silu": (("lin", -20.0, 20.0),),
    "gelu": (("lin", -10.0, 10.0),),
    "gelu_tanh": (("lin", -10.0, 10.0),),
    "tanh": (("lin", -10.0, 10.0),),
    "erf": (("lin", -5.0, 5.0),),
    "softplus": (("lin", -20.0, 20.0),),
    "exp": (("lin", -87.0, 88.0), ("lin", -2.0, 2.0)),
    "log": (("geo", 1e-30, 1e30), ("lin", 0.5, 2.0)),
    "sqrt": (("geo", 1e-30, 1e30), ("lin", 0.0, 16.0)),
    "rsqrt": (("geo", 1e-30, 1e30), ("lin", 0.01, 16.0)),
    "reciprocal": (("geo±", 1e-30, 1e30), ("lin", -4.0, 4.0)),
}


def _grid_text(grids) -> str:
    parts = []
    for spacing, a, b in grids:
        sign = "±" if spacing == "geo±" else ""
        parts.append(f"[{a:g}, {b:g}]" if spacing == "lin" else f"{sign}[{a:g}, {b:g}] geometric")
    return " ∪ ".join(parts)


def error_grid(func: str) -> np.ndarray:
    """The f32 points table_max_error evaluates `func` at (>= 1e5, deterministic)."""
    pieces = []
    for spacing, a, b in ERROR_GRIDS[func]:
        if spacing == "lin":
            pieces.append(np.linspace(a, b, _GRID_POINTS))
        else:
            g = np.geomspace(a, b, _GRID_POINTS)
            pieces.extend([g, -g] if spacing == "geo±" else [g])
    return np.concatenate(pieces).astype(F32)


def table_max_error(func: str, segments: int = 256) -> dict:
    """Max error of table mode against exact mode over error_grid(func).

    abs error = |table - exact|; rel error = |table - exact| / max(|exact|, REL_ERR_FLOOR), i.e.
    absolute error where |exact| < REL_ERR_FLOOR. Both evaluated from the f32 results."""
    if func not in TABLES:
        raise ValueError(f"{func!r} has no lookup table (table functions: {', '.join(TABLE_FUNCS)})")
    segments = _check_segments(segments)
    x = error_grid(func)
    exact = activation(func, x, "exact").astype(F64)
    table = activation(func, x, "table", segments).astype(F64)
    with np.errstate(invalid="ignore"):
        err = np.where(exact == table, 0.0, np.abs(table - exact))  # equal infinities: no error
    rel = err / np.maximum(np.abs(exact), REL_ERR_FLOOR)
    ia, ir = int(np.argmax(err)), int(np.argmax(rel))
    return {
        "func": func, "segments": segments, "points": int(x.size), "grid": _grid_text(ERROR_GRIDS[func]),
        "rel_floor": REL_ERR_FLOOR,
        "max_abs_err": float(err[ia]), "max_abs_err_at": float(x[ia]),
        "max_rel_err": float(rel[ir]), "max_rel_err_at": float(x[ir]),
    }


def error_table_markdown(segments: int = 256) -> str:
    """The docs/numerics.md table of table-mode errors (tests keep the doc equal to this)."""
    lines = [
        f"| func | table ({segments} segments) | measured on | max abs err | max rel err |",
        "|---|---|---|---|---|",
    ]
    for func in TABLE_FUNCS:
        r = table_max_error(func, segments)
        spec = TABLES[func]
        lines.append(f"| {func} | [{spec.lo:.4g}, {spec.hi:.4g}]: {spec.how} | {r['grid']} | "
                     f"{r['max_abs_err']:.2e} (x={r['max_abs_err_at']:.4g}) | "
                     f"{r['max_rel_err']:.2e} (x={r['max_rel_err_at']:.4g}) |")
    return "\n".join(lines) + "\n"
