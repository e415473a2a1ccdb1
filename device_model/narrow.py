"""Elementwise ufunc calls on narrow tiles as one 1-D call per column.

A tile of R partitions x F free elements is R short rows far apart in memory. numpy runs an
elementwise call on such a 2-D view through its general iterator: it copies the operands into
buffers (or loops row by row), and first tries to prove that the output does not overlap an input,
which for interleaved rows it cannot do cheaply, so it copies the inputs as well. On a [32, 2] f32
tile that is ~1.7 us against ~0.3-0.6 us for each column, a 1-D strided array, which numpy hands
straight to its inner loop. So for F <= NARROW_MAX columns, F calls are cheaper than one.

That changes which inner loop numpy runs on which elements, and the column order of the writes:
- the writes: a column's output may not be an input of a later column, so the output may overlap no
  input unless it is that input itself (each element then reads only itself);
- the loops: every element is the same IEEE operation on the same operands, except where both are
  NaN: which payload comes out depends on how the loop was compiled (see unbuffered). Nothing is
  assumed: `column_calls` probes every (ufunc, operand layouts) it is asked for once per process
  against numpy's own 2-D call on scratch arrays with the same strides, with NaN pairs of distinct
  payloads at every element, and returns None -- the caller keeps numpy's call -- when a single bit
  differs.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

NARROW_MAX = 2  # columns: from 3 on, the calls cost more than numpy's one 2-D call
# ufuncs whose every element is one correctly rounded IEEE operation or comparison, so that any loop
# gives the same value; what may still differ (a NaN pair's payload, the sign of max(+0, -0)) is probed.
# (power, fmod, ...: numpy's vector loops may round otherwise than its scalar ones.)
ONE_IEEE_OPERATION = frozenset({np.add, np.subtract, np.multiply, np.divide, np.maximum, np.minimum})
_F32 = np.dtype(np.float32)
_PROBED: dict[tuple, bool] = {}
_SCRATCH_MAX = 64 << 20  # bytes a probe's scratch array may span (rows far apart in HBM: not probed)


def _is_scalar(x) -> bool:
    return not isinstance(x, np.ndarray) or x.ndim == 0


def _as_rows(x: np.ndarray, rows: int, cols: int) -> np.ndarray | None:
    """x seen as [rows, cols] without a copy (cols may be 1 for a per-row operand), or None."""
    if x.shape == (rows, cols):
        return x
    if x.size != rows * cols:
        return None
    try:
        return np.reshape(x, (rows, cols), copy=False)
    except (ValueError, TypeError):
        return None


def column_calls(ufunc: np.ufunc, inputs: tuple, out: np.ndarray) -> Callable[[], None] | None:
    """A function doing `ufunc(*inputs, out=out)` for these very arrays (their memory is read and
    written on each call) as one 1-D call per column, bit for bit as numpy's 2-D call; None when
    that is not cheaper or cannot be guaranteed. out: f32 of R rows and F free elements (any shape
    whose rows are its first axis); inputs: f32 arrays of out's size or with one element per row
    (broadcast along the row), or f32 scalars."""
    if out.dtype != _F32 or out.ndim < 1 or out.size == 0:
        return None
    rows = out.shape[0]
    cols = out.size // rows
    if cols > NARROW_MAX or ufunc not in ONE_IEEE_OPERATION or ufunc.nin != len(inputs):
        return None
    out2 = _as_rows(out, rows, cols)
    if out2 is None or not out2.flags.aligned or any(st == 0 and n > 1 for n, st in zip(out2.shape, out2.strides)):
        return None  # (an unaligned array takes other numpy paths than the probe's; out never repeats)
    shaped = []
    for x in inputs:
        if _is_scalar(x):
            if np.asarray(x).dtype != _F32:
                return None
            shaped.append(x)
            continue
        if x.dtype != _F32 or not x.flags.aligned:
            return None
        x2 = _as_rows(x, rows, cols) if x.size == out.size else _as_rows(x, rows, 1)
        if x2 is None:
            return None
        if x2.shape[1] != cols or x2.__array_interface__ != out2.__array_interface__:
            if np.shares_memory(x2, out2, max_work=1 << 16):  # (too hard counts as an overlap)
                return None
        shaped.append(x2)
    if not _agrees(ufunc, shaped, out2):
        return None
    first, *rest = _columns(shaped, out2)
    if not rest:
        return lambda: ufunc(*first[0], out=first[1])
    (a, a_out), (b, b_out) = first, rest[0]

    def two_columns() -> None:
        ufunc(*a, out=a_out)
        ufunc(*b, out=b_out)
    return two_columns


def _columns(inputs: list, out: np.ndarray) -> list[tuple[tuple, np.ndarray]]:
    """(inputs, out) of each column's 1-D call: a scalar as a stride-0 array of the rows (numpy then
    skips converting a scalar on every call: ~0.15 us of a ~0.5 us call), a per-row input's one column."""
    rows = out.shape[0]
    inputs = [np.broadcast_to(np.asarray(x), (rows, 1)) if _is_scalar(x) else x for x in inputs]
    return [(tuple(x[:, min(j, x.shape[1] - 1)] for x in inputs), out[:, j]) for j in range(out.shape[1])]


