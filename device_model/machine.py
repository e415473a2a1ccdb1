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
Observers (device_model.events: typed events, the Observer base class) may request a stop at an
instruction's issue or completion; a machine without observers never builds event objects.
Timing never looks at data, so a run from reset that nothing observes (or only observers that look
at memory after completions) replays the completion order found once (Machine._static_schedule).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from operator import length_hint

import numpy as np
from threadpoolctl import ThreadpoolController

from .arch import Arch, load_arch
from .batched import batched_matmul
from .dtypes import np_dtype
from .engines import ExecError, bare_executor, build_executor
from .errors import EXIT_CHECK_FAILED, XpuError
from .events import (
    HOOKS,
    BlockedEngine,
    EngineView,
    HangReport,
    InstrEvent,
    MemoryAccess,
    SemaphoreEvent,
    Stop,
    defined_hooks,
)
from .isa import AP, ENGINES, Instr, engine_kind, operand_accesses
from .memory import Memory, OnchipRegions
from .program import Program
from .timing import bytes_per_cycle, compute_cycles, dma_bytes, host_cycles

OBSERVER_HOOKS = HOOKS


class MachineError(XpuError, RuntimeError):
    """A program fault at run time: names the engine, instruction index and what went wrong."""

    def __init__(self, message: str, engine: str | None = None, index: int | None = None):
        super().__init__(message)
        self.engine, self.index = engine, index


