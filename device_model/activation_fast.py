"""Fast evaluation of exact-mode activations, bit-identical to the reference formulas in numerics.

An exact-mode activation is a float64 reference formula rounded once to f32. Here a cheaper float64
approximation y~ with a known relative error bound e (|y~ - reference| <= e * |y~|, covering both
the approximation's error and the reference's own rounding) decides the f32 result directly: every
value within e * |y~| of y~ rounds to the same f32 unless an f32 rounding midpoint lies in that
interval. Elements whose y~ is that close to a midpoint, and elements outside the approximation's
domain, are recomputed with the reference formula. So the f32 result equals the reference's for
every input; only the work differs. GELU has its own cheaper scheme, a table of cubic pieces indexed
by the input's bits with the check folded into the table's values (gelu_f32); the rational
approximation it replaced (gelu_approx through certified_f32) stays as bench/bench_activations.py's
peer. tests/device_model/test_activation_fast.py compares the fast paths with the old formulas over
every bf16 and f16 bit pattern and millions of seeded random f32 values, and
bench/verify_activation_fast.py over all 2^32 f32 inputs.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import cache

import numpy as np
import scipy.special as sp

from . import jit

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

_DROPPED_BITS = 52 - 23  # f64 significand bits below an f32's (normal f32 results)
_DROPPED_MASK = (1 << _DROPPED_BITS) - 1
_HALF_WAY = 1 << (_DROPPED_BITS - 1)
_BLOCK = 16384  # elements per pass: keeps the float64 temporaries in cache
CERTIFIED_MIN_SIZE = 4096  # elements: smaller arrays go to the reference whole (see certified_f32)


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
                  lo: float, hi: float, sign_of_x: bool = False,
                  min_size: int = CERTIFIED_MIN_SIZE) -> np.ndarray:
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
        return _whole_reference_f32(x32, reference)
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


def _whole_reference_f32(x32: np.ndarray, reference: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """reference(x) rounded to f32 over the whole array, NaN payloads as the reference gives them."""
    return np.asarray(reference(np.asarray(x32, dtype=F32).astype(F64)), dtype=F64).astype(F32)


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


# --- GELU through a table of cubic pieces ------------------------------------------------------------
# The f32 input's bits pick a segment: sign, exponent and the top _GELU_M mantissa bits index a row of
# _gelu_table(), the remaining _GELU_SHIFT bits are t, the integer offset of x in its segment. A row is
# a cubic in t, evaluated in float64 by Horner's rule, so each element costs one gather and a dozen
# numpy passes (no exp, no division). Every row is one of:
#   poly   g(x) + D within GELU_TABLE_EPS * |g(x)| (see _gelu_poly_rows for the bound, and D below);
#   exact  the reference's float64 value itself: x/2 for |x| < 2^-56 (erfc is exactly 1 there) and for
#          subnormal x; x for x >= 8; -2^-200, which rounds to -0.0, for x <= -16;
#   flag   the constant 1 + 2^-24, an exact f32 rounding midpoint, so the check below sends the element
#          to the reference: inf/NaN, and every segment whose bound does not meet _GELU_FIT_ERR: with
#          _GELU_M = 10 those are x in [-16, -4) (g falls off like exp(-x^2/2) there).
# The check: a poly row's value y is g(x) + D with D = sign(g) * GELU_TABLE_EPS * max|g| on the segment,
# so y lies beyond (away from zero) the reference's float64 value ref64, by at most
# 2 * GELU_TABLE_EPS * max|g| < 2^(_GELU_K - 53) * |y| (max|g| <= 1.5 min|g| on every poly row), that is
# by fewer than 2^_GELU_K float64 ulps of y. Their f32 roundings differ only if an f32 rounding midpoint
# lies between them, and then y is less than 2^_GELU_K ulps beyond that midpoint in magnitude: y's low
# 29 significand bits read 1, then 28 - _GELU_K zeros, then anything -- the pattern the check flags (it
# flags 2^(_GELU_K - 29) of all patterns). Flagged elements run the reference; every other element's
# f32 rounding of y is the reference's. Exact rows are not flagged and need no margin.
_GELU_M = 10
_GELU_SHIFT = 23 - _GELU_M
_GELU_FIT_ERR = 2.0 ** -36  # a poly row's interpolation and rounding error bound, relative to min|g|
GELU_TABLE_EPS = 2.0 ** -35  # that plus Horner's rounding (< 2^-49) and the reference's own (< 2^-45)
_GELU_K = 20
_GELU_FLAG = 1.0 + 2.0 ** -24
_GELU_CHECK_MASK = ((1 << 29) - 1) & ~((1 << _GELU_K) - 1)
_GELU_CHECK_HALF = 1 << 28
_GELU_NODES = (Fraction(0), Fraction(1, 4), Fraction(3, 4), Fraction(1))  # in s = t / 2^_GELU_SHIFT
_GELU_MIN_X = -0.7517915246935645  # gelu's minimum: |g| peaks there on the negative side
_ROW = np.dtype((np.void, 32))  # four float64 coefficients: np.take moves a 32-byte item in one step


def _exact_inverse(matrix: list[list[Fraction]]) -> list[list[float]]:
    """The inverse of a small matrix of Fractions (Gauss-Jordan in exact arithmetic), rounded to float."""
    n = len(matrix)
    rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[col])]
    return [[float(v) for v in row[n:]] for row in rows]


_GELU_VINV = _exact_inverse([[s ** k for k in range(4)] for s in _GELU_NODES])  # node values -> coefficients


def _gelu64(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * sp.erfc(-x / math.sqrt(2.0))


def _gelu_poly_rows(a: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cubic interpolants of gelu on the segments from a to a + width (width signed: away from zero) as
    coefficients of s in [0, 1], the check offset D added to the constant, and which segments meet
    _GELU_FIT_ERR.

    p interpolates g at s = 0, 1/4, 3/4, 1. The remainder is g4(xi) * width^4 / 4! * prod(s - s_i), where
    |prod| <= 1/64 on [0, 1] and g4, the 4th derivative, is phi(x) * (-x^4 + 7x^2 - 4), at most
    phi(min|x|) * (X^4 + 7X^2 + 4) in magnitude, X = max|x|. It is taken relative to min|g| on the
    segment, found at an end (|g| is monotone on each side of _GELU_MIN_X). 2^-40 * max|g| covers the
    rounding of the nodes, of the reference values there (scipy's erfc) and of the coefficients (a few
    float64 operations on values of at most 22 * max|g|); the factor 1.01 the rounding of the bound."""
    b = a + width
    nodes = [_gelu64(a + float(s) * width) for s in _GELU_NODES]
    coefs = np.stack([sum(_GELU_VINV[k][i] * nodes[i] for i in range(4)) for k in range(4)], axis=1)
    near, far = np.minimum(np.abs(a), np.abs(b)), np.maximum(np.abs(a), np.abs(b))
    d4 = np.exp(-0.5 * near * near) / math.sqrt(2.0 * math.pi) * (far ** 4 + 7.0 * far ** 2 + 4.0)
    g_min = np.minimum(np.abs(nodes[0]), np.abs(nodes[-1]))
    g_max = np.maximum(np.abs(nodes[0]), np.abs(nodes[-1]))
    peak = (np.minimum(a, b) <= _GELU_MIN_X) & (np.maximum(a, b) >= _GELU_MIN_X)
    g_max = np.where(peak, abs(float(_gelu64(np.float64(_GELU_MIN_X)))), g_max)
    bound = (1.01 * d4 / 24.0 * width ** 4 / 64.0 + 2.0 ** -40 * g_max) / g_min
    ok = (bound <= _GELU_FIT_ERR) & (g_max <= 1.5 * g_min)
    coefs[:, 0] += np.sign(coefs[:, 0]) * GELU_TABLE_EPS * g_max
    return coefs, ok


