"""Dims of strided iteration spaces: one merge rule for every layout kernels use.

A dim is a row `(count, stride, stride, ...)`, one stride per operand (element units), outermost
first. Access patterns spell a dim `(stride, count)`; `ap_dims` converts.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

from device_model.isa import MAX_FREE_DIMS

Dims = list[tuple[int, ...]]


def merge_dims(dims: Iterable[Sequence[int]]) -> Dims:
    """Drop count-1 dims and merge neighbours that continue each other in every stride column
    (outer stride == inner stride * inner count); the element order is unchanged."""
    out: Dims = []
    for d in dims:
        d = tuple(int(x) for x in d)
        if d[0] == 1:
            continue
        if out and all(ps == s * d[0] for ps, s in zip(out[-1][1:], d[1:])):
            out[-1] = (out[-1][0] * d[0],) + d[1:]
            continue
        out.append(d)
    return out


def ap_dims(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Access-pattern dims `(stride, count)`, merged by `merge_dims`; `((1, 1),)` when nothing is left."""
    return tuple((s, c) for c, s in merge_dims((c, s) for s, c in pairs)) or ((1, 1),)


def count_stride_dims(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """`(count, stride)` pairs as merged access-pattern dims `(stride, count)`."""
    return ap_dims((s, c) for c, s in pairs)


def coalesce(shape: Sequence[int],
             strides_list: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """`shape` with one stride tuple per operand, merged by `merge_dims`: (shape, strides per operand)."""
    merged = merge_dims(zip(shape, *strides_list))
    shape = tuple(d[0] for d in merged)
    strides = [tuple(d[k + 1] for d in merged) for k in range(len(strides_list))]
    return shape, strides


def row_major_strides(shape: Iterable[int]) -> tuple[int, ...]:
    """Element strides of a row-major tensor of `shape`."""
    out, acc = [], 1
    for d in reversed(tuple(shape)):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def broadcast_strides(in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a row-major `in_shape` tensor read as `out_shape` (numpy broadcasting)."""
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    if len(in_shape) > len(out_shape):
        raise ValueError(f"cannot broadcast {in_shape} to {out_shape}")
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    base = row_major_strides(padded)
    out = []
    for d_in, d_out, s in zip(padded, out_shape, base):
        if d_in == d_out:
            out.append(s if d_out > 1 else 0)
        elif d_in == 1:
            out.append(0)
        else:
            raise ValueError(f"cannot broadcast {in_shape} to {out_shape}")
    return tuple(out)


def volume(dims: Iterable[Sequence[int]]) -> int:
    """Elements of `(count, stride...)` dims."""
    return math.prod(d[0] for d in dims)


def stride_column(dims: Iterable[Sequence[int]], k: int) -> list[tuple[int, int]]:
    """`(count, stride)` pairs of stride column `k` (1 = the first operand)."""
    return [(d[0], d[k]) for d in dims]


def loop_excess(dims: Sequence[Sequence[int]], max_dims: int = MAX_FREE_DIMS) -> Iterator[tuple[tuple[int, ...], list]]:
    """Yield (offsets per stride column, kept dims): the dims beyond `max_dims` (those with the
    fewest elements, never the innermost) become loops."""
    ncols = len(dims[0]) - 1 if dims else 0
    if len(dims) <= max_dims:
        yield (0,) * ncols, list(dims)
        return
    looped_idx = sorted(sorted(range(len(dims) - 1), key=lambda i: dims[i][0])[:len(dims) - max_dims])
    looped = [dims[i] for i in looped_idx]
    kept = [d for i, d in enumerate(dims) if i not in looped_idx]
    for idx in itertools.product(*(range(d[0]) for d in looped)):
        yield tuple(sum(j * d[k] for j, d in zip(idx, looped)) for k in range(1, ncols + 1)), kept


def blocks(dims: Sequence[Sequence[int]], max_elems: int) -> Iterator[tuple[tuple[int, ...], list]]:
    """Yield (offsets per stride column, sub dims) covering `dims` in pieces of at most
    `max_elems` elements: whole inner dims, a chunk of the next one, loops over the rest."""
    ncols = len(dims[0]) - 1 if dims else 0
    inner, k = 1, len(dims)
    while k > 0 and inner * dims[k - 1][0] <= max_elems:
        inner *= dims[k - 1][0]
        k -= 1
    if k == 0:
        yield (0,) * ncols, list(dims)
        return
    chunk = max(1, max_elems // inner)
    outer, mid, rest = dims[:k - 1], dims[k - 1], list(dims[k:])
    for idx in itertools.product(*(range(d[0]) for d in outer)):
        base = [sum(j * d[c] for j, d in zip(idx, outer)) for c in range(1, ncols + 1)]
        for m0 in range(0, mid[0], chunk):
            mc = min(chunk, mid[0] - m0)
            yield (tuple(b + m0 * mid[c + 1] for c, b in enumerate(base)),
                   [(mc,) + tuple(mid[1:])] + rest)
