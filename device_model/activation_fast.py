"""Fast evaluation of exact-mode activations, bit-identical to the reference formulas in numerics.

An exact-mode activation is a float64 reference formula rounded once to f32. Here a cheaper float64
approximation y~ with a known relative error bound e (|y~ - reference| <= e * |y~|, covering both
the approximation's error and the reference's own rounding) decides the f32 result directly: every
value within e * |y~| of y~ rounds to the same f32 unless an f32 rounding midpoint lies in that
interval. Elements whose y~ is that close to a midpoint, and elements outside the approximation's
domain, are recomputed with the reference formula. So the f32 result equals the reference's for
every input; only the work differs. tests/device_model/test_activation_fast.py compares both over
every bf16 and f16 bit pattern and millions of seeded random f32 values, and
bench/verify_activation_fast.py over all 2^32 f32 inputs.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

_DROPPED_BITS = 52 - 23  # f64 significand bits below an f32's (normal f32 results)
_DROPPED_MASK = (1 << _DROPPED_BITS) - 1
_HALF_WAY = 1 << (_DROPPED_BITS - 1)
_BLOCK = 16384  # elements per pass: keeps the float64 temporaries in cache


def near_f32_midpoint(y: np.ndarray, rel_err: float) -> np.ndarray:
    """True where an f32 rounding midpoint may lie within rel_err * |y| of y (y float64).

    For |y| in [2^k, 2^(k+1)) one f64 ulp is 2^(k-52), so rel_err * |y| < rel_err * 2^53 ulps. The f32
    midpoints in that binade are the values whose 29 dropped significand bits are 100...0; the ones
    just outside the binade are at least 2^(k-25) away, farther than any window used here. Exact only
    for results in the normal f32 range: callers handle f32-subnormal results themselves."""
    window = math.ceil(rel_err * 2.0 ** 53)
    assert 0 < 2 * window < _HALF_WAY
    bits = y.view(np.int64)
    shifted = bits + (window - _HALF_WAY)  # wraps into the exponent bits: masked off below
    shifted &= _DROPPED_MASK
    return shifted <= 2 * window


def certified_f32(x32: np.ndarray, approx: Callable[[np.ndarray], np.ndarray],
                  reference: Callable[[np.ndarray], np.ndarray], rel_err: float,
                  lo: float, hi: float, sign_of_x: bool = False, min_size: int = 4096) -> np.ndarray:
    """reference(x) rounded to f32, computed as approx(x) where that provably rounds the same.

    `approx` must be within rel_err (relative) of `reference` for every f32 x in [lo, hi], and equal
    to it wherever the result is below the normal f32 range; inputs outside [lo, hi] (and NaN) go to
    `reference`, except that a NaN input gives itself back (quietened): the reference's NaN payload
    depends on where the element sits in its array (numpy's remainder loops swap the operands of a
    multiply). sign_of_x: the function's result has the sign of x (also for ±0), so approx only has to
    be right in magnitude and sign apart from -0. Arrays of fewer than min_size elements go to
    `reference` whole, NaN payloads included (the fast path's fixed cost of some twenty numpy calls
    would outweigh it).
    Returns a new f32 array of x32's shape."""
    if np.size(x32) < min_size:
        return np.asarray(reference(np.asarray(x32, dtype=F32).astype(F64)), dtype=F64).astype(F32)
    flat = np.ascontiguousarray(x32, dtype=F32).reshape(-1)
    n = flat.size
    out = np.empty(flat.shape, F32)
    block = max(1, min(n, _BLOCK))
    x64 = np.empty(block, F64)
    redo: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        xs = flat[start:stop]
        xd = x64[: stop - start]
        xd[...] = xs
        y = approx(xd)
        out[start:stop] = y
        if sign_of_x:
            signs = xs.view(np.uint32) & np.uint32(0x80000000)
            out_bits = out[start:stop].view(np.uint32)
            out_bits |= signs
        flagged = near_f32_midpoint(y, rel_err)
        # NaN compares false, so it falls outside [lo, hi] too; checking min/max first skips the masks
        lowest, highest = xs.min(), xs.max()
        if not (lowest >= lo and highest <= hi):
            flagged |= (xs < lo) if highest <= hi and lowest == lowest else ~((xs >= lo) & (xs <= hi))
        hits = np.flatnonzero(flagged)
        if hits.size:
            redo.append(hits + start)
    if redo:
        hits = np.concatenate(redo)
        out[hits] = _reference_f32(flat[hits], reference)
    return out.reshape(np.shape(x32))