class HangError(MachineError):
    """No engine can make progress: the report says who waits on what (a hang found: exit 1)."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, report: HangReport):
        super().__init__(report.text())
        self.report = report


@dataclass
class RunResult:
    cycles: int
    busy: dict[str, int]  # engine -> cycles spent executing
    instructions: dict[str, int]  # engine -> instructions completed
    dma_bytes: int
    seconds: float  # device time at the preset clock


class _EngineState:
    __slots__ = ("name", "id", "kind", "n", "execs", "costs", "waits", "signals", "instrs", "accesses", "moved",
                 "pc", "busy", "end", "issue", "free_since", "remaining", "rate_cap", "tail", "waited", "blocked")

    def __init__(self, name: str, id_: int):
        self.name, self.id, self.kind = name, id_, engine_kind(name)
        self.instrs: list[Instr] = []
        self.execs: list = []
        self.costs: list[int] = []
        self.waits: list[tuple] = []
        self.signals: list[tuple] = []
        self.accesses: list[tuple] = []  # per instruction: ((kind "r"/"w", operand name, AP), ...)
        self.moved: list[int] = []  # per instruction: bytes a DMA delivers (its dst), counted at completion
        self.n = 0
        self.pc = 0  # the instruction in flight, or the next to issue
        self.busy = False
        self.end = -1  # completion cycle (compute engines, or DMA in its latency tail)
        self.issue = 0
        self.free_since = 0
        self.remaining = 0.0  # DMA bytes still to move (transfer phase)
        self.tail = False  # DMA: transfer done, in latency tail
        self.waited = 0  # cycles the current instruction sat ready-but-blocked on semaphores
        self.blocked: tuple[int, int] | None = None  # the (semaphore, value) it last found unmet


_ENGINE_FIELDS = ("pc", "busy", "end", "issue", "free_since", "remaining", "tail", "waited", "blocked")


@dataclass(frozen=True)
class _Schedule:
    """Instruction completions of a run from reset, in order, and where that run ends."""

    order: tuple[tuple[_EngineState, int], ...]  # (engine, instruction index) per completion
    execs: tuple  # their executors, in that order
    bare: tuple  # the same without their own np.errstate (engines.bare_executor), for a run inside one
    events: tuple[InstrEvent, ...]  # what on_complete receives for each
    finishes: bool  # False: the program hangs after `order`
    end: tuple  # time, semaphores, busy cycles, completed, DMA bytes, _ENGINE_FIELDS per active engine


def _device_writes_only(e: _EngineState, idx: int) -> tuple:
    """An instruction's accesses, without a host call's writes: the host writes HBM tensors, not
    necessarily the on-chip operands a hand-written call names."""
    accesses = e.accesses[idx]
    return tuple(a for a in accesses if a[0] == "r") if e.instrs[idx].op == "host_call" else accesses


_BATCHABLE = ("matmul_accumulate", "matmul_accumulate_narrow")  # executors: np.matmul into a work array, then add


def _batched(order, bare: list, memory: Memory, pe_rows: int) -> list:
    """`bare` with each run of consecutive accumulating matmuls on one engine that batched.batched_matmul
    can do as one product replaced by that executor at the run's first position and no-ops after it:
    the same memory effects when nothing runs or looks in between (the replay without hooks)."""
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and order[j][0] is order[i][0] and getattr(bare[j], "__name__", "") in _BATCHABLE:
            j += 1
        if j - i >= 2:
            fused = batched_matmul([e.instrs[idx] for e, idx in order[i:j]], memory, pe_rows)
            if fused is not None:
                bare[i:j] = [fused] + [_nothing] * (j - i - 1)
        i = max(j, i + 1)
    return bare


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class EngineSnapshot:
    pc: int
    busy: bool
    end: int
    issue: int
    free_since: int
    remaining: float
    tail: bool
    waited: int
    blocked: tuple[int, int] | None


@dataclass(frozen=True)
class MachineSnapshot:
    """Everything needed to resume exactly from a point of a run (see Machine.snapshot)."""

    time: int
    sem: tuple[int, ...]
    finished: bool
    pending: tuple[int, ...]  # engine ids whose completion at `time` is not applied yet
    busy_cycles: tuple[int, ...]
    completed: tuple[int, ...]
    dma_bytes: int
    engines: tuple[EngineSnapshot, ...]
    announced: tuple[int, int] | None  # an issue already reported to observers (stopped at issue)
    memory: object
    observers: tuple = ()  # (observer, its save_state()) pairs

    @property
    def retired(self) -> int:
        return sum(self.completed)


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
        self._hooks: dict[str, list] = {h: [] for h in HOOKS}
        self._observers_changed = 0  # attach/detach count: a replay notices a hook that (de)tached one
        self._frozen: frozenset[int] = frozenset()
        self._stop_requested = False
        self._stop_detail = None
        self.stopped: Stop | None = None
        self.fault: MachineError | None = None

    # ---- loading --------------------------------------------------------------------------
    def load(self, program: Program, cost_jitter: tuple[int, int] | None = None) -> "Machine":
        """Prepare `program`: allocate memories, place constants, build executors.

        `cost_jitter=(seed, max_extra)` adds a deterministic pseudo-random 0..max_extra cycles to
        every instruction's cost: a correctly synchronised program gives identical outputs under
        any jitter (a missing semaphore shows up as a difference)."""
        program.validate()
        problem = program.arch_mismatch(self.arch)
        if problem:
            raise MachineError(f"cannot load on this machine: the program was {problem}")
        self.program = program
        self._tensors = {t.name: t for t in program.tensors}  # (validate refuses a name declared twice)
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
            operands = ins.operands
            if ins.op == "host_call":
                host_op = program.host_ops[ins.attrs.get("op", 0)]
                e.execs.append(self._host_executor(host_op))
                cost = host_cycles(host_op, program, self.arch)
                operands = operands or _host_operands(program, host_op)
            else:
                e.execs.append(build_executor(ins, self.memory, self.arch))
                prev = e.instrs[-2] if len(e.instrs) > 1 else None
                cost = dma_bytes(ins, self.arch) if e.kind == "dma" else compute_cycles(ins, self.arch, prev)
            if rng is not None:
                cost += int(rng.integers(0, cost_jitter[1] + 1)) * (8 if e.kind == "dma" else 1)
            e.costs.append(cost)
            e.waits.append(tuple(ins.waits))
            e.signals.append(tuple(ins.signals))
            with_operands = ins if operands is ins.operands else replace(ins, operands=operands)
            e.accesses.append(tuple(operand_accesses(with_operands)))
            e.moved.append(ins.operands["dst"].nbytes if e.kind == "dma" else 0)
        for e in self._engines:
            e.n = len(e.instrs)
            e.rate_cap = bytes_per_cycle(self.arch.raw["dma"]["queue_gbps"], self.arch)
        self._by_name = by_name
        self._active = [e for e in self._engines if e.n]
        self._schedule: _Schedule | None = None  # found by the first run from reset nobody observes
        self._first_reads: OnchipRegions | None = None  # what a run nobody observes must find zeroed
        self._observed = False  # a run or step with observers since the last full clear (they may write memory)
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
        self._announced: tuple[int, int] | None = None
        self.busy_cycles = [0] * len(ENGINES)
        self.completed = [0] * len(ENGINES)
        self.dma_bytes_moved = 0
        self.stopped, self.fault = None, None
        for e in self._active:  # (an engine without instructions never leaves this state)
            e.pc, e.busy, e.end, e.issue, e.free_since = 0, False, -1, 0, 0
            e.remaining, e.tail, e.waited, e.blocked = 0.0, False, 0, None

    def rewind(self, observed: bool = True) -> None:
        """Back to cycle 0 for another run of the loaded program, with SBUF and PSUM zeroed as a
        new load has them as far as that run can tell. `observed=False` promises that nothing looks
        at memory during the run (no observer, no stepping): then, for a program that runs to the
        end, only the bytes its schedule reads before writing them are zeroed — it overwrites every
        other byte it ever wrote before reading it, so its reads, outputs and final memory are a new
        load's (bit-identical). Otherwise (a program that hangs, or a run or step with observers
        since the last rewind: they may have written memory) everything is zeroed."""
        self.reset()
        only = None
        if not (observed or self._observed) and self._unobserved():  # (one attached already looks too)
            schedule = self._static_schedule()
            if schedule.finishes:
                if self._first_reads is None:
                    boxes = self.memory.read_before_written(_device_writes_only(e, idx) for e, idx in schedule.order)
                    self._first_reads = self.memory.regions(boxes)
                only = self._first_reads
        self.memory.clear_onchip(only)
        self._observed = False

    # ---- tensors and memory ---------------------------------------------------------------
    def write_tensor(self, name: str, value: np.ndarray) -> None:
        t = self._tensors[name]
        arr = np.asarray(value, dtype=np_dtype(t.dtype))  # (ascontiguousarray would make 0-d 1-d)
        if arr.shape != tuple(t.shape):
            raise MachineError(f"tensor {name}: shape {arr.shape} given, program expects {tuple(t.shape)}")
        self.memory.write_hbm(t.offset, np.ascontiguousarray(arr.reshape(-1)).view(np.uint8))

    def read_tensor(self, name: str) -> np.ndarray:
        t = self._tensors[name]
        raw = self.memory.hbm[t.offset:t.offset + t.nbytes]
        return raw.view(np_dtype(t.dtype)).reshape(t.shape).copy()

    def read_ap(self, ap: AP) -> np.ndarray:
        """A copy of the typed elements `ap` names, as memory holds them now (raises
        memory.AccessError when `ap` is out of bounds)."""
        return self.memory.view(ap).copy()

    # ---- observers ------------------------------------------------------------------------
    def attach(self, observer) -> None:
        """Add an observer (see device_model.events): only the hooks it defines are called."""
        self._observers.append(observer)
        self._observers_changed += 1
        for h, fn in defined_hooks(observer).items():
            self._hooks[h].append(fn)

    def detach(self, observer) -> None:
        self._observers.remove(observer)
        self._observers_changed += 1
        for h, fn in defined_hooks(observer).items():
            self._hooks[h] = [f for f in self._hooks[h] if f != fn]

    def request_stop(self, detail: object = None) -> None:
        """Called by an observer from a hook: stop before the instruction being issued issues
        (from on_issue), or right after the instruction being completed (any other hook).
        `detail` is handed back in `machine.stopped.detail`."""
        self._stop_requested, self._stop_detail = True, detail

    # ---- engine state ---------------------------------------------------------------------
    def engine(self, name: str) -> EngineView:
        """A read-only view of engine `name` (pc, RUNNING/BLOCKED/DONE, last retired)."""
        e = self._by_name[name]
        blocked_on = None
        if e.pc >= e.n and not e.busy:
            state = "DONE"
        elif e.busy:
            state = "RUNNING"
        else:
            unmet = next(((s, v, self.sem[s]) for s, v in e.waits[e.pc] if self.sem[s] < v), None)
            state, blocked_on = ("BLOCKED", unmet) if unmet else ("RUNNING", None)
        return EngineView(e.name, e.pc, e.n, state, e.busy, blocked_on, e.pc - 1)

    def engines(self) -> list[EngineView]:
        """Views of every engine that has instructions, in engine order."""
        return [self.engine(e.name) for e in self._active]

    def instr(self, engine: str, index: int) -> Instr:
        return self._by_name[engine].instrs[index]

    @property
    def retired(self) -> int:
        """Instructions completed so far (all engines): a position in the run."""
        return sum(self.completed)

    # ---- running --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._finished

    def run(self) -> RunResult:
        """Run to completion, or until an observer requests a stop (`machine.stopped` says why;
        calling run again resumes). Raises HangError on a deadlock, MachineError on a fault."""
        self._begin()
        with single_threaded_blas():
            if self._hooks["on_complete"]:
                self._observed = True  # (a tap hook writes the reference's values into memory)
            schedule = self._static_schedule() if self._replayable() and self._at_start() else None
            if schedule is not None and schedule.finishes:
                self._replay(schedule)
            elif self._unobserved():
                self._run_unobserved()
            else:
                self._observed = True
                while self._advance(None):
                    pass
        return self.result()

    def _replayable(self) -> bool:
        """A run may replay the static schedule: no frozen engine, no dirty tracking, and no hook but
        `on_complete` of observers that look only at their events and at memory (`sees_only_memory`)."""
        if self._frozen or self.memory.tracking:
            return False
        if any(fns for hook, fns in self._hooks.items() if hook != "on_complete"):
            return False
        return all(getattr(obs, "sees_only_memory", False) for obs in self._observers
                   if "on_complete" in defined_hooks(obs))

    def _unobserved(self) -> bool:
        """Nothing watches the run: no hook, no frozen engine, no dirty tracking for snapshots."""
        return not (self._frozen or self.memory.tracking or any(self._hooks.values()))

    def _at_start(self) -> bool:
        """Whether the scheduler is where reset() puts it (a debugger may have stopped at an issue at
        cycle 0 without anything issuing: that is still the start)."""
        return (self.time == 0 and not self._pending and not self._finished and not any(self.completed)
                and not any(self.sem) and not any(e.busy for e in self._active))

    def _static_schedule(self) -> _Schedule:
        """The order in which a run from reset completes instructions, and the state it ends in.
        Costs are fixed at load and issue depends only on semaphores, never on data, so every run
        from reset follows it: it is found once by the lean loop with executors that only record,
        then replayed. The scheduler is left at reset."""
        if self._schedule is not None:
            return self._schedule
        order: list[tuple[_EngineState, int]] = []
        events: list[InstrEvent] = []

        def record(e: _EngineState, idx: int) -> None:  # at completion: the event the event path builds
            order.append((e, idx))
            events.append(InstrEvent(e.name, idx, e.instrs[idx], e.issue, self.time, e.waited))
        finishes = True
        with self._executors_replaced(lambda e, idx: partial(record, e, idx)):
            self.reset()
            try:
                self._run_unobserved()
            except HangError:
                finishes = False
            end = (self.time, tuple(self.sem), tuple(self.busy_cycles), tuple(self.completed), self.dma_bytes_moved,
                   tuple(tuple(getattr(e, f) for f in _ENGINE_FIELDS) for e in self._active))
        self.reset()
        execs = tuple(e.execs[idx] for e, idx in order)
        bare = _batched(order, [bare_executor(f) for f in execs], self.memory, self.arch.raw["pe"]["rows"])
        self._schedule = _Schedule(tuple(order), execs, tuple(bare), tuple(events), finishes, end)
        return self._schedule

    @contextmanager
    def _executors_replaced(self, make):
        """Every instruction's executor replaced by `make(engine_state, index)` meanwhile."""
        saved = [e.execs for e in self._engines]
        try:
            for e in self._engines:
                e.execs = [make(e, idx) for idx in range(e.n)]
            yield
        finally:
            for e, execs in zip(self._engines, saved):
                e.execs = execs

    def _replay(self, schedule: _Schedule) -> None:
        """A run from reset: the executors in the schedule's order (each followed by the
        `on_complete` hooks, if any, with the event the event path would give), then the scheduler
        state that run ends in. Exactly the event path's memory effects, events and state; a stop
        requested by a hook, or a hook's exception, leaves the event path's state at that point, and
        after a hook attaches or detaches an observer the run goes on in the event path."""
        self._announced = None
        hooks, events, changes = self._hooks["on_complete"], schedule.events, self._observers_changed
        if not hooks:
            self._replay_bare(schedule)
            return
        for position, run in enumerate(schedule.execs):
            try:
                run()
            except BaseException as exc:
                self._fail_as_scheduled(schedule, position, exc)
            try:
                for fn in hooks:
                    fn(events[position])
            except BaseException:
                self._advance_as_scheduled(position + 1)
                raise
            if self._stop_requested:
                self._advance_as_scheduled(position + 1)
                e, idx = schedule.order[position]
                self._stop("request", "complete", e.name, idx)
                return
            if self._observers_changed != changes:
                self._advance_as_scheduled(position + 1)
                while self._advance(None):
                    pass
                return
        self._end_as_scheduled(schedule)

    def _replay_bare(self, schedule: _Schedule) -> None:
        """`_replay` with no hook to call: the executors in one loop inside one np.errstate, each
        without its own (the same effects: only numpy's warnings are off, as each quiet executor has
        them anyway)."""
        runs = iter(schedule.bare)
        with np.errstate(all="ignore"):
            try:
                for run in runs:
                    run()
            except BaseException as exc:
                # the one that raised is the last taken: a tuple's iterator knows how many are left
                position = len(schedule.bare) - length_hint(runs) - 1
                self._fail_as_scheduled(schedule, position, exc)
        self._end_as_scheduled(schedule)

    def _end_as_scheduled(self, schedule: _Schedule) -> None:
        """The scheduler state a run that completed all of `schedule` ends in."""
        time, sem, busy_cycles, completed, dma_bytes, engines = schedule.end
        self.time, self.sem, self._pending, self._finished = time, list(sem), [], True
        self.busy_cycles, self.completed, self.dma_bytes_moved = list(busy_cycles), list(completed), dma_bytes
        for e, fields in zip(self._active, engines):
            e.pc, e.busy, e.end, e.issue, e.free_since, e.remaining, e.tail, e.waited, e.blocked = fields

    def _advance_as_scheduled(self, count: int) -> None:
        """The event path's scheduler state right after the `count`-th completion of a run from
        reset (found with no-op executors and no hooks: memory is already what it must be)."""
        hooks, self._hooks = self._hooks, {h: [] for h in HOOKS}
        requested, self._stop_requested = self._stop_requested, False
        try:
            with self._executors_replaced(lambda e, idx: _nothing):
                self.reset()
                while self.retired < count:
                    self._advance(None)
        finally:
            self._hooks, self._stop_requested = hooks, requested

    def _fail_as_scheduled(self, schedule: _Schedule, position: int, exc: BaseException) -> None:
        """The executor at `position` of a replay raised `exc`: run the scheduler again from reset
        with every executor a no-op up to that one, which raises `exc` again, so the fault (its
        message, the cycle, semaphores, engine states) is the one `_run_unobserved` leaves."""
        failing = schedule.order[position]

        def make(e, idx):
            if (e, idx) != failing:
                return _nothing

            def fail():
                raise exc
            return fail
        with self._executors_replaced(make):
            self.reset()
            self._run_unobserved()
        raise AssertionError("a replayed fault did not recur")  # unreachable: the same order reaches it

    def _run_unobserved(self) -> None:
        """`while self._advance(None)` without observers, in one loop with the state in locals:
        the same issue order, time steps, DMA rates (same float expressions) and completion order,
        so cycles and memory effects are identical; only events and stop requests are left out."""
        self._announced = None  # an issue reported before a stop: without observers it just issues
        active, sem, ceil = self._active, self.sem, math.ceil
        fabric, latency = self._fabric, self._dma_latency
        busy_cycles, completed = self.busy_cycles, self.completed
        busy = None  # engines in flight, in engine order (as of the last issue scan)
        while True:
            pending = self._pending
            t = self.time
            for e in pending:
                idx = e.pc
                try:
                    e.execs[idx]()
                except (ExecError, ValueError, FloatingPointError, MemoryError) as exc:
                    self._pending = pending[pending.index(e) + 1:]
                    self.fault = MachineError(f"{e.name} instruction #{idx} `{e.instrs[idx]}`: {exc}", e.name, idx)
                    self._finished = True
                    raise self.fault from None
                for s, inc in e.signals[idx]:
                    sem[s] += inc
                busy_cycles[e.id] += t - e.issue
                completed[e.id] += 1
                self.dma_bytes_moved += e.moved[idx]
                e.busy, e.pc, e.end, e.tail, e.free_since = False, idx + 1, -1, False, t
            self._pending = []
            if self._finished:
                return
            if busy is not None and not pending:
                active_now = ()  # nothing completed since the last scan: no engine can issue now
            else:
                active_now, busy = active, []
            for e in active_now:
                if e.busy:
                    busy.append(e)
                    continue
                pc = e.pc
                if pc >= e.n:
                    continue
                blocked = e.blocked
                if blocked is not None and sem[blocked[0]] < blocked[1]:
                    continue
                blocked = None
                for s, v in e.waits[pc]:
                    if sem[s] < v:
                        blocked = (s, v)
                        break
                e.blocked = blocked
                if blocked is not None:
                    continue
                e.busy, e.issue, e.waited = True, t, t - e.free_since
                if e.kind == "dma":
                    e.remaining, e.tail, e.end = float(e.costs[pc]), False, -1
                else:
                    e.end = t + e.costs[pc]
                busy.append(e)
            t_next = None
            transfers = [e for e in busy if e.kind == "dma" and not e.tail]
            if transfers:
                rate = min(fabric / len(transfers), transfers[0].rate_cap)
                ends = [t + max(1, ceil(e.remaining / rate - 1e-9)) for e in transfers]
                t_next = min(ends)
            for e in busy:
                if e.end >= 0 and (t_next is None or e.end < t_next):
                    t_next = e.end
            if t_next is None:
                if any(e.pc < e.n for e in active):
                    self._hang()
                self._finished = True
                return
            if transfers:
                dt = t_next - t
                for e, end in zip(transfers, ends):
                    if end <= t_next:
                        e.remaining, e.tail, e.end = 0.0, True, t_next + latency
                    else:
                        e.remaining -= dt * rate
            self.time = t_next
            self._pending = [e for e in busy if e.end == t_next]

    def step(self, engine: str | None = None, freeze_others: bool = False) -> InstrEvent | None:
        """Advance until one instruction completes (on `engine`, if given); return its event.

        None when the program has finished (or `engine` has), or the machine stopped first
        (`machine.stopped`: a stop request, or "blocked" when `engine` waits on a frozen one).
        `freeze_others`: the other engines are paused meanwhile (they neither issue, move data
        nor complete; an instruction whose end passed while frozen completes when thawed)."""
        self._begin()
        self._observed = True
        target = None if engine is None else ENGINES.index(engine)
        if target is not None:
            e = self._engines[target]
            if e.pc >= e.n and not e.busy:
                return None
        if freeze_others and target is not None:
            self._frozen = frozenset(i for i in range(len(ENGINES)) if i != target)
        try:
            with single_threaded_blas():
                while True:
                    ev = self._advance(target, stop_after_one=True)
                    if ev is True:
                        continue
                    return ev or None
        finally:
            if self._frozen:
                self._thaw()

    def result(self) -> RunResult:
        return RunResult(
            cycles=self.time,
            busy={e.name: self.busy_cycles[e.id] for e in self._active},
            instructions={e.name: self.completed[e.id] for e in self._active},
            dma_bytes=self.dma_bytes_moved,
            seconds=self.arch.cycles_to_seconds(self.time),
        )

    def _begin(self) -> None:
        self._stop_requested, self._stop_detail, self.stopped = False, None, None

    def _stop(self, reason: str, phase: str, engine: str, index: int, detail=None) -> None:
        self.stopped = Stop(reason, phase, engine, index, detail if detail is not None else self._stop_detail)
        self._stop_requested, self._stop_detail = False, None

    def _thaw(self) -> None:
        self._frozen = frozenset()
        for e in self._active:
            if e.busy and 0 <= e.end < self.time:
                e.end = self.time  # its end passed while frozen: it completes now

    def _advance(self, target, stop_after_one: bool = False):
        """One scheduler iteration. Returns True to continue; False/None when finished or
        stopped; an InstrEvent when `stop_after_one` and a (matching) instruction completed."""
        if self._pending:
            e = self._next_pending() if self._frozen else self._pending.pop(0)
            if e is not None:
                ev = self._complete(e, stop_after_one)
                hit = stop_after_one and (target is None or e.id == target)
                if self._stop_requested:
                    self._stop("request", "complete", e.name, e.pc - 1)
                    return ev if hit else False
                return ev if hit else True
        if self._finished:
            return None
        if not self._issue_ready():
            return False
        t_next = self._next_time()
        if t_next is None:
            if any(e.pc < e.n for e in self._active):
                if self._frozen:
                    self._blocked(target)
                    return False
                self._hang()
            self._finished = True
            return None
        self._move_time(t_next)
        return True

    def _next_pending(self) -> _EngineState | None:
        for i, e in enumerate(self._pending):
            if e.id not in self._frozen:
                return self._pending.pop(i)
        return None

    def _issue_ready(self) -> bool:
        """Issue every engine that can; False if an observer stopped the machine at an issue."""
        sem = self.sem
        t = self.time
        frozen = self._frozen
        on_issue = self._hooks["on_issue"]
        for e in self._active:
            if e.busy or e.pc >= e.n or (frozen and e.id in frozen):
                continue
            if e.blocked is not None and sem[e.blocked[0]] < e.blocked[1]:
                continue  # still waiting on the semaphore that stopped it last time
            e.blocked = next(((s, v) for s, v in e.waits[e.pc] if sem[s] < v), None)
            if e.blocked is not None:
                continue
            cost = e.costs[e.pc]
            end = -1 if e.kind == "dma" else t + cost
            if self._announced is not None and self._announced == (e.id, e.pc):
                self._announced = None  # reported before the stop: it issues now without a second report
            elif on_issue:
                ev = InstrEvent(e.name, e.pc, e.instrs[e.pc], t, end, t - e.free_since)
                for fn in on_issue:
                    fn(ev)
                if self._stop_requested:
                    self._announced = (e.id, e.pc)
                    self._stop("request", "issue", e.name, e.pc)
                    return False
            e.busy, e.issue, e.waited = True, t, t - e.free_since
            if e.kind == "dma":
                e.remaining, e.tail, e.end = float(cost), False, -1
            else:
                e.end = end
        return True

    def _unfrozen(self) -> list[_EngineState]:
        frozen = self._frozen
        return [e for e in self._active if e.id not in frozen] if frozen else self._active

    def _next_time(self) -> int | None:
        t_next = None
        running = self._unfrozen()
        transfers = [e for e in running if e.busy and e.kind == "dma" and not e.tail]
        if transfers:
            rate = min(self._fabric / len(transfers), transfers[0].rate_cap)
            for e in transfers:
                t = self.time + max(1, math.ceil(e.remaining / rate - 1e-9))
                if t_next is None or t < t_next:
                    t_next = t
        for e in running:
            if e.busy and e.end >= 0 and (t_next is None or e.end < t_next):
                t_next = e.end
        return t_next

    def _move_time(self, t_next: int) -> None:
        dt = t_next - self.time
        running = self._unfrozen()
        transfers = [e for e in running if e.busy and e.kind == "dma" and not e.tail]
        if transfers:
            rate = min(self._fabric / len(transfers), transfers[0].rate_cap)
            for e in transfers:
                if self.time + max(1, math.ceil(e.remaining / rate - 1e-9)) <= t_next:
                    e.remaining, e.tail, e.end = 0.0, True, t_next + self._dma_latency
                else:
                    e.remaining -= dt * rate
        self.time = t_next
        self._pending = [e for e in running if e.busy and e.end == t_next]

    def _complete(self, e: _EngineState, want_event: bool):
        idx = e.pc
        ins = e.instrs[idx]
        hooks = self._hooks
        if hooks["on_memory_access"]:
            for kind, name, ap in e.accesses[idx]:
                acc = MemoryAccess(e.name, idx, kind, name, ap, self.time)
                for fn in hooks["on_memory_access"]:
                    fn(acc)
        if self.memory.tracking:
            for kind, _, ap in e.accesses[idx]:
                if kind == "w":
                    self.memory.mark_written(ap)
        try:
            e.execs[idx]()
        except (ExecError, ValueError, FloatingPointError, MemoryError) as exc:
            self.fault = MachineError(f"{e.name} instruction #{idx} `{ins}`: {exc}", e.name, idx)
            self._finished = True
            raise self.fault from None
        for s, inc in e.signals[idx]:
            old = self.sem[s]
            self.sem[s] = old + inc
            if hooks["on_semaphore"]:
                sev = SemaphoreEvent(s, old, old + inc, self.time, e.name, idx)
                for fn in hooks["on_semaphore"]:
                    fn(sev)
        self.busy_cycles[e.id] += self.time - e.issue
        self.completed[e.id] += 1
        self.dma_bytes_moved += e.moved[idx]
        e.busy, e.pc, e.end, e.tail, e.free_since = False, idx + 1, -1, False, self.time
        if not (want_event or hooks["on_complete"]):
            return None
        ev = InstrEvent(e.name, idx, ins, e.issue, self.time, e.waited)
        for fn in hooks["on_complete"]:
            fn(ev)
        return ev

    # ---- hang ------------------------------------------------------------------------------
    def hang_report(self) -> HangReport:
        """Every engine waiting on a semaphore that is not met, who could still signal it, and a
        cycle in the wait-for graph if there is one."""
        blocked = []
        for e in self._active:
            if e.busy or e.pc >= e.n:
                continue
            unmet = [(s, v, self.sem[s]) for s, v in e.waits[e.pc] if self.sem[s] < v]
            if not unmet:
                continue
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

    def _blocked(self, target) -> None:
        """Only frozen engines could make progress: report the engine stepped and what it waits on."""
        report = self.hang_report()
        e = self._engines[target] if target is not None else self._active[0]
        self._stop("blocked", "issue", e.name, e.pc, report)

    def _hang(self) -> None:
        report = self.hang_report()
        for fn in self._hooks["on_hang"]:
            fn(report)
        self._finished = True
        raise HangError(report)

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> MachineSnapshot:
        """Everything needed to resume exactly from here: scheduler state, memories (pages shared
        with earlier snapshots where unchanged, see Memory.snapshot) and the saved state of every
        attached observer that has `save_state`."""
        return MachineSnapshot(
            time=self.time, sem=tuple(self.sem), finished=self._finished,
            pending=tuple(e.id for e in self._pending),
            busy_cycles=tuple(self.busy_cycles), completed=tuple(self.completed),
            dma_bytes=self.dma_bytes_moved,
            engines=tuple(EngineSnapshot(*(getattr(e, f) for f in _ENGINE_FIELDS)) for e in self._engines),
            announced=self._announced,
            memory=self.memory.snapshot(),
            observers=tuple((o, o.save_state()) for o in self._observers if hasattr(o, "save_state")),
        )

    def restore(self, snap: MachineSnapshot) -> None:
        """Return to `snap` exactly (observers still attached get their saved state back)."""
        self.time, self.sem, self._finished = snap.time, list(snap.sem), snap.finished
        self._pending = [self._engines[i] for i in snap.pending]
        self.busy_cycles, self.completed = list(snap.busy_cycles), list(snap.completed)
        self.dma_bytes_moved = snap.dma_bytes
        self._announced = snap.announced
        for e, st in zip(self._engines, snap.engines):
            for f in _ENGINE_FIELDS:
                setattr(e, f, getattr(st, f))
        self.memory.restore(snap.memory)
        self.stopped, self.fault, self._frozen = None, None, frozenset()
        self._stop_requested, self._stop_detail = False, None
        for obs, state in snap.observers:
            if any(o is obs for o in self._observers):
                obs.restore_state(state)


