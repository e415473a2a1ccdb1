"""The XPU emulator: machine state plus an event-driven scheduler over the engines' streams.

Semantics (docs/timing.md has the cost formulas):
- Each engine runs its stream in order, one instruction at a time. An instruction issues when its
  engine is free and every wait (semaphore >= value) is met; it completes `cost` cycles later.
- At completion the instruction reads its sources and writes its destination (atomically), then
  adds its signals to the semaphores. Completions at the same cycle apply in engine order.
- DMA transfers in flight share the fabric bandwidth equally (each capped by the queue bandwidth);
  a DMA completes `latency_cycles` after its last byte moved.
- When no engine can progress and work remains, the machine is hung: a HangReport names every
  blocked engine, what it waits for, and whether any remaining instruction could still signal it.
Observers are objects with any of on_issue, on_complete, on_semaphore, on_memory_access, on_hang;
a machine without observers never builds event objects.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from .arch import Arch, load_arch
from .dtypes import np_dtype
from .engines import ExecError, build_executor
from .isa import ENGINES, Instr, engine_kind
from .memory import Memory
from .program import Program
from .timing import bytes_per_cycle, compute_cycles, dma_bytes, host_cycles

OBSERVER_HOOKS = ("on_issue", "on_complete", "on_semaphore", "on_memory_access", "on_hang")
_READ_ONLY = ("dst", "accum")  # operand names that are written, not read


class MachineError(RuntimeError):
    """A program fault at run time: names the engine, instruction index and what went wrong."""


class HangError(MachineError):
    def __init__(self, report: "HangReport"):
        super().__init__(report.text())
        self.report = report


@dataclass(frozen=True)
class InstrEvent:
    engine: str
    index: int  # position in the engine's stream
    instr: Instr
    issue: int  # cycle the instruction started
    end: int  # cycle it completes (for DMA known only at completion; -1 before)
    wait: int  # cycles the engine sat free before issue because of unmet semaphore waits


@dataclass(frozen=True)
class MemoryAccess:
    engine: str
    index: int
    kind: str  # "r" or "w"
    operand: str
    ap: object
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


@dataclass
class RunResult:
    cycles: int
    busy: dict[str, int]  # engine -> cycles spent executing
    instructions: dict[str, int]  # engine -> instructions completed
    dma_bytes: int
    seconds: float  # device time at the preset clock


class _EngineState:
    __slots__ = ("name", "id", "kind", "n", "execs", "costs", "waits", "signals", "instrs", "pc",
                 "busy", "end", "issue", "free_since", "remaining", "rate_cap", "tail", "waited", "blocked")

    def __init__(self, name: str, id_: int):
        self.name, self.id, self.kind = name, id_, engine_kind(name)
        self.instrs: list[Instr] = []
        self.execs: list = []
        self.costs: list[int] = []
        self.waits: list[tuple] = []
        self.signals: list[tuple] = []
        self.n = 0
        self.pc = 0  # next instruction to issue
        self.busy = False
        self.end = -1  # completion cycle (compute engines, or DMA in its latency tail)
        self.issue = 0
        self.free_since = 0
        self.remaining = 0.0  # DMA bytes still to move (transfer phase)
        self.tail = False  # DMA: transfer done, in latency tail
        self.waited = 0  # cycles the current instruction sat ready-but-blocked on semaphores
        self.blocked: tuple[int, int] | None = None  # the (semaphore, value) it last found unmet


class Machine:
    """One XPU core. `Machine(arch).load(program)`, write inputs, `run()`, read outputs."""

    def __init__(self, arch: Arch | str | None = None, host_runner=None):
        """`host_runner(host_op, machine)` performs a program's host ops (`host_call`); the
        runtime supplies it (the device model itself knows nothing of what they compute)."""
        self.arch = load_arch(arch) if not isinstance(arch, Arch) else arch
        self.host_runner = host_runner
        self.program: Program | None = None
        self.memory: Memory | None = None
        self._observers: list = []
        self._hooks: dict[str, list] = {h: [] for h in OBSERVER_HOOKS}

    # ---- loading --------------------------------------------------------------------------
    def load(self, program: Program, cost_jitter: tuple[int, int] | None = None) -> "Machine":
        """Prepare `program`: allocate memories, place constants, build executors.

        `cost_jitter=(seed, max_extra)` adds a deterministic pseudo-random 0..max_extra cycles to
        every instruction's cost: a correctly synchronised program gives identical outputs under
        any jitter (a missing semaphore shows up as a difference)."""
        program.validate()
        if program.arch_name != self.arch.name:
            raise MachineError(f"program was built for arch {program.arch_name}, machine is {self.arch.name}")
        self.program = program
        self.memory = Memory(self.arch, program.hbm_extent(), *program.onchip_extents())
        for t in program.tensors:
            if t.kind == "const":
                self.memory.hbm[t.offset:t.offset + t.nbytes] = np.frombuffer(t.data, np.uint8)
        rng = np.random.default_rng(cost_jitter[0]) if cost_jitter else None
        self._engines = [_EngineState(name, i) for i, name in enumerate(ENGINES)]
        by_name = {e.name: e for e in self._engines}
        for ins in program.instrs:
            e = by_name[ins.engine]
            e.instrs.append(ins)
            if ins.op == "host_call":
                host_op = program.host_ops[ins.attrs.get("op", 0)]
                e.execs.append(self._host_executor(host_op))
                cost = host_cycles(host_op, program, self.arch)
            else:
                e.execs.append(build_executor(ins, self.memory, self.arch))
                prev = e.instrs[-2] if len(e.instrs) > 1 else None
                cost = dma_bytes(ins, self.arch) if e.kind == "dma" else compute_cycles(ins, self.arch, prev)
            if rng is not None:
                cost += int(rng.integers(0, cost_jitter[1] + 1)) * (8 if e.kind == "dma" else 1)
            e.costs.append(cost)
            e.waits.append(tuple(ins.waits))
            e.signals.append(tuple(ins.signals))
        for e in self._engines:
            e.n = len(e.instrs)
            e.rate_cap = bytes_per_cycle(self.arch.raw["dma"]["queue_gbps"], self.arch)
        self._active = [e for e in self._engines if e.n]
        self._dma_latency = self.arch.raw["dma"]["latency_cycles"]
        self._fabric = bytes_per_cycle(self.arch.raw["hbm"]["bandwidth_gbps"], self.arch)
        for ins in program.instrs:
            for sem, _ in tuple(ins.waits) + tuple(ins.signals):
                if sem >= self.arch.semaphores:
                    raise MachineError(f"{ins.engine}: semaphore s{sem} does not exist "
                                       f"(arch {self.arch.name} has {self.arch.semaphores})")
        self.reset()
        return self

    def _host_executor(self, host_op):
        def run_on_host():
            if self.host_runner is None:
                raise ExecError(f"host op {host_op.name} ({host_op.op_type}) needs a host runner: "
                                "run the program through xputools (xpu run)")
            self.host_runner(host_op, self)
        return run_on_host

    def reset(self) -> None:
        """Back to cycle 0 with the program's instruction pointers at the start (memory kept)."""
        self.time = 0
        self.sem = [0] * self.arch.semaphores
        self._pending: list[_EngineState] = []  # completions due at self.time, not yet applied
        self._finished = False
        self.busy_cycles = [0] * len(ENGINES)
        self.completed = [0] * len(ENGINES)
        self.dma_bytes_moved = 0
        for e in self._engines:
            e.pc, e.busy, e.end, e.issue, e.free_since = 0, False, -1, 0, 0
            e.remaining, e.tail, e.waited, e.blocked = 0.0, False, 0, None

    # ---- tensors --------------------------------------------------------------------------
    def write_tensor(self, name: str, value: np.ndarray) -> None:
        t = self.program.tensor(name)
        arr = np.asarray(value, dtype=np_dtype(t.dtype))  # (ascontiguousarray would make 0-d 1-d)
        if arr.shape != tuple(t.shape):
            raise MachineError(f"tensor {name}: shape {arr.shape} given, program expects {tuple(t.shape)}")
        self.memory.hbm[t.offset:t.offset + t.nbytes] = np.ascontiguousarray(arr.reshape(-1)).view(np.uint8)

    def read_tensor(self, name: str) -> np.ndarray:
        t = self.program.tensor(name)
        raw = self.memory.hbm[t.offset:t.offset + t.nbytes]
        return raw.view(np_dtype(t.dtype)).reshape(t.shape).copy()

    # ---- observers ------------------------------------------------------------------------
    def attach(self, observer) -> None:
        self._observers.append(observer)
        for h in OBSERVER_HOOKS:
            fn = getattr(observer, h, None)
            if fn is not None:
                self._hooks[h].append(fn)

    def detach(self, observer) -> None:
        self._observers.remove(observer)
        for h in OBSERVER_HOOKS:
            fn = getattr(observer, h, None)
            if fn is not None:
                self._hooks[h] = [f for f in self._hooks[h] if f != fn]

    # ---- running --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._finished

    def run(self) -> RunResult:
        """Run to completion. Raises HangError on a deadlock, MachineError on a fault."""
        with single_threaded_blas():
            while self._advance(None):
                pass
        return self.result()

    def step(self, engine: str | None = None) -> InstrEvent | None:
        """Advance until one instruction completes (on `engine`, if given); return its event,
        or None when the program has finished."""
        target = None if engine is None else ENGINES.index(engine)
        with single_threaded_blas():
            while True:
                ev = self._advance(target, stop_after_one=True)
                if ev is None or isinstance(ev, InstrEvent):
                    return ev

    def result(self) -> RunResult:
        return RunResult(
            cycles=self.time,
            busy={e.name: self.busy_cycles[e.id] for e in self._engines if e.n},
            instructions={e.name: self.completed[e.id] for e in self._engines if e.n},
            dma_bytes=self.dma_bytes_moved,
            seconds=self.arch.cycles_to_seconds(self.time),
        )

    def _advance(self, target, stop_after_one: bool = False):
        """One scheduler iteration. Returns False/None when finished, True to continue, or an
        InstrEvent when `stop_after_one` and a (matching) instruction completed."""
        if self._pending:
            e = self._pending.pop(0)
            ev = self._complete(e, stop_after_one)
            if stop_after_one and (target is None or e.id == target):
                return ev
            return True
        if self._finished:
            return None
        self._issue_ready()
        t_next = self._next_time()
        if t_next is None:
            if any(e.pc < e.n for e in self._active):
                self._hang()
            self._finished = True
            return None
        self._move_time(t_next)
        return True

    def _issue_ready(self) -> None:
        sem = self.sem
        t = self.time
        for e in self._active:
            if e.busy or e.pc >= e.n:
                continue
            if e.blocked is not None and sem[e.blocked[0]] < e.blocked[1]:
                continue  # still waiting on the semaphore that stopped it last time
            e.blocked = next(((s, v) for s, v in e.waits[e.pc] if sem[s] < v), None)
            if e.blocked is not None:
                continue
            e.busy, e.issue, e.waited = True, t, t - e.free_since
            cost = e.costs[e.pc]
            if e.kind == "dma":
                e.remaining, e.tail, e.end = float(cost), False, -1
            else:
                e.end = t + cost
            if self._hooks["on_issue"]:
                ev = InstrEvent(e.name, e.pc, e.instrs[e.pc], t, e.end, e.waited)
                for fn in self._hooks["on_issue"]:
                    fn(ev)

    def _next_time(self) -> int | None:
        t_next = None
        transfers = [e for e in self._active if e.busy and e.kind == "dma" and not e.tail]
        if transfers:
            rate = min(self._fabric / len(transfers), transfers[0].rate_cap)
            for e in transfers:
                t = self.time + max(1, math.ceil(e.remaining / rate - 1e-9))
                if t_next is None or t < t_next:
                    t_next = t
        for e in self._active:
            if e.busy and e.end >= 0 and (t_next is None or e.end < t_next):
                t_next = e.end
        return t_next

    def _move_time(self, t_next: int) -> None:
        dt = t_next - self.time
        transfers = [e for e in self._active if e.busy and e.kind == "dma" and not e.tail]
        if transfers:
            rate = min(self._fabric / len(transfers), transfers[0].rate_cap)
            for e in transfers:
                if self.time + max(1, math.ceil(e.remaining / rate - 1e-9)) <= t_next:
                    e.remaining, e.tail, e.end = 0.0, True, t_next + self._dma_latency
                else:
                    e.remaining -= dt * rate
        self.time = t_next
        self._pending = [e for e in self._active if e.busy and e.end == t_next]

    def _complete(self, e: _EngineState, want_event: bool):
        idx = e.pc
        ins = e.instrs[idx]
        hooks = self._hooks
        if hooks["on_memory_access"]:
            self._report_accesses(e, idx, ins)
        try:
            e.execs[idx]()
        except (ExecError, ValueError, FloatingPointError, MemoryError) as exc:
            raise MachineError(f"{e.name} instruction #{idx} `{ins}`: {exc}") from None
        for s, inc in e.signals[idx]:
            old = self.sem[s]
            self.sem[s] = old + inc
            for fn in hooks["on_semaphore"]:
                fn(s, old, old + inc, self.time, e.name, idx)
        self.busy_cycles[e.id] += self.time - e.issue
        self.completed[e.id] += 1
        if e.kind == "dma":
            self.dma_bytes_moved += ins.operands["dst"].nbytes
        e.busy, e.pc, e.end, e.tail, e.free_since = False, idx + 1, -1, False, self.time
        if not (want_event or hooks["on_complete"]):
            return None
        ev = InstrEvent(e.name, idx, ins, e.issue, self.time, e.waited)
        for fn in hooks["on_complete"]:
            fn(ev)
        return ev

    def _report_accesses(self, e: _EngineState, idx: int, ins: Instr) -> None:
        for name, ap in ins.operands.items():
            kind = "w" if name in _READ_ONLY else "r"
            acc = MemoryAccess(e.name, idx, kind, name, ap, self.time)
            for fn in self._hooks["on_memory_access"]:
                fn(acc)

    # ---- hang ------------------------------------------------------------------------------
    def hang_report(self) -> HangReport:
        blocked = []
        for e in self._active:
            if e.busy or e.pc >= e.n:
                continue
            unmet = [(s, v, self.sem[s]) for s, v in e.waits[e.pc] if self.sem[s] < v]
            signallers: dict[int, list[str]] = {}
            for s, _, _ in unmet:
                who = []
                for other in self._active:
                    start = other.pc  # not yet completed: the in-flight one and those after it
                    if any(sem == s for sig in other.signals[start:] for sem, _ in sig):
                        who.append(other.name)
                signallers[s] = who
            blocked.append(BlockedEngine(e.name, e.pc, e.instrs[e.pc], unmet, signallers))
        return HangReport(self.time, blocked, _find_cycle(blocked))

    def _hang(self) -> None:
        report = self.hang_report()
        for fn in self._hooks["on_hang"]:
            fn(report)
        self._finished = True
        raise HangError(report)

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to resume exactly from here (memories included)."""
        return {
            "time": self.time, "sem": list(self.sem), "finished": self._finished,
            "pending": [e.id for e in self._pending],
            "busy_cycles": list(self.busy_cycles), "completed": list(self.completed),
            "dma_bytes": self.dma_bytes_moved,
            "engines": [(e.pc, e.busy, e.end, e.issue, e.free_since, e.remaining, e.tail, e.waited)
                        for e in self._engines],
            "memory": self.memory.snapshot(),
        }

    def restore(self, snap: dict) -> None:
        self.time, self.sem, self._finished = snap["time"], list(snap["sem"]), snap["finished"]
        self._pending = [self._engines[i] for i in snap["pending"]]
        self.busy_cycles, self.completed = list(snap["busy_cycles"]), list(snap["completed"])
        self.dma_bytes_moved = snap["dma_bytes"]
        for e, st in zip(self._engines, snap["engines"]):
            e.pc, e.busy, e.end, e.issue, e.free_since, e.remaining, e.tail, e.waited = st
            e.blocked = None
        self.memory.restore(snap["memory"])


_BLAS = []


@contextmanager
def single_threaded_blas():
    """Instructions are small matrix products: BLAS threads only fight each other (and any other
    process) for the cores — 100x slower on a loaded 2-core machine — so run them on one thread."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())  # scanning the loaded libraries is slow: do it once
    with _BLAS[0].limit(limits=1, user_api="blas"):
        yield


def _find_cycle(blocked: list[BlockedEngine]) -> list[str]:
    """A cycle in the wait-for graph (engine -> engines that could signal what it waits for)."""
    graph = {b.engine: sorted({w for ws in b.signallers.values() for w in ws}) for b in blocked}
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, []):
                if nxt == start:
                    return path
                if nxt not in path and nxt in graph:
                    stack.append((nxt, path + [nxt]))
    return []
