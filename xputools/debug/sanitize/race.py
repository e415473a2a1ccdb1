"""The race check: two accesses to overlapping bytes, at least one a write, from engines that no
semaphore path orders (happens-before from `clocks.VectorClocks` over the actual run).

Accesses are filed by memory block. Within a block, each engine's accesses are in its program
order, so scanning one engine's list backwards can stop at the first access that happens before
the new one: every earlier access of that engine does too. The cost per access is therefore one
step per engine plus one per genuinely concurrent access in the same block; only those get the
exact byte overlap test (`device_model.access.overlap`).
"""
from __future__ import annotations

from dataclasses import dataclass

from device_model.access import overlap
from device_model.isa import AP

BLOCK_BYTES = {"sbuf": 1024, "psum": 2048, "hbm": 16384}


@dataclass(frozen=True)
class Touch:
    """One operand of one completed instruction."""

    engine_id: int
    index: int
    write: bool
    operand: str
    ap: AP


@dataclass(frozen=True)
class Race:
    first: Touch  # earlier in the actual run
    second: Touch
    region: object  # device_model.access.Footprint of the common bytes


class RaceDetector:
    def __init__(self):
        # space -> block -> engine id -> (writes, reads), each a list of Touch in program order
        self._blocks: dict[str, dict[int, dict[int, tuple[list, list]]]] = {s: {} for s in BLOCK_BYTES}
        self._seen: set[tuple] = set()

    def access(self, touch: Touch, clock: list[int]) -> list[Race]:
        """File `touch` (made by an instruction whose clock is `clock`); return the races it
        completes with earlier, unordered accesses (each instruction pair once)."""
        ap = touch.ap
        size = BLOCK_BYTES[ap.space]
        first, end = ap.byte_extent()
        table = self._blocks[ap.space]
        eid = touch.engine_id
        races = []
        for block in range(first // size, (end - 1) // size + 1):
            engines = table.get(block)
            if engines is None:
                engines = table[block] = {}
            for other, (writes, reads) in engines.items():
                if other == eid:
                    continue
                known = clock[other]  # other's instructions < known happen before this one
                races += self._scan(writes, known, touch)
                if touch.write:
                    races += self._scan(reads, known, touch)
            mine = engines.get(eid)
            if mine is None:
                mine = engines[eid] = ([], [])
            mine[0 if touch.write else 1].append(touch)
        return races

    def _scan(self, earlier: list[Touch], known: int, touch: Touch) -> list[Race]:
        found = []
        for prev in reversed(earlier):
            if prev.index < known:
                break
            key = (prev.engine_id, prev.index, touch.engine_id, touch.index)
            if key in self._seen:
                continue
            region = overlap(prev.ap, touch.ap)
            if region is not None:
                self._seen.add(key)
                found.append(Race(prev, touch, region))
        return found
