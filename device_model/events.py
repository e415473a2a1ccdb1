"""The machine's observer protocol: typed events and the `Observer` base class.

An observer overrides any subset of the hooks; the machine calls only the hooks an observer
actually defines (a subclass of `Observer` that leaves a hook alone costs nothing for it), and a
machine with no observers builds no event objects at all. Plain objects with methods of the same
names work too.

Order of calls for one instruction:
  on_issue(InstrEvent)            it starts (an observer may `machine.request_stop()` here: the
                                  machine stops *before* the issue takes effect, and on resuming
                                  issues it without calling on_issue again)
  on_memory_access(MemoryAccess)  per operand, just before the effects: old values are readable
                                  with `machine.read_ap(acc.ap)`
  on_semaphore(SemaphoreEvent)    per signal, after the effects (new values readable)
  on_complete(InstrEvent)         the instruction has retired (pc advanced)
A stop requested in any of the last three is honoured right after the instruction completes: it
never runs or signals twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .isa import AP, Instr


@dataclass(frozen=True)
class InstrEvent:
    """An instruction issuing (`on_issue`) or completing (`on_complete`)."""

    engine: str
    index: int  # position in the engine's stream
    instr: Instr
    issue: int  # cycle the instruction started
    end: int  # cycle it completes (for DMA known only at completion; -1 before)
    wait: int  # cycles the engine sat free before issue because of unmet semaphore waits


IssueEvent = InstrEvent
CompleteEvent = InstrEvent


class SemaphoreEvent(NamedTuple):
    """Instruction `engine`#`index` added to semaphore `sem` at `time`: `old` -> `new`. A NamedTuple:
    the profiler keeps one per signal of a run as it comes."""

    sem: int
    old: int
    new: int
    time: int
    engine: str
    index: int


@dataclass(frozen=True)
class MemoryAccess:
    """One operand of an instruction about to take effect: `kind` "r" (read) or "w" (written)."""

    engine: str
    index: int
    kind: str
    operand: str
    ap: AP
    time: int


@dataclass
class BlockedEngine:
    engine: str
    index: int
    instr: Instr
    unmet: list[tuple[int, int, int]]  # (semaphore, wanted, current)
    signallers: dict[int, list[str]]  # semaphore -> engines with a remaining instruction signalling it


@dataclass
class HangReport:
    time: int
    blocked: list[BlockedEngine]
    cycle: list[str] = field(default_factory=list)  # engines in a wait-for cycle, if any

    def text(self) -> str:
        lines = [f"hang at cycle {self.time}: no engine can make progress"]
        for b in self.blocked:
            lines.append(f"  {b.engine} #{b.index} `{b.instr}` waits for:")
            for sem, want, have in b.unmet:
                who = b.signallers.get(sem) or []
                can = (f"could still be signalled by {', '.join(who)}" if who
                       else "no remaining instruction signals it: it can never be met")
                lines.append(f"    s{sem} >= {want} (now {have}); {can}")
        if self.cycle:
            lines.append("  deadlock cycle: " + " -> ".join(self.cycle + [self.cycle[0]]))
        return "\n".join(lines)


class Observer:
    """Base class for machine observers; override the hooks you need.

    `save_state`/`restore_state`: an observer whose state must rewind with the machine (reverse
    execution) returns a copy of it from `save_state`; `Machine.snapshot()` stores it and
    `Machine.restore()` hands it back.

    `sees_only_memory = True` declares that the observer's hooks look only at the events they are
    given and at memory (never at the machine's time, semaphores or engines): a run from cycle 0 whose
    observers all say so and define no hook but `on_complete` replays the machine's static schedule,
    calling `on_complete` after each instruction's effects, in completion order, with the same events."""

    sees_only_memory = False

    def on_issue(self, ev: InstrEvent) -> None: ...

    def on_complete(self, ev: InstrEvent) -> None: ...

    def on_semaphore(self, ev: SemaphoreEvent) -> None: ...

    def on_memory_access(self, acc: MemoryAccess) -> None: ...

    def on_hang(self, report: HangReport) -> None: ...

    def save_state(self) -> object:
        return None

    def restore_state(self, state: object) -> None:
        return None


HOOKS = ("on_issue", "on_complete", "on_semaphore", "on_memory_access", "on_hang")


def defined_hooks(observer) -> dict[str, object]:
    """The hooks `observer` really implements (bound methods), by name."""
    out = {}
    for name in HOOKS:
        fn = getattr(observer, name, None)
        if fn is None:
            continue
        if isinstance(observer, Observer) and getattr(type(observer), name, None) is getattr(Observer, name):
            continue  # the base class's no-op
        out[name] = fn
    return out


@dataclass(frozen=True)
class Stop:
    """Why a run or step returned early: `reason` "request" (an observer asked, `detail` is what
    it passed), or "blocked" (the engines allowed to run wait on frozen ones); `phase` "issue"
    (before `engine`#`index` issued) or "complete" (right after it completed)."""

    reason: str
    phase: str
    engine: str
    index: int
    detail: object = None


@dataclass(frozen=True)
class EngineView:
    """A read-only view of one engine: `pc` is the instruction in flight (`state` RUNNING and
    `in_flight`) or the next to issue; `state` RUNNING, BLOCKED (on `blocked_on` = (sem, wanted,
    now)) or DONE; `last_retired` the index of the last completed instruction (-1: none)."""

    name: str
    pc: int
    count: int
    state: str
    in_flight: bool
    blocked_on: tuple[int, int, int] | None
    last_retired: int
