"""Fast table-mode activations, bit-identical to the formulas in numerics (`_lookup`, `_gate`, `_table_eval`).

Table mode interpolates a function's f32 table in float64 and rounds once to f32. The reference
evaluation clamps, masks NaN and selects with np.where on every element, about twenty float64 passes.
Here every float64 operation an in-range element sees is the same operation on the same operands (so
the same float64 value, hence the same f32 bits), but:

- the knot index and fraction are computed once, into preallocated buffers (no temporaries);
- clamping happens only when the block's range (its min and max, two cheap f32 reductions) needs it,
  and the elements beyond the table get their constant (0, 1) by a masked fix-up on the rare elements,
  not an np.where over all of them;
- NaN is handled outside the kernels: a block with a NaN evaluates with NaN replaced by 0 and writes the
  canonical NaN back at those places, exactly the value the reference's NaN restore gives.

Identities used (exact in IEEE arithmetic): a + b == b + a, a * b == b * a, (-a) - lo == (-lo) - a,
a - 0.0 == a for a >= +0, and truncation == floor for t >= 0. The sign of tanh/erf is applied after the
f32 rounding (round-to-nearest-even is symmetric, so rounding then copysign == copysign then rounding).
Selections are arithmetic where the mask is dense (y * 1 == y, finite * 0 == +0, |1 - g| == 1 - g for
0 <= g <= 1): a masked ufunc or np.where on a random mask costs ten passes in branch misses.
tests/device_model/test_activation_table.py keeps the reference and compares both bit for bit.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from . import jit

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
_BLOCK = 16384  # elements per pass: keeps the float64 buffers in cache
_INV_LN2 = 1.0 / math.log(2.0)
_CANONICAL_NAN = np.float32(np.nan)  # what the reference's np.where(nan, np.nan, y) rounds to
GATES = ("sigmoid", "silu", "gelu", "gelu_tanh")
ODD = ("tanh", "erf")
FUNCS = GATES + ODD + ("softplus", "exp")


class _Buffers:
    """The float64 and index scratch arrays of one call, reused block after block."""

    def __init__(self, n: int) -> None:
        self.x = np.empty(n, F64)
        self.t = np.empty(n, F64)
        self.y = np.empty(n, F64)
        self.mask = np.empty(n, F64)
        self.idx = np.empty(n, np.intp)
        self.k = np.empty(n, np.int32)  # ldexp's int64 loop is some 15x slower than its int32 one

    def view(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.x[:n], self.t[:n], self.y[:n], self.idx[:n]


def _interp(t: np.ndarray, segments: int, table: np.ndarray, steps: np.ndarray,
            idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """table[i] + frac * steps[i] with i = min(floor(t), segments - 1), frac = t - i, into y.
    t (float64, >= 0, no NaN) is overwritten with frac."""
    knot = np.floor(t, out=y)  # float ops and one conversion: faster than integer min and a mixed subtract
    np.minimum(knot, segments - 1, out=knot)
    np.copyto(idx, knot, casting="unsafe")
    t -= knot
    np.take(steps, idx, out=y, mode="clip")  # every index is in range: "clip" only skips the checks
    y *= t
    np.take(table, idx, out=t, mode="clip")
    y += t
    return y


def _exp(xs: np.ndarray, lowest: float, highest: float, segments: int, table: np.ndarray,
         steps: np.ndarray, buf: _Buffers, out: np.ndarray) -> None:
    # reference: t = clip(x / ln2, -400, 400) (beyond: 0 / inf anyway; ±inf land on ±400); k = floor(t);
    # 2^k * lookup(t - k) on [0, 1)
    x, t, y, idx = buf.view(xs.size)
    x[...] = xs  # widen first: an f32 array times a Python float would multiply in f32
    np.multiply(x, _INV_LN2, out=t)
    if lowest * _INV_LN2 < -400.0 or highest * _INV_LN2 > 400.0:
        np.clip(t, -400.0, 400.0, out=t)
    k = np.floor(t, out=x)
    t -= k  # in [0, 1): the reference's clamp into the table's range does nothing
    t *= float(segments)  # (u - 0.0) * (segments / (1.0 - 0.0))
    _interp(t, segments, table, steps, idx, y)
    k32 = buf.k[:xs.size]
    np.copyto(k32, k, casting="unsafe")  # |k| <= 400: exact
    np.ldexp(y, k32, out=y)
    out[...] = y


def _gate(func: str, xs: np.ndarray, lowest: float, highest: float, lo: float, segments: int,
          table: np.ndarray, steps: np.ndarray, buf: _Buffers, out: np.ndarray) -> None:
    # reference: left = 0 if -|x| < lo else lookup(-|x|) on [lo, 0]; g = 1 - left for x > 0 else left;
    # sigmoid is g, the others x * g (x = -inf gives -0)
    x, t, y, idx = buf.view(xs.size)
    mask = buf.mask[:xs.size]
    x[...] = xs
    span = -lo
    np.abs(x, out=t)
    far = max(-lowest, highest) > span
    if far:
        np.less_equal(t, span, out=mask)  # 1.0 in the table's range, 0.0 beyond
    np.subtract(span, t, out=t)  # (-|x|) - lo
    t *= segments / (0.0 - lo)
    if far:
        np.maximum(t, 0.0, out=t)  # those elements are zeroed below
    _interp(t, segments, table, steps, idx, y)
    if far:
        y *= mask  # left * 1 == left, finite * 0 == +0: a select without a data-dependent branch
    if highest > 0:
        # 1 - left where x > 0: |s - left| with s = 1.0 there, 0.0 elsewhere (0 <= left <= 1/2)
        np.greater(xs, 0.0, out=mask)
        np.subtract(mask, y, out=y)
        np.abs(y, out=y)
    if func != "sigmoid":
        y *= x
        if lowest == -np.inf:
            y[xs == -np.inf] = -0.0
    out[...] = y


def _lookup_abs(xs: np.ndarray, lowest: float, highest: float, hi: float, beyond: float, segments: int,
                table: np.ndarray, steps: np.ndarray, buf: _Buffers) -> tuple[np.ndarray, np.ndarray]:
    """(x as float64, `beyond` where |x| > hi else lookup(|x|) on [0, hi]), both in buf."""
    x, t, y, idx = buf.view(xs.size)
    mask = buf.mask[:xs.size]
    x[...] = xs
    np.abs(x, out=t)
    far = max(-lowest, highest) > hi
    if far:
        np.greater(t, hi, out=mask)  # 1.0 beyond the table, 0.0 in its range
    t *= segments / hi  # (|x| - 0.0) * (segments / (hi - 0.0))
    if far:  # no in-range element is above the cap (hi * (segments / hi) may round above segments)
        np.minimum(t, max(float(segments), hi * (segments / hi)), out=t)
    _interp(t, segments, table, steps, idx, y)
    if far:  # y * (1 - m) + beyond * m: y or beyond exactly (y >= +0, finite), without a branch per element
        np.subtract(1.0, mask, out=t)
        y *= t
        if beyond:
            mask *= beyond
            y += mask
    return x, y


def _odd(xs: np.ndarray, lowest: float, highest: float, hi: float, segments: int, table: np.ndarray,
         steps: np.ndarray, buf: _Buffers, out: np.ndarray) -> None:
    # reference: copysign(1 if |x| > hi else lookup(|x|), x)
    _, y = _lookup_abs(xs, lowest, highest, hi, 1.0, segments, table, steps, buf)
    out[...] = y
    bits = out.view(np.uint32)  # y >= +0: OR-ing in x's sign bit is copysign, at half its cost
    bits |= xs.view(np.uint32) & np.uint32(0x80000000)


def _softplus(xs: np.ndarray, lowest: float, highest: float, hi: float, segments: int, table: np.ndarray,
              steps: np.ndarray, buf: _Buffers, out: np.ndarray) -> None:
    # reference: max(x, 0) + (0 if |x| > hi else lookup(|x|))
    x, y = _lookup_abs(xs, lowest, highest, hi, 0.0, segments, table, steps, buf)
    np.maximum(x, 0.0, out=x)
    y += x
    out[...] = y


# --- the same evaluations as one compiled loop each (device_model.jit) ------------------------------
# Per element, every float64 operation of the numpy passes above, in the same order on the same
# operands. The passes skip a clamp, a mask or a fix-up when a block's range shows it does nothing; a
# loop applies it to every element, where it then does nothing too (clamping or masking an in-range
# value, y * 1.0, |0 - y| for y >= +0, y + 0.0 for y >= +0). NaN gives the canonical NaN, as there.

def _interp_one(t, segments, table, steps):
    knot = np.floor(t)
    if knot > segments - 1:
        knot = np.float64(segments - 1)
    i = np.intp(knot)
    return steps[i] * (t - knot) + table[i]


def _exp_loop(x, segments, table, steps, out):
    inv_ln2 = 1.0 / math.log(2.0)
    for n in range(x.size):
        xn = x[n]
        if xn != xn:
            out[n] = np.float32(np.nan)
            continue
        t = min(max(np.float64(xn) * inv_ln2, -400.0), 400.0)
        k = np.floor(t)
        y = _interp_one((t - k) * np.float64(segments), segments, table, steps)
        # ldexp(y, k) as y times 2^k (a libm call per element costs 3x the loop): exact, as 2^k
        # (|k| <= 400) and y * 2^k (y a table value of 2^u, u in [0, 1]) are normal doubles
        out[n] = np.float32(y * _pow2(k))


def _gate_loop(x, times_x, lo, segments, table, steps, out):
    span = -lo
    scale = segments / (0.0 - lo)
    for n in range(x.size):
        xn = x[n]
        if xn != xn:
            out[n] = np.float32(np.nan)
            continue
        xd = np.float64(xn)
        a = abs(xd)
        inside = 1.0 if a <= span else 0.0
        y = _interp_one(max((span - a) * scale, 0.0), segments, table, steps) * inside
        y = abs((1.0 if xd > 0.0 else 0.0) - y)
        if times_x:
            y = -0.0 if xd == -np.inf else y * xd
        out[n] = np.float32(y)


def _abs_lookup_one(a, hi, beyond, segments, table, steps):
    """_lookup_abs for one |x| (not NaN)."""
    cap = max(np.float64(segments), hi * (segments / hi))
    outside = 1.0 if a > hi else 0.0
    y = _interp_one(min(a * (segments / hi), cap), segments, table, steps) * (1.0 - outside)
    return y + outside * beyond if beyond else y


def _abs_table_loop(x, softplus, hi, segments, table, steps, out):
    """tanh/erf (odd: the table at |x| with x's sign) or softplus (the table at |x| plus max(x, 0))."""
    for n in range(x.size):
        xn = x[n]
        if xn != xn:
            out[n] = np.float32(np.nan)
            continue
        xd = np.float64(xn)
        if softplus:
            out[n] = np.float32(_abs_lookup_one(abs(xd), hi, 0.0, segments, table, steps) + max(xd, 0.0))
        else:  # x's sign after the rounding or before it: the same (rounding is symmetric)
            out[n] = np.float32(math.copysign(_abs_lookup_one(abs(xd), hi, 1.0, segments, table, steps), xd))


# log, sqrt, rsqrt and reciprocal split x into mantissa and exponent and look the mantissa up; zero,
# negative, infinite and NaN inputs take the reference formula (the loop writes their positions to
# `special` and returns how many; domain_function evaluates those through numerics).

def _lookup_one(u, lo, hi, segments, table, steps):
    """numerics._lookup for one u (not NaN): clipped to [lo, hi], then interpolated."""
    return _interp_one((min(max(u, lo), hi) - lo) * (segments / (hi - lo)), segments, table, steps)


def _mantissa_exponent_one(a, lo_mantissa):
    """numerics._mantissa_exponent for one a > 0: a = m * 2^e, m in [lo_mantissa, 2 * lo_mantissa)."""
    m, e = math.frexp(a)
    while m < lo_mantissa:
        m = 2 * m
        e = e - 1
    return m, e


def _pow2(k):
    """2.0 ** k from its bits, for |k| <= 1022 (ldexp by it is a multiplication, exact while normal)."""
    return np.int64((np.int64(k) + 1023) << 52).view(np.float64)


MANTISSA_CODES = {"log": 0, "sqrt": 1, "rsqrt": 2, "reciprocal": 3}


def _mantissa_loop(x, code, lo, hi, segments, table, steps, out, special):
    """log, sqrt, rsqrt or reciprocal (MANTISSA_CODES) of every x in the table's domain (x > 0 finite;
    reciprocal: x != 0 finite); the positions of the others go to `special`, their count is returned."""
    ln2 = math.log(2.0)
    count = 0
    for n in range(x.size):
        xd = np.float64(x[n])
        if not ((xd != 0.0 and abs(xd) < np.inf) if code == 3 else (0.0 < xd < np.inf)):
            special[count] = n
            count += 1
            continue
        if code == 0:
            m, e = _mantissa_exponent_one(xd, lo)  # the log table starts at sqrt(1/2), where m does
            y = e * ln2 + (m - 1.0) * _lookup_one(m, lo, hi, segments, table, steps)
        elif code == 3:
            m, e = _mantissa_exponent_one(abs(xd), 1.0)
            y = math.copysign(_lookup_one(m, lo, hi, segments, table, steps) * _pow2(-e), xd)
        else:
            m, e = _mantissa_exponent_one(xd, 1.0)
            if e % 2 != 0:  # m in [1, 4), e even
                m = 2 * m
                e = e - 1
            y = _lookup_one(m, lo, hi, segments, table, steps) * _pow2(-(e // 2) if code == 2 else e // 2)
        out[n] = np.float32(y)
    return count


def _loop_signature(*scalars: str):
    def signature(nb):
        table = nb.types.Array(nb.float64, 1, "C", readonly=True)
        return nb.void(nb.float32[::1], *(getattr(nb, s) for s in scalars), nb.intp, table, table, nb.float32[::1])
    return signature


def _mantissa_signature(nb):
    table = nb.types.Array(nb.float64, 1, "C", readonly=True)
    return nb.intp(nb.float32[::1], nb.intp, nb.float64, nb.float64, nb.intp, table, table, nb.float32[::1],
                   nb.intp[::1])


_HELPERS = (_interp_one, _abs_lookup_one, _lookup_one, _mantissa_exponent_one, _pow2)
DOMAIN_FUNCS = tuple(MANTISSA_CODES)
LOOPS = {
    "mantissa": jit.Kernel(_mantissa_loop, _mantissa_signature, _HELPERS),
    "exp": jit.Kernel(_exp_loop, _loop_signature(), _HELPERS),
    "gate": jit.Kernel(_gate_loop, _loop_signature("boolean", "float64"), _HELPERS),
    "abs": jit.Kernel(_abs_table_loop, _loop_signature("boolean", "float64"), _HELPERS),
}




def table_activation(func: str, x32: np.ndarray, segments: int, lo: float, hi: float,
                     table: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Table-mode `func` (one of FUNCS) of an f32 array, rounded to f32: the same bits as numerics'
    reference evaluation for every input. `table`/`steps` are the function's float64 knot values and
    their differences over [lo, hi] with `segments` segments. Returns a new f32 array of x32's shape."""
    return table_function(func, segments, lo, hi, table, steps)(x32)


def table_function(func: str, segments: int, lo: float, hi: float, table: np.ndarray,
                   steps: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """`table_activation` for one function and table, as a function of the f32 array alone: the
    choices and the scratch buffers are made once (a tile of a few hundred elements costs little
    more than the twenty-odd numpy calls themselves). Where device_model.jit compiles this
    function's loop, one call of it replaces the passes (the same bits; see LOOPS)."""
    # the arithmetic selects below rely on every interpolated value lying in [0, 1]
    assert func == "exp" or 0.0 <= table.min() and table.max() <= 1.0, func
    if func == "exp":
        def kernel(xs, lowest, highest, buf, dst):
            _exp(xs, lowest, highest, segments, table, steps, buf, dst)
        loop_kind, loop_args = "exp", ()
    elif func in GATES:
        def kernel(xs, lowest, highest, buf, dst):
            _gate(func, xs, lowest, highest, lo, segments, table, steps, buf, dst)
        loop_kind, loop_args = "gate", (func != "sigmoid", float(lo))
    elif func in ODD:
        def kernel(xs, lowest, highest, buf, dst):
            _odd(xs, lowest, highest, hi, segments, table, steps, buf, dst)
        loop_kind, loop_args = "abs", (False, float(hi))
    elif func == "softplus":
        def kernel(xs, lowest, highest, buf, dst):
            _softplus(xs, lowest, highest, hi, segments, table, steps, buf, dst)
        loop_kind, loop_args = "abs", (True, float(hi))
    else:
        raise ValueError(f"no fast table path for {func!r}")
    table, steps = np.ascontiguousarray(table, F64), np.ascontiguousarray(steps, F64)

    def evaluate(x32: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(x32, dtype=F32).reshape(-1)
        n = flat.size
        out = np.empty(n, F32)
        if n == 0:
            return out.reshape(np.shape(x32))
        loop = compiled_loop(loop_kind)
        if loop is not None:
            loop(flat, *loop_args, segments, table, steps, out)
            return out.reshape(np.shape(x32))
        buf = _buffers(min(n, _BLOCK))
        for start in range(0, n, _BLOCK):
            xs = flat[start:start + _BLOCK]
            lowest, highest = float(xs.min()), float(xs.max())
            nan = None
            if lowest != lowest or highest != highest:  # min/max propagate NaN
                nan = np.isnan(xs)
                xs = np.where(nan, np.float32(0.0), xs)
                lowest, highest = float(xs.min()), float(xs.max())
            dst = out[start:start + xs.size]
            kernel(xs, lowest, highest, buf, dst)
            if nan is not None:
                dst[nan] = _CANONICAL_NAN
        return out.reshape(np.shape(x32))
    return evaluate


def domain_function(func: str, segments: int, lo: float, hi: float, table: np.ndarray, steps: np.ndarray,
                    reference: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Table-mode `func` (one of DOMAIN_FUNCS) of an f32 array as one compiled loop, the elements
    outside the table's domain (zero, negative, infinite, NaN) through `reference` (f32 array -> its
    f32 results: numerics' evaluation, which is elementwise); without a compiled loop, `reference`
    evaluates the whole array. Returns a new f32 array of x's shape."""
    code = MANTISSA_CODES[func]
    lo, hi = float(lo), float(hi)
    table, steps = np.ascontiguousarray(table, F64), np.ascontiguousarray(steps, F64)

    def evaluate(x32: np.ndarray) -> np.ndarray:
        loop = compiled_loop("mantissa")
        if loop is None:
            return reference(x32)
        flat = np.ascontiguousarray(x32, dtype=F32).reshape(-1)
        out = np.empty(flat.size, F32)
        special = np.empty(flat.size, np.intp)
        count = loop(flat, code, lo, hi, segments, table, steps, out, special)
        if count:
            positions = special[:count]
            out[positions] = reference(flat[positions])
        return out.reshape(np.shape(x32))
    return evaluate


def compiled_loop(kind: str) -> Callable | None:
    """The compiled loop of `kind` (a key of LOOPS), or None: then the numpy passes run."""
    return LOOPS[kind].compiled()


_LOCAL = threading.local()  # machines may run in several threads (a TUI worker, a test)


def _buffers(n: int) -> _Buffers:
    """Scratch for a block of n elements, shared by the calls of one thread (they never nest, and each
    writes what it reads): sized to the next power of two so a handful serve every tile size."""
    size = 1 << max(0, n - 1).bit_length()
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    buf = pool.get(size)
    if buf is None:
        buf = pool[size] = _Buffers(size)
    return buf