def _layout(x) -> tuple:
    return (np.asarray(x).tobytes(),) if _is_scalar(x) else (x.shape, x.strides)


def _agrees(ufunc: np.ufunc, inputs: list, out: np.ndarray) -> bool:
    aliases = tuple(i for i, x in enumerate(inputs)
                    if not _is_scalar(x) and x.__array_interface__ == out.__array_interface__)
    key = (ufunc, tuple(_layout(x) for x in inputs), _layout(out), aliases)
    if key not in _PROBED:
        _PROBED[key] = _probe(ufunc, inputs, out, aliases)
    return _PROBED[key]


def _extent(x: np.ndarray) -> int:
    """Bytes from x's first element to the end of its last (strides non-negative)."""
    return sum((n - 1) * s for n, s in zip(x.shape, x.strides)) + x.itemsize


def _scratch(like: np.ndarray) -> np.ndarray:
    """A fresh array with `like`'s shape and strides (non-negative: views of device memory)."""
    buf = np.empty(_extent(like) // like.itemsize + 1, _F32)
    return np.lib.stride_tricks.as_strided(buf, like.shape, like.strides)


_FILLINGS = ("nan pairs", "+0 -0", "-0 +0", "mixed")


def _fill(rng, x: np.ndarray, filling: str, operand: int) -> None:
    """Operand `operand`'s values for one probe filling, at every element: NaNs with random payloads
    and signs (each element a NaN pair), zeros of opposite signs (max/min of equal values), or random
    bit patterns half of them NaN."""
    n = x.size
    if filling in ("+0 -0", "-0 +0"):
        negative = (operand % 2 == 0) == (filling == "-0 +0")
        x[...] = np.float32(-0.0 if negative else 0.0)
        return
    nan = rng.integers(1, 1 << 22, n, dtype=np.uint32) | np.uint32(0x7F800000)
    nan |= rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(22)  # quiet or signalling
    nan |= rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    if filling == "mixed":
        nan = np.where(rng.random(n) < 0.5, nan, rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32))
    x[...] = nan.view(_F32).reshape(x.shape)


def _probe(ufunc: np.ufunc, inputs: list, out: np.ndarray, aliases: tuple[int, ...]) -> bool:
    """True when the column calls equal numpy's 2-D call bit for bit on scratch arrays laid out like the
    real ones, in every filling (so each element is seen with a NaN pair and with both zero orders)."""
    if any(x.strides and min(x.strides) < 0 for x in inputs if not _is_scalar(x)) or min(out.strides) < 0:
        return False
    if any(_extent(x) > _SCRATCH_MAX for x in [*inputs, out] if not _is_scalar(x)):
        return False
    rng = np.random.default_rng(20261206)
    for filling in _FILLINGS:
        state = rng.bit_generator.state
        results = []
        for split in (False, True):
            rng.bit_generator.state = state  # both runs on the same values
            result = _scratch(out)
            args = []
            for i, x in enumerate(inputs):
                if _is_scalar(x):
                    args.append(x)
                    continue
                arg = result if i in aliases else _scratch(x)
                _fill(rng, arg, filling, i)
                args.append(arg)
            if not aliases:
                _fill(rng, result, filling, len(inputs))
            with np.errstate(all="ignore"):
                if split:
                    for column, column_out in _columns(args, result):
                        ufunc(*column, out=column_out)
                else:
                    ufunc(*args, out=result)
            results.append(result.copy().view(np.uint32))
        if not np.array_equal(results[0], results[1]):
            return False
    return True