@cache
def _gelu_table() -> np.ndarray:
    """The rows of the GELU table (see above), c0..c3 of c0 + c1 t + c2 t^2 + c3 t^3 per row. Built
    once, on first use, from scipy's erfc at four points per segment (~70 ms); 16 MiB."""
    rows = np.arange(1 << (32 - _GELU_SHIFT), dtype=np.int64)
    negative = (rows >> (8 + _GELU_M)) == 1
    biased = (rows >> _GELU_M) & 0xFF
    top = rows & ((1 << _GELU_M) - 1)
    sign = np.where(negative, -1.0, 1.0)
    ulp = np.ldexp(1.0, np.maximum(biased, 1) - 150)  # of x's binade (subnormal x: 2^-149)
    lead = np.where(biased == 0, 0.0, 1.0)
    x0 = sign * np.ldexp(lead + top / 2.0 ** _GELU_M, np.maximum(biased, 1) - 127)
    table = np.zeros((rows.size, 4), F64)
    table[:, 0] = _GELU_FLAG
    finite = biased < 0xFF
    half = biased < 127 - 56  # subnormal x too
    table[half, 0] = x0[half] / 2.0
    table[half, 1] = sign[half] * ulp[half] / 2.0
    identity = ~negative & finite & (biased >= 127 + 3)
    table[identity, 0] = x0[identity]
    table[identity, 1] = ulp[identity]
    zero = negative & finite & (biased >= 127 + 4)
    table[zero, 0] = -(2.0 ** -200)
    candidates = np.flatnonzero(finite & ~half & ~identity & ~zero)
    coefs, ok = _gelu_poly_rows(x0[candidates], sign[candidates] * ulp[candidates] * 2.0 ** _GELU_SHIFT)
    table[candidates[ok]] = coefs[ok] * 2.0 ** (-_GELU_SHIFT * np.arange(4))  # s = t / 2^_GELU_SHIFT: exact
    table.setflags(write=False)
    return table


