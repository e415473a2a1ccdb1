"""tensor_tensor and tensor_scalar on small f32 tiles as one compiled loop (device_model.jit).

On a tile of a few dozen elements each numpy call costs about a microsecond whatever it computes; an
instruction of one or two stages costs one or two of them (or one per column, see narrow), the loop
a third of one. The loop computes each element with the f32 operations numpy's call does, in the
same order (x op y, or y op x for a reversed stage; a first stage's result kept in f32), so every
finite or infinite result and every NaN from a single NaN operand (the hardware's: that NaN,
quietened) is numpy's. Which payload survives when both operands are NaN is up to numpy's loop
(it may swap a commutative op's operands): an instruction with such a pair anywhere, or with a NaN
scalar, runs its general executor instead, before the loop writes anything.

Only where the result is dst itself (f32) and every operand is f32 memory fixed at build time, seen
as [rows, columns]; dst may be an operand itself (the same elements: each is read before it is
written) but must not otherwise overlap one.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import jit
from .unbuffered import may_overlap

SMALL_TILE = 4096  # elements: above, numpy's vectorised loops beat a scalar one
CODES = {np.add: 0, np.subtract: 1, np.multiply: 2, np.divide: 3}
_NO_STAGE = -1


def _apply(code, x, y):
    if code == 0:
        return x + y
    if code == 1:
        return x - y
    if code == 2:
        return x * y
    return x / y


def _binary_loop(a, b, code, out):
    """out = a (code) b elementwise; False (nothing written) where some element has two NaN operands."""
    rows, cols = out.shape
    for r in range(rows):
        for c in range(cols):
            if a[r, c] != a[r, c] and b[r, c] != b[r, c]:
                return False
    for r in range(rows):
        for c in range(cols):
            out[r, c] = _apply(code, a[r, c], b[r, c])
    return True


def _stages_loop(x, s0, code0, rev0, s1, code1, rev1, out):
    """out = ((x op0 s0) op1 s1) with per-row scalars s0, s1 ([rows, 1]; code1 -1: one stage) and
    reversed stages computing s op x; False (nothing written) where a scalar is NaN."""
    rows, cols = out.shape
    for r in range(rows):
        if s0[r, 0] != s0[r, 0] or (code1 != -1 and s1[r, 0] != s1[r, 0]):
            return False
    for r in range(rows):
        k0, k1 = s0[r, 0], s1[r, 0]
        for c in range(cols):
            t = _apply(code0, k0, x[r, c]) if rev0 else _apply(code0, x[r, c], k0)
            if code1 != -1:
                t = _apply(code1, k1, t) if rev1 else _apply(code1, t, k1)
            out[r, c] = t
    return True


def _tile(nb, writable: bool = False):
    return nb.float32[:, :] if writable else nb.types.Array(nb.float32, 2, "A", readonly=True)


BINARY = jit.Kernel(_binary_loop, lambda nb: nb.boolean(_tile(nb), _tile(nb), nb.intp, _tile(nb, True)),
                    (_apply,))
STAGES = jit.Kernel(_stages_loop, lambda nb: nb.boolean(
    _tile(nb), _tile(nb), nb.intp, nb.boolean, _tile(nb), nb.intp, nb.boolean, _tile(nb, True)), (_apply,))


def _as_tile(x: np.ndarray) -> np.ndarray | None:
    """x (f32) seen as [rows, columns] without a copy, or None."""
    if x.dtype != np.float32 or x.ndim == 0:
        return None
    if x.ndim == 2:
        return x
    tile = x.view()
    try:
        tile.shape = (x.shape[0], -1)  # raises where that needs a copy
    except AttributeError:
        return None
    return tile


def _fits(out: np.ndarray, operands) -> bool:
    """Small, and out either is an operand's very elements or overlaps none."""
    if out.size > SMALL_TILE or out.size == 0:
        return False
    for x in operands:
        same = (x.__array_interface__["data"][0] == out.__array_interface__["data"][0]
                and x.shape == out.shape and x.strides == out.strides)
        if not same and may_overlap(out, x):
            return False
    return True


def binary_tile(ufunc, a: np.ndarray, b: np.ndarray, out: np.ndarray,
                general: Callable[[], None]) -> Callable[[], None] | None:
    """An executor computing out = ufunc(a, b) through BINARY (falling back on `general`, the
    instruction's own executor, for a NaN pair or without a compiled loop), or None where the loop
    does not apply (see the module docstring)."""
    code = CODES.get(ufunc)
    tiles = [_as_tile(x) for x in (a, b, out)]
    if code is None or any(t is None for t in tiles) or not _fits(tiles[2], tiles[:2]):
        return None
    a2, b2, out2 = tiles
    compiled = BINARY.compiled

    def tensor_tensor_tile() -> None:
        loop = compiled()
        if loop is None or not loop(a2, b2, code, out2):
            general()
    return tensor_tensor_tile


def stages_tile(x: np.ndarray, stages, out: np.ndarray, general: Callable[[], None]) -> Callable[[], None] | None:
    """An executor computing tensor_scalar's one or two stages ((ufunc, scalar, reversed); scalar an
    f32 immediate or a per-row f32 array [rows, 1, ...]) from x into out through STAGES (falling back
    on `general` for a NaN scalar or without a compiled loop), or None where the loop does not apply."""
    x2, out2 = _as_tile(x), _as_tile(out)
    if x2 is None or out2 is None or not 1 <= len(stages) <= 2 or any(u not in CODES for u, _, _ in stages):
        return None
    rows = x2.shape[0]
    scalars = []
    for _, k, _ in stages:
        if isinstance(k, np.ndarray) and k.ndim:
            k2 = _as_tile(k)
            if k2 is None or k2.shape != (rows, 1) or may_overlap(out2, k2):
                return None
        else:
            k2 = np.full((rows, 1), k, np.float32)  # an immediate, as the loop reads per-row scalars
            if np.float32(k2[0, 0]).tobytes() != np.float32(k).tobytes():
                return None  # (an immediate that is not an f32 already)
        scalars.append(k2)
    if not _fits(out2, [x2]):
        return None
    (u0, _, rev0), s0 = stages[0], scalars[0]
    (u1, _, rev1), s1 = (stages[1], scalars[1]) if len(stages) == 2 else ((None, None, False), s0)
    code0, code1 = CODES[u0], CODES[u1] if u1 is not None else _NO_STAGE
    compiled = STAGES.compiled

    def tensor_scalar_tile() -> None:
        loop = compiled()
        if loop is None or not loop(x2, s0, code0, bool(rev0), s1, code1, bool(rev1), out2):
            general()
    return tensor_scalar_tile