def _host_operands(program: Program, host_op) -> dict[str, AP]:
    """A host call without operands (programs from before host calls carried them): its host
    op's input and output tensors, whole."""
    out: dict[str, AP] = {}
    for prefix, names in (("src", host_op.inputs), ("dst", host_op.outputs)):
        for i, name in enumerate(n for n in names if n):
            t = program.tensor(name)
            count = t.nbytes // np_dtype(t.dtype).itemsize
            if count:
                out[f"{prefix}{i}"] = AP("hbm", t.offset, ((1, count),), t.dtype)
    return out


_BLAS = []


@contextmanager
def single_threaded_blas():
    """Instructions are small matrix products: BLAS threads only fight each other (and any other
    process) for the cores — 100x slower on a loaded 2-core machine — so run them on one thread.
    (Set and restored per library directly: threadpoolctl's `limit` costs 20 us a run.)"""
    if not _BLAS:  # scanning the loaded libraries is slow: do it once
        _BLAS.append([_thread_count_functions(lib)
                      for lib in ThreadpoolController().select(user_api="blas").lib_controllers])
    libs = _BLAS[0]
    before = [get() for get, _ in libs]
    for (_, set_threads), n in zip(libs, before):
        if n != 1:
            set_threads(1)
    try:
        yield
    finally:
        for (_, set_threads), n in zip(libs, before):
            if n != 1:
                set_threads(n)


def _thread_count_functions(lib) -> tuple[Callable[[], int], Callable[[int], object]]:
    """(get, set) of a BLAS library's thread count. For OpenBLAS its own C functions, found the way
    threadpoolctl finds them: the controller's methods wrap each call in Python (~1.5 us; four calls
    per run were ~6 us of a small program's run). Any other library: the controller's methods."""
    symbol = getattr(lib, "_get_symbol", None)  # threadpoolctl's lookup (prefix/suffix of the build)
    if lib.internal_api == "openblas" and callable(symbol):
        get, put = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
        if get is not None and put is not None:
            return get, put
    return (lambda: lib.num_threads), lib.set_num_threads


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