def gelu_f32(x32: np.ndarray, reference: Callable[[np.ndarray], np.ndarray], min_size: int = 4096,
             block: int = 16384, compiled: bool = True) -> np.ndarray:
    """reference(x) rounded to f32 (reference: gelu in float64) through the cubic table wherever the check
    above certifies the rounding; flagged elements run `reference` (a NaN input gives itself back,
    quietened, as in certified_f32). Arrays of fewer than min_size elements go to `reference` whole.
    The table pass is one compiled loop where device_model.jit has it (unless `compiled` is False),
    else numpy passes over blocks of `block` elements; both flag the same elements and give the same
    bits. Returns a new f32 array of x32's shape."""
    if np.size(x32) < min_size:
        return _whole_reference_f32(x32, reference)
    flat = np.ascontiguousarray(x32, dtype=F32).reshape(-1)
    out = np.empty(flat.size, F32)
    loop = GELU_TABLE_LOOP.compiled() if compiled else None
    if loop is not None:
        hits = np.empty(flat.size, np.intp)
        hits = hits[:loop(flat.view(np.uint32), _gelu_table(), _GELU_SHIFT, _GELU_CHECK_MASK, _GELU_CHECK_HALF,
                          out, hits)]
    else:
        hits = _gelu_table_passes(flat, out, block)
    if hits.size:
        out[hits] = _reference_f32(flat[hits], reference)
    return out.reshape(np.shape(x32))


def _gelu_table_passes(flat: np.ndarray, out: np.ndarray, block: int) -> np.ndarray:
    """The table evaluation of flat (f32) into out as numpy passes; returns the flagged positions."""
    table = _gelu_table().view(_ROW).reshape(-1)
    n = flat.size
    flagged = np.empty(n, np.bool_)
    size = max(1, min(n, block))
    index, low = np.empty(size, np.intp), np.empty(size, np.int32)
    t, y, tail = np.empty(size, F64), np.empty(size, F64), np.empty(size, np.int64)
    coefs = np.empty((size, 4), F64)
    for start in range(0, n, size):
        stop = min(start + size, n)
        m = stop - start
        bits = flat[start:stop].view(np.uint32)
        np.right_shift(bits, _GELU_SHIFT, out=index[:m])
        np.bitwise_and(bits.view(np.int32), (1 << _GELU_SHIFT) - 1, out=low[:m])
        tm, ym, c = t[:m], y[:m], coefs[:m]
        np.copyto(tm, low[:m])
        np.take(table, index[:m], out=c.view(_ROW).reshape(-1), mode="clip")  # indices are in range
        np.multiply(c[:, 3], tm, out=ym)
        ym += c[:, 2]
        ym *= tm
        ym += c[:, 1]
        ym *= tm
        ym += c[:, 0]
        out[start:stop] = ym
        np.bitwise_and(ym.view(np.int64), _GELU_CHECK_MASK, out=tail[:m])
        np.equal(tail[:m], _GELU_CHECK_HALF, out=flagged[start:stop])
    return np.flatnonzero(flagged)


def _gelu_table_loop(bits, table, shift, check_mask, check_half, out, flagged):
    """_gelu_table_passes as one loop (compiled by device_model.jit): the same operations in the same
    order on each element (numba does not fuse a multiply and an add unless asked), so the same bits.
    bits: x's f32 bit patterns; writes out and the first n entries of flagged, returns n."""
    n = 0
    low_mask = np.uint32((1 << shift) - 1)
    row_shift = np.uint32(shift)
    for i in range(bits.size):
        b = bits[i]
        row = b >> row_shift
        t = np.float64(b & low_mask)
        y = ((table[row, 3] * t + table[row, 2]) * t + table[row, 1]) * t + table[row, 0]
        out[i] = np.float32(y)
        if (np.float64(y).view(np.int64) & check_mask) == check_half:
            flagged[n] = i
            n += 1
    return n


GELU_TABLE_LOOP = jit.Kernel(_gelu_table_loop, lambda nb: nb.intp(
    nb.uint32[::1], nb.types.Array(nb.float64, 2, "C", readonly=True), nb.int64, nb.int64, nb.int64,
    nb.float32[::1], nb.intp[::1]))


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