def _reference_f32(x32: np.ndarray, reference: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """reference(x) rounded to f32 for a flat f32 array; a NaN input gives itself back (quietened)."""
    xd = x32.astype(F64)
    y = reference(xd)
    nan = np.isnan(xd)
    if nan.any():
        y[nan] = xd[nan]
    return y.astype(F32)


def horner(u: np.ndarray, coefs: tuple[float, ...], out: np.ndarray) -> np.ndarray:
    """sum(coefs[i] * u^(len-1-i)) into out (highest power first), in place."""
    np.multiply(u, coefs[0], out=out)
    for c in coefs[1:-1]:
        out += c
        out *= u
    out += coefs[-1]
    return out


# --- GELU ---------------------------------------------------------------------------------------
# Phi(-u) = exp(-u^2/2) * P(u) / Q(u), u = |x|: a rational fit of Phi(-u) * exp(u^2/2) made for this
# module (weighted least squares with Lawson iterations; P(0)/Q(0) = 1/2 exactly). Relative error
# <= 1.1e-10 on [0, 4]; beyond 4 it is weighted by Phi(-u), so |x| * Phi(-|x|) stays within 1e-14 of
# x for the positive tail. P and Q have positive coefficients: no poles for u >= 0, and P/Q ~ 0.4/u
# as Phi(-u) * exp(u^2/2) is. GELU_REL_ERR (2.3e-10) covers the fit, the float64 rounding in this
# evaluation (< 1e-14) and the reference's own (erfc: < 1e-14 for x >= -4).
_GELU_P = (0.0026774783061789104, 0.030241237004451135, 0.15104895456583994, 0.39218580556154176, 0.5)
_GELU_Q = (0.006710015846402708, 0.07584693876764144, 0.3847092357554211, 1.0645555526511934,
           1.5822561788058582, 1.0)
GELU_LO = -4.0
GELU_REL_ERR = 2.0 ** -32


def gelu_approx(x: np.ndarray) -> np.ndarray:
    """x * Phi(x) within GELU_REL_ERR for x >= -4 (any x, apart from the sign of -0: see
    certified_f32's sign_of_x), as max(x, 0) - |x| * Phi(-|x|). Exactly x/2 for |x| < 2^-60, where
    the f32-subnormal results are: exp(-u^2/2) = 1 and P/Q = 1/2 exactly there."""
    u = np.abs(x)
    tail = np.multiply(u, u)
    tail *= -0.5
    np.exp(tail, out=tail)
    tail *= horner(u, _GELU_P, np.empty_like(u))
    tail /= horner(u, _GELU_Q, np.empty_like(u))
    tail *= u
    y = np.maximum(x, 0.0)
    y -= tail
    return y


# --- logistic family --------------------------------------------------------------------------------
# 1 / (1 + exp(-z)) in float64 is within a few ulps of scipy's expit (both use a correctly rounded
# or nearly correctly rounded exp; the sum and the quotient add one rounding each), and z's own
# rounding moves the result by at most (1 - sigmoid(z)) * |z| * 2^-52 relative: < 2e-14 for the
# domains below. LOGISTIC_REL_ERR leaves a wide margin for both.
LOGISTIC_REL_ERR = 2.0 ** -40
SIGMOID_LO = -80.0  # sigmoid(-80) ~ 1.8e-35 is still a normal f32; below it the reference decides
GELU_TANH_LO = -8.0  # gelu_tanh(-8) ~ -3e-21
_GELU_TANH_K = -2.0 * math.sqrt(2.0 / math.pi)  # the gate is sigmoid(2u), u = sqrt(2/pi)(x + 0.044715 x^3)


def sigmoid_approx(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)); exactly 1/2 for |x| < 2^-54."""
    y = np.negative(x)
    np.exp(y, out=y)
    y += 1.0
    return np.divide(1.0, y, out=y)


def silu_approx(x: np.ndarray) -> np.ndarray:
    """x / (1 + exp(-x)); exactly x/2 for |x| < 2^-54, and x itself once exp(-x) is below 2^-53."""
    y = np.negative(x)
    np.exp(y, out=y)
    y += 1.0
    return np.divide(x, y, out=y)


def gelu_tanh_approx(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(2u) with u = sqrt(2/pi) * (x + 0.044715 x^3), x^3 as x*x*x (the reference's x**3 is
    a pow() call); exactly x/2 for |x| < 2^-60."""
    z = np.multiply(x, x)
    z *= x
    z *= 0.044715
    z += x
    z *= _GELU_TANH_K
    np.exp(z, out=z)
    z += 1.0
    return np.divide(x, z, out=z)


# --- softplus ---------------------------------------------------------------------------------------
# numpy's logaddexp(0, x) is max(x, 0) + log1p(exp(-|x|)) (ln 2 at x = 0) with libm's scalar exp and
# log1p. Here log1p(e) = log(w) - ((w - 1) - e) / w with w = 1 + e: (w - 1) - e is exactly the rounding
# error of 1 + e, so this is within a few ulps, using numpy's vectorised exp and log.
SOFTPLUS_LO = -80.0  # softplus(-80) ~ 1.8e-35 is a normal f32


def softplus_approx(x: np.ndarray) -> np.ndarray:
    """max(x, 0) + log1p(exp(-|x|)); exactly x once exp(-|x|) underflows (|x| > 745)."""
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    w = e + 1.0
    err = w - 1.0
    err -= e
    err /= w
    y = np.log(w, out=w)
    y -= err
    y += np.maximum(x, 0.0)
    return y
