"""The sync check: semaphore use that cannot be right whatever the timing.

Semaphores here are counters: a signal adds to one, a wait `s >= v` only reads it, and nothing
resets them during a run. So a value left above zero at the end is the normal state (the compiler
counts every engine's completed instructions on its own semaphore) and is not reported. What is:
- never-signalled: a wait on a semaphore no instruction signals;
- under-signalled: a wait for more than all the program's signals to that semaphore add up to
  (both hang; this names the cause even when the run hangs somewhere else first);
- over-signalled: one signal raises a semaphore past two or more different values that waits ask
  for, so those waits stop telling their events apart (e.g. `signal=s1+=2` where consumers wait
  for s1 >= 1 and s1 >= 2): a wait passes before the event it was written for.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from device_model.program import Program


@dataclass(frozen=True)
class InstrRef:
    engine: str
    index: int


@dataclass
class SemaphoreUse:
    """Who signals and who waits on one semaphore, over the whole program."""

    total: int = 0  # sum of every increment in the program
    signallers: list[InstrRef] = field(default_factory=list)
    waits: dict[int, list[InstrRef]] = field(default_factory=dict)  # wanted value -> waiting instructions

    def thresholds(self) -> list[int]:
        return sorted(v for v in self.waits if v > 0)


@dataclass(frozen=True)
class SyncProblem:
    kind: str  # never-signalled, under-signalled, over-signalled
    sem: int
    message: str
    instrs: tuple[InstrRef, ...]


def semaphore_uses(program: Program) -> dict[int, SemaphoreUse]:
    uses: dict[int, SemaphoreUse] = {}
    counts: dict[str, int] = {}
    for ins in program.instrs:
        index = counts.get(ins.engine, 0)
        counts[ins.engine] = index + 1
        ref = InstrRef(ins.engine, index)
        for sem, inc in ins.signals:
            use = uses.setdefault(sem, SemaphoreUse())
            use.total += inc
            use.signallers.append(ref)
        for sem, value in ins.waits:
            uses.setdefault(sem, SemaphoreUse()).waits.setdefault(value, []).append(ref)
    return uses


def static_problems(uses: dict[int, SemaphoreUse]) -> list[SyncProblem]:
    """Waits that no run can satisfy."""
    found = []
    for sem in sorted(uses):
        use = uses[sem]
        for value in use.thresholds():
            if value <= use.total:
                continue
            waiters = tuple(use.waits[value])
            first = waiters[0]
            if not use.signallers:
                found.append(SyncProblem("never-signalled", sem, (
                    f"{first.engine} #{first.index} waits for s{sem} >= {value}, but no instruction "
                    f"signals s{sem}: it can never start"), waiters))
            else:
                who = ", ".join(f"{r.engine} #{r.index}" for r in use.signallers[:8])
                more = f" and {len(use.signallers) - 8} more" if len(use.signallers) > 8 else ""
                found.append(SyncProblem("under-signalled", sem, (
                    f"{first.engine} #{first.index} waits for s{sem} >= {value}, but all the signals "
                    f"to s{sem} in the program add up to {use.total} ({who}{more}): it can never start"),
                    waiters + tuple(use.signallers)))
    return found


class OverSignalWatch:
    """Runtime part: a signal that jumps past several wait thresholds at once."""

    def __init__(self, uses: dict[int, SemaphoreUse]):
        self._thresholds = {sem: use.thresholds() for sem, use in uses.items()}
        self._uses = uses
        self._reported: set[tuple[str, int]] = set()

    def signalled(self, sem: int, old: int, new: int, engine: str, index: int) -> SyncProblem | None:
        levels = self._thresholds.get(sem)
        if not levels or new - old < 2:
            return None
        passed = levels[bisect.bisect_right(levels, old):bisect.bisect_right(levels, new)]
        if len(passed) < 2 or (engine, index) in self._reported:
            return None
        self._reported.add((engine, index))
        waiters = tuple(self._uses[sem].waits[v][0] for v in passed)
        wants = ", ".join(f"s{sem} >= {v}" for v in passed)
        return SyncProblem("over-signalled", sem, (
            f"{engine} #{index} raised s{sem} from {old} to {new} in one signal, past the values "
            f"different waits ask for ({wants}): those waits can no longer tell their events apart"),
            (InstrRef(engine, index),) + waiters)
