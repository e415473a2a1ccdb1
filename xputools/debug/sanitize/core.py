"""`sanitize(program, feeds, checks=...)`: run a program once on the emulator with the sanitizers
attached as one machine observer, and return every finding (the library form of `xpu sanitize`).

Checks (see docs/sanitize.md): race (vector clocks over semaphore edges, exact byte overlap),
uninit (shadow memory), bounds (static, against memories and declared tensors), nan (where
non-finite values are born), hang (the machine's wait-for graph), sync (semaphore use no timing can
make right). A device fault or a hang ends the run: what ran is still checked, and the fault or
hang is itself a finding.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from device_model.events import HangReport, InstrEvent, MemoryAccess, Observer, SemaphoreEvent
from device_model.isa import AP, ENGINE_INDEX, ENGINES, Instr, attr
from device_model.machine import HangError, MachineError
from device_model.program import Program

from ...errors import UserError
from ...runtime import DeviceSession
from .bounds import check_program
from .clocks import VectorClocks
from .findings import CHECKS, Access, Finding, SanitizeReport
from .nan import NanWatch
from .race import RaceDetector, Touch
from .shadow import InitShadow
from .sync import OverSignalWatch, semaphore_uses, static_problems

MAX_FINDINGS_PER_CHECK = 100
JITTER_CYCLES = 2000  # up to this many extra cycles per instruction (x8 bytes for DMA) per jittered run


def parse_checks(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"race,uninit"` (or a list) -> checks in canonical order; None or "all" -> every check."""
    if spec is None:
        return CHECKS
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return CHECKS
    unknown = [n for n in names if n not in CHECKS]
    if unknown or not names:
        raise UserError(f"unknown check {', '.join(unknown) or '(none given)'}: choose from {', '.join(CHECKS)}")
    return tuple(c for c in CHECKS if c in names)


def sanitize(program: Program, feeds: dict[str, np.ndarray], checks: str | Iterable[str] | None = None,
             arch=None, max_findings: int = MAX_FINDINGS_PER_CHECK, jitter: int = 0,
             jitter_cycles: int = JITTER_CYCLES,
             progress: Callable[[int, int], None] | None = None) -> SanitizeReport:
    """Run `program` on `feeds` under the chosen checks (default all) and report what they found.

    `jitter=N` also reruns it under N other timings (deterministic random extra cost of up to
    `jitter_cycles` per instruction, seeds 1..N), like injected delays: the race check follows the
    run it sees, so a wait that another signal could satisfy first shows up only when it does.
    Findings only seen under jitter say so (`Finding.jitter_seed`). `progress(done, total)` is
    called every few hundred completed instructions."""
    chosen = parse_checks(checks)
    counter = _Counter(progress, len(program.instrs) * (1 + jitter)) if progress else None
    report = _run_once(program, feeds, chosen, arch, max_findings, None, counter)
    seen = {_identity(f) for f in report.findings}
    for seed in range(1, jitter + 1):
        extra = _run_once(program, feeds, chosen, arch, max_findings, (seed, jitter_cycles), counter)
        for finding in extra.findings:
            if _identity(finding) not in seen:
                seen.add(_identity(finding))
                finding.jitter_seed = seed
                finding.message += f" (seen with timing jitter seed {seed})"
                report.findings.append(finding)
    return report


def _identity(finding: Finding) -> tuple:
    return finding.check, finding.kind, tuple((a.engine, a.index, a.operand) for a in finding.accesses)


class _Counter(Observer):
    """Reports completed instructions to a progress callback (across all runs of one sanitize)."""

    EVERY = 256

    def __init__(self, progress: Callable[[int, int], None], total: int):
        self.progress, self.total, self.done = progress, total, 0

    def on_complete(self, ev: InstrEvent) -> None:
        self.done += 1
        if self.done % self.EVERY == 0:
            self.progress(self.done, self.total)


