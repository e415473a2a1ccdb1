"""Which bytes an access pattern touches, and whether two access patterns overlap.

The one overlap implementation: the debugger's watchpoints and the race sanitizer both use it.

A `Footprint` is the exact set of bytes an AP touches: the same byte set in every partition of
`pstart .. pstart+pcount-1` (HBM has one "partition"), stored as sorted, disjoint, non-adjacent
half-open intervals `[lo, hi)`. The common case (a contiguous or row-strided tile) is one interval
or one interval per row; strided 4-D patterns are exact too (the intervals are enumerated, merged
where runs touch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import itemsize
from .isa import AP

_CACHE_LIMIT = 1 << 16
MAX_RUNS = 1 << 25  # about what executing such an instruction would cost anyway


@dataclass(frozen=True, eq=False)
class Footprint:
    space: str
    pstart: int
    pcount: int
    lo: np.ndarray  # int64, sorted interval starts (bytes inside one partition / HBM)
    hi: np.ndarray  # int64, matching ends (exclusive)

    @property
    def first(self) -> int:
        return int(self.lo[0]) if len(self.lo) else 0

    @property
    def end(self) -> int:
        return int(self.hi[-1]) if len(self.hi) else 0

    @property
    def bytes_per_partition(self) -> int:
        return int((self.hi - self.lo).sum())

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self.lo.tolist(), self.hi.tolist()))

    def partitions(self) -> range:
        return range(self.pstart, self.pstart + self.pcount)


_cache: dict[AP, Footprint] = {}


def footprint(ap: AP) -> Footprint:
    """The bytes `ap` touches (cached: APs are immutable and programs reuse them)."""
    fp = _cache.get(ap)
    if fp is None:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        fp = _cache[ap] = _build(ap)
    return fp


def _build(ap: AP) -> Footprint:
    size = itemsize(ap.dtype)
    # The byte set does not depend on the order of the dims: sort by stride, drop dims that add
    # nothing (count 1 or stride 0), then fold the innermost dims into one contiguous run.
    dims = sorted(((s * size, c) for s, c in ap.dims if c > 1 and s > 0), reverse=True)
    run = size
    while dims and dims[-1][0] <= run:  # a stride no larger than the run: runs touch or overlap
        stride, count = dims.pop()
        run = stride * (count - 1) + run
    runs = 1
    for _, count in dims:
        runs *= count
    if runs > MAX_RUNS:
        raise ValueError(f"access pattern {ap} has {runs} separate runs of bytes (more than {MAX_RUNS}): "
                         "too fragmented to compare")
    starts = np.array([ap.offset], dtype=np.int64)
    for stride, count in reversed(dims):  # innermost remaining first; order is irrelevant for the set
        starts = (starts[None, :] + (np.arange(count, dtype=np.int64) * stride)[:, None]).reshape(-1)
    lo, hi = _merge(np.sort(starts), run)
    return Footprint(ap.space, ap.pstart, ap.pcount, lo, hi)


def _merge(starts: np.ndarray, run: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted starts of equal-length runs -> disjoint merged intervals."""
    if len(starts) == 1:
        return starts, starts + run
    ends = starts + run
    # a new interval begins where a start lies beyond every earlier end (ends are sorted too)
    new = np.empty(len(starts), dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > ends[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(starts) - 1)
    return starts[first], ends[last]


def span(space: str, pstart: int, pcount: int, lo: int, hi: int) -> Footprint:
    """A plain rectangle: partitions `pstart..+pcount`, bytes [lo, hi) in each."""
    return Footprint(space, pstart, pcount, np.array([lo], np.int64), np.array([hi], np.int64))


def overlaps(a: AP | Footprint, b: AP | Footprint) -> bool:
    """Whether two access patterns (or footprints) touch at least one common byte."""
    fa = a if isinstance(a, Footprint) else footprint(a)
    fb = b if isinstance(b, Footprint) else footprint(b)
    if fa.space != fb.space or not _partitions_meet(fa, fb):
        return False
    if fa.end <= fb.first or fb.end <= fa.first:
        return False
    if len(fa.lo) == 1 and len(fb.lo) == 1:
        return True  # the extents meet and each is one interval
    return bool(_hits(fa, fb).any())


def overlap(a: AP | Footprint, b: AP | Footprint) -> Footprint | None:
    """The bytes both touch (partition range and byte intervals), or None."""
    fa = a if isinstance(a, Footprint) else footprint(a)
    fb = b if isinstance(b, Footprint) else footprint(b)
    if not overlaps(fa, fb):
        return None
    p0 = max(fa.pstart, fb.pstart)
    p1 = min(fa.pstart + fa.pcount, fb.pstart + fb.pcount)
    # intersect two sorted interval lists: candidates are every pair that meets
    los, his = [], []
    i = j = 0
    alo, ahi, blo, bhi = fa.lo.tolist(), fa.hi.tolist(), fb.lo.tolist(), fb.hi.tolist()
    while i < len(alo) and j < len(blo):
        lo, hi = max(alo[i], blo[j]), min(ahi[i], bhi[j])
        if lo < hi:
            los.append(lo)
            his.append(hi)
        if ahi[i] < bhi[j]:
            i += 1
        else:
            j += 1
    return Footprint(fa.space, p0, p1 - p0, np.array(los, np.int64), np.array(his, np.int64))


def _partitions_meet(fa: Footprint, fb: Footprint) -> bool:
    return fa.pstart < fb.pstart + fb.pcount and fb.pstart < fa.pstart + fa.pcount


def _hits(fa: Footprint, fb: Footprint) -> np.ndarray:
    """For each interval of the shorter list, whether it meets an interval of the other."""
    if len(fa.lo) > len(fb.lo):
        fa, fb = fb, fa
    # the first interval of b ending after a's start; it overlaps iff it starts before a's end
    idx = np.searchsorted(fb.hi, fa.lo, side="right")
    ok = idx < len(fb.lo)
    return ok & (fb.lo[np.minimum(idx, len(fb.lo) - 1)] < fa.hi)


def contains_byte(fp: Footprint, partition: int, byte: int) -> bool:
    """Whether the footprint touches `byte` of `partition` (partition ignored for HBM)."""
    if fp.space != "hbm" and not fp.pstart <= partition < fp.pstart + fp.pcount:
        return False
    i = int(np.searchsorted(fp.hi, byte, side="right"))
    return i < len(fp.lo) and fp.lo[i] <= byte
