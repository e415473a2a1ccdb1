"""The race check: two accesses to overlapping bytes, at least one a write, from engines that no
semaphore path orders (happens-before from `clocks.VectorClocks` over the actual run).

Each engine's accesses are kept per memory space in its program order. A new access by an
instruction with clock C is unordered exactly with engine x's accesses from index C[x] on: a
suffix of x's list, found by bisection. In a synchronised program that suffix is short (the work
in flight), so the cost per access is about one bisection per engine plus the concurrent accesses;
those get a bounding-box test and then the exact byte overlap (`device_model.access.overlap`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from device_model.access import overlap
from device_model.isa import AP, SPACES


@dataclass(frozen=True)
class Touch:
    """One operand of one completed instruction."""

    engine_id: int
    index: int
    write: bool
    operand: str
    ap: AP
    box: tuple[int, int, int, int] = field(init=False, compare=False)  # first byte, end, first partition, end

    def __post_init__(self):
        first, end = self.ap.byte_extent()
        object.__setattr__(self, "box", (first, end, self.ap.pstart, self.ap.pstart + self.ap.pcount))


@dataclass(frozen=True)
class Race:
    first: Touch  # earlier in the actual run
    second: Touch
    region: object  # device_model.access.Footprint of the common bytes


class _Stream:
    """One engine's reads or writes in one memory space, in program order."""

    __slots__ = ("indices", "touches")

    def __init__(self):
        self.indices: list[int] = []
        self.touches: list[Touch] = []

    def since(self, index: int) -> list[Touch]:
        return self.touches[bisect.bisect_left(self.indices, index):]


class RaceDetector:
    def __init__(self):
        # space -> engine id -> (writes, reads)
        self._streams: dict[str, dict[int, tuple[_Stream, _Stream]]] = {s: {} for s in SPACES}
        self._seen: set[tuple[int, int, int, int]] = set()

    def access(self, touch: Touch, clock: list[int]) -> list[Race]:
        """File `touch` (made by an instruction whose clock is `clock`); return the races it
        completes with earlier, unordered accesses (each instruction pair once)."""
        engines = self._streams[touch.ap.space]
        eid = touch.engine_id
        races = []
        for other, (writes, reads) in engines.items():
            if other == eid:
                continue
            known = clock[other]  # other's instructions before `known` happen before this one
            races += self._scan(writes.since(known), touch)
            if touch.write:
                races += self._scan(reads.since(known), touch)
        mine = engines.get(eid)
        if mine is None:
            mine = engines[eid] = (_Stream(), _Stream())
        stream = mine[0 if touch.write else 1]
        stream.indices.append(touch.index)
        stream.touches.append(touch)
        return races

    def _scan(self, concurrent: list[Touch], touch: Touch) -> list[Race]:
        found = []
        first, end, p0, p1 = touch.box
        for prev in concurrent:
            f, e, q0, q1 = prev.box
            if f >= end or first >= e or q0 >= p1 or p0 >= q1:
                continue
            key = (prev.engine_id, prev.index, touch.engine_id, touch.index)
            if key in self._seen:
                continue
            region = overlap(prev.ap, touch.ap)
            if region is not None:
                self._seen.add(key)
                found.append(Race(prev, touch, region))
        return found
