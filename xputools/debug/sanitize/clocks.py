"""Happens-before over one actual run: vector clocks carried by semaphore signal -> wait edges.

Every engine (and DMA queue) runs its stream in order, one instruction at a time, so an engine's
own earlier instructions always happen before its later ones. Across engines the only order is a
semaphore: a wait `s >= v` is released by the signal that brought `s` to `v` in this run, and it
inherits everything that happened before that signal and the signals to `s` before it.

Clock of instruction (e, j): `clock[x]` = how many of engine x's instructions happen before it
(its own entry is j). So (x, i) happens before (e, j) iff `i < clock_of(e, j)[x]` (or x == e, i < j).
"""
from __future__ import annotations

import bisect

from device_model.isa import ENGINE_INDEX, ENGINES

N_ENGINES = len(ENGINES)


def _join(a: list[int], b: list[int]) -> list[int]:
    return [x if x >= y else y for x, y in zip(a, b)]


class VectorClocks:
    """Feed it issues (`issued`) and signals (`signalled`) in run order; read `current[engine_id]`,
    the clock of the instruction an engine is running (or ran last)."""

    def __init__(self, semaphores: int):
        self.current: list[list[int]] = [[0] * N_ENGINES for _ in range(N_ENGINES)]
        # per semaphore: values after each signal (non-decreasing) and the joined release clocks
        self._values: list[list[int]] = [[] for _ in range(semaphores)]
        self._clocks: list[list[list[int]]] = [[] for _ in range(semaphores)]

    def issued(self, engine: str, index: int, waits) -> list[int]:
        """The clock of (engine, index), which starts now having waited for `waits`."""
        eid = ENGINE_INDEX[engine]
        clock = list(self.current[eid])
        clock[eid] = index
        for sem, value in waits:
            if value <= 0:
                continue
            pos = bisect.bisect_left(self._values[sem], value)
            if pos < len(self._values[sem]):  # always true in a run: the wait was met
                clock = _join(clock, self._clocks[sem][pos])
        self.current[eid] = clock
        return clock

    def signalled(self, engine: str, index: int, sem: int, new_value: int) -> None:
        """(engine, index) completed and raised `sem` to `new_value`."""
        eid = ENGINE_INDEX[engine]
        release = list(self.current[eid])
        release[eid] = index + 1  # the signalling instruction itself is complete
        history = self._clocks[sem]
        if history:
            release = _join(release, history[-1])
        history.append(release)
        self._values[sem].append(new_value)

    @staticmethod
    def ordered(engine_id: int, index: int, clock: list[int]) -> bool:
        """Does (engine_id, index) happen before the instruction whose clock is `clock`?"""
        return index < clock[engine_id]
