"""Windowed float32 sums bit-identical to `np.sum(x, axis=<innermost axes>, dtype=np.float32)`.

numpy's add.reduce walks small windows (pooling) through its generic iterator, a few elements per
call. Here the same additions run as one elementwise np.add per reduced position, over all outputs
at once. That is only exact if the additions happen in numpy's order, which this module derives
from the array's shape and strides the way numpy's reduction sets it up:

- the result starts at add's identity, +0.0 (so a sum is never -0.0);
- nditer orders the axes by decreasing |stride| of the operand (the allocated result follows);
- the buffered iterator makes the innermost run of reduced axes (in that order) one contiguous core
  (copying the operand into its buffer when their strides do not chain), and each inner-loop call
  adds `pairwise_sum` of that core (n elements) to the result: below 8 elements a left-to-right
  sum; from 8 to 128, eight running sums combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the
  remainder left to right. If the innermost axis is a kept one, each call adds single elements.
  The outer reduced axes are visited in iteration order.

A plan is only used after a probe on the same shape and strides matched np.sum bit for bit, and
any result holding a NaN is recomputed by np.sum (which NaN payload survives an addition of two
NaNs is not something this module claims to reproduce). Anything else — ties in strides, zero or
negative strides, windows above `MAX_WINDOW` — is left to np.sum.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

MAX_WINDOW = 64  # elements summed per output up to which the elementwise form pays
_PAIRWISE_UNROLL = 8  # numpy's pairwise_sum: below this, a plain loop; up to 128, eight accumulators
_PROBE_SEED = 0x5EED
# numpy's inner-loop calls (one per output and chunk) that cost about one whole-array np.add here:
# below that many per add, np.sum is the faster of the two (long contiguous rows, few outputs)
_CALLS_PER_ADD = 32
_MAX_CORE = 16  # numpy's pairwise_sum over a longer contiguous core beats one np.add per element


_Axis = tuple[int, int, int, bool]  # (dim, size, stride in bytes, reduced)


def _iteration_order(shape: tuple[int, ...], strides: tuple[int, ...], axes: int) -> list[_Axis] | None:
    """The axes of size > 1 in nditer's order for this reduction, outermost first, or None when the
    layout is outside what this module models (zero, negative or equal strides)."""
    ndim = len(shape)
    live = [(d, shape[d], strides[d], d >= ndim - axes) for d in range(ndim) if shape[d] != 1]
    if any(s <= 0 for _, _, s, _ in live) or len({s for _, _, s, _ in live}) != len(live):
        return None
    return sorted(live, key=lambda a: -a[2])


def _innermost_run(order: list[_Axis]) -> list[_Axis]:
    """The innermost axes that are all reduced or all kept (for reduced ones: the core numpy's inner
    loop sums in one pairwise_sum call)."""
    run: list[_Axis] = []
    for ax in reversed(order):
        if ax[3] != order[-1][3]:
            break
        run.insert(0, ax)
    return run


def _numpy_chunks(shape: tuple[int, ...], strides: tuple[int, ...], axes: int) -> list[list[tuple[int, ...]]] | None:
    """The reduced positions (index tuples over the last `axes` dims) grouped as numpy's inner loop
    adds them: a list of chunks in visiting order, each chunk in its summation order. None when the
    layout is outside what this module models."""
    ndim = len(shape)
    order = _iteration_order(shape, strides, axes)
    if order is None:
        return None
    inner = _innermost_run(order) if order and order[-1][3] else []
    reduced_order = [a for a in order if a[3]]
    window = shape[ndim - axes:]
    base = ndim - axes
    positions: list[tuple[int, ...]] = []
    for flat in range(int(np.prod([a[1] for a in reduced_order], dtype=np.int64))):
        idx = [0] * axes
        for ax in reversed(reduced_order):
            flat, idx[ax[0] - base] = divmod(flat, ax[1])
        positions.append(tuple(idx))
    if not positions:  # every window dim is 1
        positions = [tuple(0 for _ in window)]
    n = int(np.prod([a[1] for a in inner], dtype=np.int64)) if inner else 1
    return [positions[i:i + n] for i in range(0, len(positions), n)]


def _pairwise(parts: list[np.ndarray]) -> np.ndarray:
    """numpy's pairwise_sum of `parts` (the elements at one chunk's positions, at most 128 of them),
    elementwise over the outputs."""
    if len(parts) < _PAIRWISE_UNROLL:
        total = parts[0].copy() if len(parts) == 1 else np.add(parts[0], parts[1])
        for part in parts[2:]:
            np.add(total, part, out=total)
        return total
    lanes = [p.copy() for p in parts[:_PAIRWISE_UNROLL]]
    full = len(parts) - len(parts) % _PAIRWISE_UNROLL
    for i in range(_PAIRWISE_UNROLL, full, _PAIRWISE_UNROLL):
        for j in range(_PAIRWISE_UNROLL):
            np.add(lanes[j], parts[i + j], out=lanes[j])
    halves = [np.add(lanes[j], lanes[j + 1]) for j in range(0, _PAIRWISE_UNROLL, 2)]
    total = np.add(np.add(halves[0], halves[1]), np.add(halves[2], halves[3]))
    for part in parts[full:]:
        np.add(total, part, out=total)
    return total


def _summer(chunks: list[list[tuple[int, ...]]]) -> Callable[[np.ndarray], np.ndarray]:
    keyed = [[(Ellipsis,) + pos for pos in chunk] for chunk in chunks]
    zero = np.float32(0.0)
    # the element views of the last array summed: an executor reading memory in place passes the
    # same view object on every run, and slicing it anew cost about a third of a small pooling sum
    # (the reference held here keeps that object alive, so `is` cannot match a different array)
    last: list = [None, None]

    def window_sum(x: np.ndarray) -> np.ndarray:
        if last[0] is not x:
            last[0], last[1] = x, [[x[key] for key in chunk] for chunk in keyed]
        parts = last[1]
        acc = np.add(zero, _pairwise(parts[0]))  # numpy's result starts at +0.0
        for chunk in parts[1:]:
            np.add(acc, _pairwise(chunk), out=acc)
        return acc
    return window_sum


def _probe(shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """Values of wildly different magnitudes (so another order rounds differently) in an array of
    `shape` and `strides` (bytes, f32). Only the elements the view reaches are written: the buffer
    under a partition-strided view is mostly gaps that are never touched."""
    rng = np.random.default_rng(_PROBE_SEED)
    size = int(np.prod(shape, dtype=np.int64))
    values = rng.standard_normal(size) * np.exp2(rng.integers(-24, 24, size))
    values[rng.random(size) < 0.05] = -0.0
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides)) // 4
    view = np.lib.stride_tricks.as_strided(np.empty(span, np.float32), shape, strides)
    view[...] = values.reshape(shape)
    return view


@functools.lru_cache(maxsize=256)  # a probe costs ~1-2 ms: once per layout, not per instruction
def verified_summer(shape: tuple[int, ...], strides: tuple[int, ...], axes: int
                    ) -> Callable[[np.ndarray], np.ndarray] | None:
    """The elementwise sum in numpy's derived order for float32 arrays of `shape` and `strides`
    (bytes), or None when the layout is not modelled or a probe shows numpy adding otherwise."""
    chunks = _numpy_chunks(shape, strides, axes)
    if chunks is None:
        return None
    summer = _summer(chunks)
    probe = _probe(shape, strides)
    want = np.sum(probe, axis=tuple(range(len(shape) - axes, len(shape))), dtype=np.float32)
    if want.view(np.uint32).tobytes() != summer(probe).view(np.uint32).tobytes():
        return None  # numpy did not add in the derived order: never take the fast path here
    return summer


class WindowSum:
    """np.sum over the innermost `axes` dims of float32 arrays of `shape`, in numpy's summation
    order, faster for small windows. Plans are derived per strides layout on first sight."""

    def __init__(self, shape: tuple[int, ...], axes: int):
        self.shape, self.axes = tuple(shape), axes
        self.axis = tuple(range(len(shape) - axes, len(shape)))
        self._plans: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray] | None] = {}

    @staticmethod
    def worth_it(shape: tuple[int, ...], axes: int) -> bool:
        """Whether the elementwise form can pay: a small window (2..MAX_WINDOW) with outputs."""
        window = int(np.prod(shape[len(shape) - axes:], dtype=np.int64))
        return 0 < axes < len(shape) and 1 < window <= MAX_WINDOW

    def _plan(self, strides: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray] | None:
        order = _iteration_order(self.shape, strides, self.axes)
        chunks = _numpy_chunks(self.shape, strides, self.axes)
        if not order or chunks is None:
            return None
        elements = int(np.prod(self.shape, dtype=np.int64))
        window = int(np.prod(self.shape[len(self.shape) - self.axes:], dtype=np.int64))
        # numpy's inner-loop calls; a kept innermost run is counted whole (it may not coalesce, so
        # this can only undercount numpy's calls and leave more work to np.sum)
        calls = elements // int(np.prod([a[1] for a in _innermost_run(order)], dtype=np.int64))
        if max(map(len, chunks)) > _MAX_CORE or calls < _CALLS_PER_ADD * (window + len(chunks)):
            return None
        return verified_summer(self.shape, strides, self.axes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The sum; x must be float32 of `shape`."""
        strides = x.strides
        if strides not in self._plans:
            self._plans[strides] = self._plan(strides)
        summer = self._plans[strides]
        if summer is not None:
            out = summer(x)
            if not np.isnan(out).any():
                return out
        return np.sum(x, axis=self.axis, dtype=np.float32)
