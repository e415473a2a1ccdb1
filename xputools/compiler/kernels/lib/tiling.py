"""Cutting an N-D elementwise iteration space into [partitions, free] tiles.

Every operand is described by its element strides over the output's shape (0 on broadcast dims).
`elementwise_tiles` yields tiles whose rows go on partitions and whose free part is at most
`max_free` elements, with one HBM access pattern (<= 4 dims) per operand, so a kernel can DMA each
operand straight into a [P, F] SBUF tile, broadcasting included.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .dims import coalesce


@dataclass(frozen=True)
class Tile:
    partitions: int
    free: int
    row_dims: int  # how many leading dims of each pattern walk the partitions (0, 1 or 2)
    # per operand: (element offset, dims [(stride, count), ...]) whose C-order walk is the tile's
    # [partitions, free] elements
    patterns: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]


def _split_innermost(d: int, max_free: int) -> int | None:
    """A chunk size for a too-long innermost dim that divides it evenly, or None."""
    for f in range(max_free, max(max_free // 4, 1) - 1, -1):
        if d % f == 0:
            return f
    return None


def elementwise_tiles(shape: Sequence[int], strides_list: Sequence[Sequence[int]], partitions: int,
                      max_free: int) -> Iterator[Tile]:
    """Yield Tiles covering every element of `shape` once."""
    shape, strides = coalesce(tuple(shape), [tuple(s) for s in strides_list])
    if not shape:
        yield Tile(1, 1, 0, tuple((0, ((0, 1),)) for _ in strides))
        return
    shape, strides = list(shape), [list(s) for s in strides]
    ragged = None
    if shape[-1] > max_free:
        f = _split_innermost(shape[-1], max_free)
        if f is not None:
            shape[-1:] = [shape[-1] // f, f]
            for s in strides:
                s[-1:] = [s[-1] * f, s[-1]]
        else:
            ragged = max_free
    # free suffix: up to two innermost dims whose product fits
    free_start = len(shape) - 1
    if ragged is None and free_start >= 1 and shape[-1] * shape[-2] <= max_free:
        free_start -= 1
    row_dims = list(range(free_start))
    free_dims = list(range(free_start, len(shape)))
    chunks = [(0, shape[-1])] if ragged is None else [(c, min(ragged, shape[-1] - c))
                                                      for c in range(0, shape[-1], ragged)]
    for c0, cn in chunks:
        free_shape = [shape[i] for i in free_dims]
        free_shape[-1] = cn
        free = 1
        for d in free_shape:
            free *= d
        yield from _row_tiles(shape, strides, row_dims, free_dims, free_shape, c0, free, partitions)


def _row_tiles(shape: list[int], strides: list[list[int]], row_dims: list[int], free_dims: list[int],
               free_shape: list[int], c0: int, free: int, partitions: int) -> Iterator[Tile]:
    def free_part(s: list[int]) -> tuple[tuple[int, int], ...]:
        return tuple((s[i], n) for i, n in zip(free_dims, free_shape))

    base = [s[free_dims[-1]] * c0 for s in strides]
    if not row_dims:
        yield Tile(1, free, 0, tuple((b, free_part(s)) for b, s in zip(base, strides)))
        return
    inner = row_dims[-1]
    L = shape[inner]
    if L >= partitions or len(row_dims) == 1:
        outer = row_dims[:-1]
        for idx in itertools.product(*(range(shape[i]) for i in outer)):
            for r0 in range(0, L, partitions):
                p = min(partitions, L - r0)
                pats = []
                for b, s in zip(base, strides):
                    off = b + sum(s[i] * j for i, j in zip(outer, idx)) + s[inner] * r0
                    pats.append((off, ((s[inner], p),) + free_part(s)))
                yield Tile(p, free, 1, tuple(pats))
        return
    group = row_dims[-2]
    g = max(1, partitions // L)
    outer = row_dims[:-2]
    for idx in itertools.product(*(range(shape[i]) for i in outer)):
        for r0 in range(0, shape[group], g):
            k = min(g, shape[group] - r0)
            pats = []
            for b, s in zip(base, strides):
                off = b + sum(s[i] * j for i, j in zip(outer, idx)) + s[group] * r0
                pats.append((off, ((s[group], k), (s[inner], L)) + free_part(s)))
            yield Tile(k * L, free, 2, tuple(pats))
