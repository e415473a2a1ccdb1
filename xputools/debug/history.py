"""Reverse execution's memory: periodic machine snapshots within a byte budget, and the log of
the one-engine steps (the only way a run departs from the free schedule), so any earlier point
can be rebuilt by restoring the nearest snapshot and replaying deterministically.

Budget: snapshots share unchanged memory pages (Memory.snapshot), so one costs the pages written
since the previous one. When the pages held exceed `budget_bytes`, every other snapshot is
dropped (the first one, the run's start, always stays) and the interval doubles: memory stays
bounded, and a reverse step replays at most one (current) interval of instructions.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from device_model.machine import Machine, MachineSnapshot

from .points import Point

DEFAULT_BUDGET = 256 << 20
DEFAULT_INTERVAL = 64


@dataclass
class FrozenStep:
    point: Point  # where it started
    engine: str


class History:
    def __init__(self, machine: Machine, budget_bytes: int = DEFAULT_BUDGET, interval: int = DEFAULT_INTERVAL):
        self.machine = machine
        self.budget = budget_bytes
        self.interval = interval
        self.points: list[Point] = []
        self.snaps: list[MachineSnapshot] = []
        self.steps: list[FrozenStep] = []
        self._refs: dict[int, list] = {}  # page id -> [count, nbytes, page]
        self.bytes = 0

    # ---- snapshots ---------------------------------------------------------------------------
    def take(self, point: Point) -> None:
        if self.points and self.points[-1] >= point:
            return
        snap = self.machine.snapshot()
        self.points.append(point)
        self.snaps.append(snap)
        self._count(snap, +1)
        while self.bytes > self.budget and len(self.snaps) > 2:
            self._thin()

    def next_due(self) -> int:
        """The retire count at which the next snapshot is due."""
        return (self.points[-1][0] if self.points else 0) + self.interval

    def _count(self, snap: MachineSnapshot, sign: int) -> None:
        for space in snap.memory.pages:
            for page in space:
                ref = self._refs.get(id(page))
                if ref is None:
                    ref = self._refs[id(page)] = [0, page.nbytes, page]
                    self.bytes += page.nbytes
                ref[0] += sign
                if ref[0] == 0:
                    self.bytes -= ref[1]
                    del self._refs[id(page)]

    def _thin(self) -> None:
        keep = [0] + list(range(2, len(self.snaps) - 1, 2)) + [len(self.snaps) - 1]
        keep = sorted(set(keep))
        for i in range(len(self.snaps)):
            if i not in keep:
                self._count(self.snaps[i], -1)
        self.points = [self.points[i] for i in keep]
        self.snaps = [self.snaps[i] for i in keep]
        self.interval *= 2

    def nearest(self, point: Point) -> int:
        """Index of the last snapshot at or before `point`."""
        return max(bisect.bisect_right(self.points, point) - 1, 0)

    # ---- the timeline ------------------------------------------------------------------------
    def fork(self, point: Point) -> None:
        """The run departs from the recorded future at `point`: forget what lies beyond it."""
        while len(self.points) > 1 and self.points[-1] > point:
            self.points.pop()
            self._count(self.snaps.pop(), -1)
        self.steps = [s for s in self.steps if s.point < point]

    def frozen_step_at(self, point: Point) -> FrozenStep | None:
        for s in self.steps:
            if s.point == point:
                return s
        return None

    def has_future_steps(self, point: Point) -> bool:
        return any(s.point >= point for s in self.steps)

    def steps_between(self, start: Point, end: Point) -> list[FrozenStep]:
        return [s for s in self.steps if start <= s.point < end]