def _run_once(program, feeds, checks, arch, max_findings, cost_jitter, counter=None) -> SanitizeReport:
    session = DeviceSession(program, arch, cost_jitter, check_bounds=False)
    observer = Sanitizer(program, session.machine, checks, max_findings)
    report = observer.report
    if cost_jitter is None:  # the program text does not change with the timing
        if "bounds" in checks:
            observer.static_bounds()
        if "sync" in checks:
            observer.static_sync()
    try:
        session.run(feeds, observers=[observer] + ([counter] if counter else []))
    except HangError as exc:
        report.completed = False
        observer.hung(exc.report)
    except MachineError as exc:
        report.completed = False
        observer.faulted(exc)
    report.instructions = sum(session.machine.completed)
    report.cycles = session.machine.time
    return report


class Sanitizer(Observer):
    """The machine observer that drives every runtime check."""

    def __init__(self, program: Program, machine, checks: tuple[str, ...], max_findings: int):
        self.program, self.machine, self.checks = program, machine, checks
        self.report = SanitizeReport(checks)
        self._max = max_findings
        self._streams = program.streams()
        self._order = {}  # (engine, index) -> position in the program text
        counts: dict[str, int] = {}
        for pos, ins in enumerate(program.instrs):
            i = counts.get(ins.engine, 0)
            counts[ins.engine] = i + 1
            self._order[(ins.engine, i)] = pos
        self._pending: dict[str, list[tuple[bool, str, AP]]] = {}
        self._clocks = VectorClocks(machine.arch.semaphores) if "race" in checks else None
        self._races = RaceDetector() if "race" in checks else None
        self._shadow = InitShadow(machine.memory, program) if "uninit" in checks else None
        self._nan = NanWatch(machine.memory) if "nan" in checks else None
        self._uses = semaphore_uses(program)
        self._oversignal = OverSignalWatch(self._uses) if "sync" in checks else None
        self._bounds_reported: set[tuple[str, int]] = set()

    # ---- findings ---------------------------------------------------------------------------
    def add(self, finding: Finding) -> None:
        if len(self.report.by_check(finding.check)) >= self._max:
            self.report.suppressed[finding.check] = self.report.suppressed.get(finding.check, 0) + 1
            return
        self.report.findings.append(finding)

    def instr(self, engine: str, index: int) -> Instr:
        return self._streams[engine][index]

    def access(self, engine: str, index: int, operand: str | None = None, ap: AP | None = None,
               write: bool | None = None, where: str | None = None) -> Access:
        ins = self.instr(engine, index)
        node = self.program.origins[ins.dbg].name if 0 <= ins.dbg < len(self.program.origins) else None
        return Access(engine, index, ins.op, None if ap is None else str(ap), operand,
                      None if write is None else ("write" if write else "read"), node, where)

    # ---- static checks ----------------------------------------------------------------------
    def static_bounds(self) -> None:
        for oob in check_program(self.program, self.machine.arch):
            self._bounds_reported.add((oob.engine, oob.index))
            side = self.access(oob.engine, oob.index, oob.operand, oob.ap, oob.operand in ("dst", "accum"))
            where = "outside its memory" if oob.kind == "memory" else "outside the declared tensor"
            self.add(Finding("bounds", oob.kind, f"{side.where()} is {where}: {oob.why}", [side],
                             _stop_at(oob.engine, oob.index)))

    def static_sync(self) -> None:
        for problem in static_problems(self._uses):
            # the waiter never issues, so a breakpoint on it never fires: run into the hang
            self.add(Finding("sync", problem.kind, problem.message,
                             [self.access(r.engine, r.index) for r in problem.instrs],
                             ["run", "info hang", "info sems"]))

    # ---- machine hooks ----------------------------------------------------------------------
    def on_issue(self, ev: InstrEvent) -> None:
        if self._clocks is not None:
            self._clocks.issued(ev.engine, ev.index, ev.instr.waits)

    def on_memory_access(self, acc: MemoryAccess) -> None:
        write = acc.kind == "w"
        self._pending.setdefault(acc.engine, []).append((write, acc.operand, acc.ap))
        if self._nan is not None:
            self._nan.before(acc.operand, acc.ap, write)

    def on_semaphore(self, ev: SemaphoreEvent) -> None:
        if self._clocks is not None:
            self._clocks.signalled(ev.engine, ev.index, ev.sem, ev.new)
        if self._oversignal is not None:
            problem = self._oversignal.signalled(ev.sem, ev.old, ev.new, ev.engine, ev.index)
            if problem is not None:
                self.add(Finding("sync", problem.kind, problem.message,
                                 [self.access(r.engine, r.index) for r in problem.instrs],
                                 [f"watch s{ev.sem}", "run"]))  # stops at each signal: old -> new

    def on_complete(self, ev: InstrEvent) -> None:
        touches = self._pending.pop(ev.engine, [])
        ins = ev.instr
        if ins.op == "matmul" and attr(ins, "start") == 0:  # accumulating: dst is read as well
            touches = [(False, "dst", ins.operands["dst"])] + touches
        if self._shadow is not None:
            self._check_init(ev, touches)
        if self._races is not None:
            self._check_races(ev, touches)
        if self._nan is not None:
            bad = self._nan.completed(ins)
            if bad is not None:
                side = self.access(ev.engine, ev.index, bad.operand, bad.ap, True)
                kind = "nan" if bad.nan else "inf"
                self.add(Finding("nan", kind, f"{side.where()} {bad.describe()}", [side],
                                 _stop_at(ev.engine, ev.index)))

    # ---- runtime checks ---------------------------------------------------------------------
    def _check_init(self, ev: InstrEvent, touches) -> None:
        for write, operand, ap in touches:
            if write:
                continue
            missing = self._shadow.read(ap)
            if missing is not None:
                side = self.access(ev.engine, ev.index, operand, ap, False, missing.describe())
                self.add(Finding("uninit", "uninit-read", (
                    f"{side.where()} reads {missing.count} element(s) that no instruction or input wrote "
                    f"({missing.describe()})"), [side], _stop_at(ev.engine, ev.index)))
        for write, _operand, ap in touches:
            if write:
                self._shadow.write(ap)

    def _check_races(self, ev: InstrEvent, touches) -> None:
        eid = ENGINE_INDEX[ev.engine]
        clock = self._clocks.current[eid]
        for write, operand, ap in touches:
            for race in self._races.access(Touch(eid, ev.index, write, operand, ap), clock):
                self._report_race(race)

    def _report_race(self, race) -> None:
        a, b = race.first, race.second
        ea, eb = ENGINES[a.engine_id], ENGINES[b.engine_id]
        # name the hazard in program order: what the program text meant to happen first
        if self._order[(ea, a.index)] > self._order[(eb, b.index)]:
            a, b, ea, eb = b, a, eb, ea
        kind = {(True, False): "RAW", (False, True): "WAR", (True, True): "WAW"}[(a.write, b.write)]
        region = _describe_region(race.region)
        first = self.access(ea, a.index, a.operand, a.ap, a.write, region)
        second = self.access(eb, b.index, b.operand, b.ap, b.write, region)
        self.add(Finding("race", kind, (
            f"{kind} race on {region}: {first.where()} and {second.where()} touch the same bytes, and no "
            f"semaphore signal -> wait path orders them (they may run in either order)"),
            [first, second], _stop_at(eb, b.index)))

    def hung(self, report: HangReport) -> None:
        kind = "deadlock" if report.cycle else "unsatisfiable-wait"
        sides = [self.access(b.engine, b.index) for b in report.blocked]
        self.add(Finding("hang", kind, report.text(), sides, ["run", "info hang"]))

    def faulted(self, exc: MachineError) -> None:
        engine, index = getattr(exc, "engine", None), getattr(exc, "index", None)
        if (engine, index) in self._bounds_reported:
            return  # the bounds check already named this instruction
        sides = [self.access(engine, index)] if engine is not None and index is not None else []
        debug = _stop_at(engine, index) if sides else ["run"]
        self.add(Finding("fault", "fault", f"the run stopped on a device fault: {exc}", sides, debug))


def _stop_at(engine: str, index: int) -> list[str]:
    return [f"break {engine}:{index}", "run"]


def _describe_region(fp) -> str:
    b = f"bytes {fp.first:#x}..{fp.end - 1:#x}"
    if fp.space == "hbm":
        return f"hbm {b}"
    return f"{fp.space} partitions {fp.pstart}..{fp.pstart + fp.pcount - 1} {b}"
