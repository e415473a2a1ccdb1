"""The debugger core: a `Debugger` drives one emulated XPU through a program with gdb's verbs.

Every command is a method returning data (Stop, Breakpoint, Value, lists of dataclasses); nothing
here prints, so the console, batch scripts, notebooks and the TUI share it. Forward execution is
the machine itself with the debugger's observer attached; reverse execution restores the nearest
periodic snapshot and replays deterministically (see history.py for the memory bound).
"""
from __future__ import annotations

import bisect
import io
import threading
from dataclasses import dataclass, field

import numpy as np

from device_model.access import overlaps
from device_model.events import EngineView, HangReport
from device_model.fileio import OutputError, write_bytes_atomic
from device_model.isa import ENGINE_INDEX, ENGINES, engine_kind, is_written, operand_accesses
from device_model.machine import HangError, Machine, MachineError
from device_model.program import Program

from ..runtime.feeds import check_inputs
from ..runtime.host_runner import OnnxHostRunner
from .errors import DebugError
from .expressions import Target, Value, parse_condition, parse_examine, parse_target, read_target
from .history import DEFAULT_BUDGET, DEFAULT_INTERVAL, FrozenStep, History
from .locations import Location, ProgramIndex
from .observer import REPLAY, RUN, SCAN, DebugObserver
from .points import Breakpoint, Hit, Point, Stop, Watchpoint

ONCHIP_BLOCK = 256  # granularity of `info memory` live ranges (bytes per partition)


@dataclass
class EngineInfo:
    view: EngineView
    focused: bool
    instr: str  # the instruction at pc (in flight or next), "" when done
    node: str
    last: str  # last retired instruction
    last_node: str


@dataclass
class SemInfo:
    sem: int
    value: int
    signalled_by: list[str]
    waited_by: list[str]


@dataclass
class Frame:
    level: int
    kind: str  # instruction, kernel, node, model
    text: str


@dataclass
class ListingLine:
    engine: str
    index: int
    text: str
    node: str
    current: bool
    breakpoints: list[int] = field(default_factory=list)


@dataclass
class LiveRange:
    space: str
    lo: int  # bytes per partition [lo, hi)
    hi: int
    written_by: list[str]  # nodes
    read_by: list[str]


@dataclass
class HistoryInfo:
    snapshots: int
    bytes: int
    budget: int
    interval: int  # retired instructions between snapshots (a reverse step replays at most this many)
    frozen_steps: int
    point: Point


@dataclass
class HangInfo:
    hung: bool  # the program stopped because nothing can progress
    report: HangReport

    @property
    def no_producer_left(self) -> list[tuple[str, int]]:
        """(engine, semaphore) pairs waiting on a semaphore nothing left can signal."""
        return [(b.engine, s) for b in self.report.blocked for s, _, _ in b.unmet if not b.signallers.get(s)]


class Debugger:
    """`Debugger(program, feeds)` then `run()`, `break_("pe:3")`, `stepi()`, `print_("y")`, ...

    Memory for reverse execution is bounded by `budget_bytes` (default 256 MiB) of snapshot pages;
    snapshots start every `interval` retired instructions (default 64) and thin out as needed."""

    def __init__(self, program: Program, feeds: dict[str, np.ndarray] | None = None, arch=None, host_runner=None,
                 budget_bytes: int = DEFAULT_BUDGET, interval: int = DEFAULT_INTERVAL):
        self.program = program
        self.index = ProgramIndex(program)
        self.machine = Machine(arch or program.arch, host_runner=host_runner or OnnxHostRunner())
        self.machine.load(program)
        for name, arr in check_inputs(program, feeds or {}).items():
            self.machine.write_tensor(name, arr)
        self.obs = DebugObserver(self.machine, self.index, self._retired)
        self.machine.attach(self.obs)
        self.history = History(self.machine, budget_bytes, interval)
        self.history.take((0, 0))
        self.focus = next((e for e in ENGINES if e in self.index.streams), "pe")
        self.running = False
        self.breakpoints: dict[int, Breakpoint] = {}
        self.watchpoints: dict[int, Watchpoint] = {}
        self._displays: dict[int, str] = {}
        self._next_number = 1
        self._next_display = 1
        self.last_stop: Stop | None = None
        self._interrupt = threading.Event()
        self.obs.interrupted = self._interrupt.is_set

    # ---- position ----------------------------------------------------------------------------
    @property
    def point(self) -> Point:
        return self.obs.point

    def _retired(self, engine: str, index: int) -> bool:
        return self.machine.engine(engine).last_retired >= index if engine in self.index.streams else False

    # ---- run control -------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Ask a running `continue`/`next`/`reverse-continue` (in another thread) to stop at the next
        instruction boundary (gdb's Ctrl+C); the command returns a Stop with reason "interrupted".
        Safe to call from any thread; a request made just before the command starts stops it at once."""
        self._interrupt.set()

    def start(self) -> Stop:
        """Restart the program and stop before anything runs (gdb `start`)."""
        self.machine.restore(self.history.snaps[0])
        self.running = True
        return self._stop("start", message="at the start of the program")

    def run(self) -> Stop:
        """Restart the program and run to the first stop (gdb `run`)."""
        self.start()
        return self._free("exited")

    def kill(self) -> Stop:
        self.machine.restore(self.history.snaps[0])
        self.running = False
        return self._stop("killed", message="the program is no longer running")

    def cont(self, count: int = 1) -> Stop:
        """Continue; `count` > 1 ignores the breakpoint we are stopped at count-1 more times."""
        self._need_live()
        if count > 1 and self.last_stop is not None:
            for hit in self.last_stop.hits:
                point = self.breakpoints.get(hit.number) or self.watchpoints.get(hit.number)
                if point is not None:
                    point.ignore = count - 1
        return self._free("exited")

    def stepi(self, count: int = 1, all_engines: bool = False) -> Stop:
        """The focused engine retires `count` instructions while the others stay frozen; with
        `all_engines`, run everything until `count` instructions (of any engine) have retired."""
        self._need_live()
        if all_engines:
            goal = self.point[0] + count
            return self._free("step", complete=lambda ev: len(self.obs.retire_log) >= goal)
        stop = None
        for _ in range(count):
            stop = self._frozen_step()
            if stop.reason != "step":
                return stop
        return stop

    def tick(self, cycles: int) -> Stop:
        """All engines run until the clock reaches now + `cycles` (stops at the first completion
        at or after it)."""
        self._need_live()
        end = self.machine.time + cycles
        return self._free("step", complete=lambda ev: self.machine.time >= end)

    def next(self) -> Stop:
        """Run until the focused engine is about to start an instruction of another ONNX node."""
        self._need_live()
        focus = self.focus
        view = self.machine.engine(focus)
        if view.state == "DONE":
            return self._stop("done", message=f"{focus} has no instruction left")
        node = self.index.instr(focus, view.pc).dbg
        return self._free("step", issue=lambda ev: ev.engine == focus and ev.instr.dbg != node)

    step = next

    def finish(self) -> Stop:
        """Run until every instruction of the focused engine's current node has retired on every engine."""
        self._need_live()
        view = self.machine.engine(self.focus)
        index = view.pc if view.state != "DONE" else view.last_retired
        if index < 0:
            raise DebugError(f"{self.focus} has no instructions")
        node = self.index.instr(self.focus, index).dbg
        lasts: dict[str, int] = {}
        for engine, i in self.index.by_dbg.get(node, []):
            lasts[engine] = max(lasts.get(engine, -1), i)

        def all_retired(_ev=None) -> bool:
            return all(self.machine.engine(e).last_retired >= i for e, i in lasts.items())

        if all_retired():
            return self._stop("step", message=f"node {self.index.node_name(node)} has already retired")
        return self._free("step", complete=lambda ev: ev.instr.dbg == node and all_retired())

    def until(self, loc: str) -> Stop:
        """Run until an instruction of LOC is about to issue (gdb `until`/`advance`)."""
        self._need_live()
        where = self.index.resolve(loc, self.focus)
        return self._free("step", issue=lambda ev: (ev.engine, ev.index) in where.instrs)

    advance = until

    # ---- reverse -----------------------------------------------------------------------------
    def reverse_stepi(self, count: int = 1, all_engines: bool = False) -> Stop:
        """Back to just before the focused engine's `count`-th last retired instruction completed
        (bit-identical to the state the run had there)."""
        self._need_started()
        log = self.obs.retire_log
        want = None if all_engines else ENGINE_INDEX[self.focus]
        found, j = 0, len(log) - 1
        while j >= 0:
            if want is None or log[j] == want:
                found += 1
                if found == count:
                    break
            j -= 1
        if found == 0:
            raise DebugError(f"no instruction of {self.focus} has retired yet: nothing to reverse")
        if j < 0:
            j = next(i for i in range(len(log)) if want is None or log[i] == want)
        target = (j, 0)
        for s in self.history.steps:
            if s.point[0] == j and (want is None or ENGINE_INDEX[s.engine] == want):
                target = s.point
        self._replay_to(target)
        engine = self.focus if not all_engines else ENGINES[log[j]] if j < len(log) else self.focus
        view = self.machine.engine(engine)
        return self._stop("step", message="reversed", engine=engine, index=min(view.pc, view.count - 1),
                          phase="in flight" if view.in_flight else "next")

    def reverse_continue(self) -> Stop:
        """Back to the latest breakpoint or watchpoint hit before here (a watchpoint: the last
        instruction that wrote it, stopped right after the write)."""
        self._need_started()
        return self._reverse_search(None, "reverse-start")

    def reverse_finish(self) -> Stop:
        """Back to just before the focused engine started its current node."""
        self._need_started()
        focus = self.focus
        view = self.machine.engine(focus)
        index = view.pc if view.state != "DONE" else view.last_retired
        if index < 0:
            raise DebugError(f"{focus} has no instructions")
        if not view.in_flight and view.state != "DONE" and view.pc == 0:
            raise DebugError(f"{focus} has not started yet")
        stream = self.index.streams[focus]
        node = stream[index].dbg
        first = index
        while first > 0 and stream[first - 1].dbg == node:
            first -= 1
        return self._reverse_search(lambda ev: ev.engine == focus and ev.index == first, "reverse-start")

    def _reverse_search(self, predicate, none_reason: str) -> Stop:
        end = self.point
        obs = self.obs
        saved = (obs.break_at, obs.watch_at, obs.sem_watch)
        if predicate is not None:
            obs.break_at, obs.watch_at, obs.sem_watch = {}, {}, {}
        obs.scan_issue = predicate
        origin = end
        try:
            i = max(0, _bisect_left(self.history.points, end) - 1)
            while True:
                if self._interrupt.is_set():
                    pt, hits = origin, None
                    break
                obs.scan_hits = []
                self._replay_to(end, SCAN, i)
                found = [(pt, hits) for pt, hits in obs.scan_hits if pt < end]
                if found:
                    pt, hits = found[-1]
                    break
                if i == 0:
                    pt, hits = None, []
                    break
                end = self.history.points[i]
                i -= 1
        finally:
            obs.break_at, obs.watch_at, obs.sem_watch = saved
            obs.scan_issue = None
            self._interrupt.clear()
        if hits is None:  # interrupted: back where the search started
            self._replay_to(origin)
            return self._stop("interrupted", message="interrupted; still where reverse-continue started")
        if pt is None:
            self._replay_to((0, 0))
            return self._stop(none_reason, message="no earlier stop: at the start of the program")
        self._replay_to(pt)
        if predicate is not None:
            return self._stop("step", message="reversed to the start of the node")
        reason = "watchpoint" if hits and hits[0].kind == "watchpoint" else "breakpoint"
        return self._stop(reason, hits=hits)

    def _replay_to(self, target: Point, mode: str = REPLAY, start: int | None = None) -> None:
        h, obs, m = self.history, self.obs, self.machine
        i = h.nearest(target) if start is None else start
        m.restore(h.snaps[i])
        obs.reset_stop()
        obs.mode, obs.target = mode, None
        try:
            for fs in h.steps_between(h.points[i], target):
                if fs.point > obs.point:
                    self._replay_free(fs.point)
                m.step(fs.engine, freeze_others=True)
            if obs.point < target:
                self._replay_free(target)
        except MachineError:
            pass  # the run faulted or hung there the first time too: the state is where it stopped
        finally:
            obs.mode, obs.target = RUN, None
            obs.reset_stop()

    def _replay_free(self, point: Point) -> None:
        self.obs.target = point
        self.machine.run()
        self.obs.target = None

    # ---- forward machinery -------------------------------------------------------------------
    def _need_started(self) -> None:
        if not self.running:
            raise DebugError("the program is not being run: use run or start")

    def _need_live(self) -> None:
        self._need_started()
        if self.machine.fault is not None:
            raise DebugError("the program faulted here: inspect it, reverse, or run to restart")
        if self.machine.done:
            raise DebugError("the program has finished: run to restart, or reverse")

    def _prepare_forward(self, frozen_engine: str | None = None) -> None:
        point = self.point
        existing = self.history.frozen_step_at(point)
        if frozen_engine is None:
            if self.history.has_future_steps(point):
                self.history.fork(point)
        elif existing is None or existing.engine != frozen_engine:
            self.history.fork(point)
        self.obs.snapshot_at = self.history.next_due()
        self.obs.reset_stop()

    def _free(self, finished_reason: str, issue=None, complete=None) -> Stop:
        self._prepare_forward()
        obs = self.obs
        obs.issue_until, obs.complete_until = issue, complete
        try:
            while True:
                obs.reset_stop()
                try:
                    self.machine.run()
                except HangError as exc:
                    return self._stop("hang", report=exc.report, message="no engine can make progress")
                except MachineError as exc:
                    return self._fault(exc)
                st = self.machine.stopped
                if st is None:
                    return self._stop("exited", message="the program finished")
                if "snapshot" in obs.reasons:
                    self._snapshot()
                    if obs.reasons == {"snapshot"}:
                        continue
                if obs.hits:
                    reason = "breakpoint" if obs.hits[0].kind == "breakpoint" else "watchpoint"
                    return self._stop(reason, hits=list(obs.hits))
                if "interrupt" in obs.reasons:
                    return self._stop("interrupted", message="interrupted")
                return self._stop("step" if finished_reason != "exited" else "exited")
        finally:
            obs.issue_until = obs.complete_until = None
            self._interrupt.clear()

    def _snapshot(self) -> None:
        self.history.take(self.point)
        self.obs.snapshot_at = self.history.next_due()

    def _frozen_step(self) -> Stop:
        focus = self.focus
        point = self.point
        self._prepare_forward(focus)
        known = self.history.frozen_step_at(point) is not None
        obs = self.obs
        obs.stepping = True
        try:
            ev = self.machine.step(focus, freeze_others=True)
        except MachineError as exc:
            return self._fault(exc)
        finally:
            obs.stepping = False
        if ev is None:
            st = self.machine.stopped
            if st is not None and st.reason == "blocked":
                mine = [b for b in st.detail.blocked if b.engine == focus]
                who = "; ".join(f"s{s} >= {want} (now {now}) needs a signal from "
                                f"{', '.join(b.signallers.get(s) or []) or 'no engine: it can never be met'}"
                                for b in mine for s, want, now in b.unmet)
                return self._stop("blocked", report=st.detail,
                                  message=f"{focus} waits on {who or 'a frozen engine'} (the others are frozen)")
            return self._stop("done", message=f"{focus} has no instruction left")
        if not known:
            self.history.steps.append(FrozenStep(point, focus))
        if "snapshot" in obs.reasons:
            self._snapshot()
        if obs.hits:
            return self._stop("watchpoint", hits=list(obs.hits))
        return self._stop("step")

    def _fault(self, exc: MachineError) -> Stop:
        return self._stop("fault", message=str(exc), engine=exc.engine or "", index=-1 if exc.index is None
                          else exc.index, phase="fault")

    def _stop(self, reason: str, hits: list[Hit] | None = None, message: str = "", report=None,
              engine: str = "", index: int = -1, phase: str = "") -> Stop:
        st = self.machine.stopped
        if not engine:
            if st is not None and st.reason == "request":
                engine, index, phase = st.engine, st.index, st.phase
            elif self.obs.retire_log and reason not in ("start", "killed", "reverse-start"):
                engine = ENGINES[self.obs.retire_log[-1]]
                index, phase = self.machine.engine(engine).last_retired, "complete"
        instr = node = ""
        if engine and index >= 0:
            ins = self.index.instr(engine, index)
            instr, node = str(ins), self.index.node_name(ins.dbg)
        stop = Stop(reason, self.point, self.machine.time, engine, index, phase, instr, node, hits or [], message,
                    report)
        for hit in stop.hits:
            point = self.breakpoints.get(hit.number) or self.watchpoints.get(hit.number)
            if point is not None:
                stop.commands += point.commands
            if isinstance(point, Breakpoint) and point.temporary:  # gone once it stopped the program
                self.delete([point.number])
        stop.displays = self.displays() if self.running else []
        self.last_stop = stop
        return stop

    # ---- focus -------------------------------------------------------------------------------
    def set_focus(self, engine: str) -> EngineInfo:
        if engine not in ENGINES:
            raise DebugError(f"unknown engine {engine!r} (pe, act, dve, pool, dma0..dma15, host)")
        if engine not in self.index.streams:
            raise DebugError(f"{engine} has no instructions in this program "
                             f"(engines with code: {', '.join(self.index.streams)})")
        self.focus = engine
        return self._engine_info(engine)

    def info_engines(self) -> list[EngineInfo]:
        return [self._engine_info(e) for e in self.index.streams]

    def _engine_info(self, engine: str) -> EngineInfo:
        v = self.machine.engine(engine)
        ins = self.index.instr(engine, v.pc) if v.pc < v.count else None
        last = self.index.instr(engine, v.last_retired) if v.last_retired >= 0 else None
        return EngineInfo(v, engine == self.focus, str(ins) if ins else "",
                          self.index.node_name(ins.dbg) if ins else "", str(last) if last else "",
                          self.index.node_name(last.dbg) if last else "")

    # ---- breakpoints and watchpoints ---------------------------------------------------------
    def break_(self, loc: str, condition: str = "", temporary: bool = False) -> Breakpoint:
        where = self.index.resolve(loc, self.focus)
        bp = Breakpoint(self._take_number(), where, temporary)
        if condition:
            self.condition(bp.number, condition, _new=bp)
        self.breakpoints[bp.number] = bp
        self._rebuild()
        return bp

    def tbreak(self, loc: str, condition: str = "") -> Breakpoint:
        return self.break_(loc, condition, temporary=True)

    def watch(self, expr: str, kind: str = "watch", condition: str = "") -> Watchpoint:
        """Stop at every instruction that writes (`watch`), reads (`rwatch`) or touches (`awatch`)
        the memory `expr` names, or signals semaphore sN."""
        if kind not in ("watch", "rwatch", "awatch"):
            raise DebugError(f"unknown watchpoint kind {kind}")
        target = parse_target(expr, self.program)
        if target.kind == "sem" and kind != "watch":
            raise DebugError("semaphores can only be watched for signals: watch sN")
        if target.kind == "sem" and not 0 <= target.sem < self.machine.arch.semaphores:
            raise DebugError(f"no semaphore s{target.sem} (the device has {self.machine.arch.semaphores})")
        if target.kind == "ap":
            why = self.machine.memory.check(target.ap)
            if why:
                raise DebugError(f"{target.text}: {why}")
        wp = Watchpoint(self._take_number(), kind, target, target.footprints(self.program))
        if condition:
            self.condition(wp.number, condition, _new=wp)
        self.watchpoints[wp.number] = wp
        self._rebuild()
        return wp

    def rwatch(self, expr: str, condition: str = "") -> Watchpoint:
        return self.watch(expr, "rwatch", condition)

    def awatch(self, expr: str, condition: str = "") -> Watchpoint:
        return self.watch(expr, "awatch", condition)

    def _take_number(self) -> int:
        n = self._next_number
        self._next_number += 1
        return n

    def _point(self, number: int):
        p = self.breakpoints.get(number) or self.watchpoints.get(number)
        if p is None:
            raise DebugError(f"no breakpoint or watchpoint number {number}")
        return p

    def _numbers(self, numbers) -> list[int]:
        if numbers is None or len(numbers) == 0:
            return sorted(list(self.breakpoints) + list(self.watchpoints))
        for n in numbers:
            self._point(n)
        return list(numbers)

    def delete(self, numbers: list[int] | None = None) -> list[int]:
        gone = self._numbers(numbers)
        for n in gone:
            self.breakpoints.pop(n, None)
            self.watchpoints.pop(n, None)
        self._rebuild()
        return gone

    def disable(self, numbers: list[int] | None = None) -> list[int]:
        return self._set_enabled(numbers, False)

    def enable(self, numbers: list[int] | None = None) -> list[int]:
        return self._set_enabled(numbers, True)

    def _set_enabled(self, numbers, on: bool) -> list[int]:
        done = self._numbers(numbers)
        for n in done:
            self._point(n).enabled = on
        return done

    def condition(self, number: int, text: str = "", _new=None):
        p = _new or self._point(number)
        p.condition, p.cond_tree = (text.strip(), parse_condition(text)) if text.strip() else ("", None)
        return p

    def ignore(self, number: int, count: int):
        if count < 0:
            raise DebugError("ignore count must be >= 0")
        p = self._point(number)
        p.ignore = count
        return p

    def commands(self, number: int, lines: list[str]):
        p = self._point(number)
        p.commands = [line.strip() for line in lines if line.strip()]
        return p

    def info_breakpoints(self) -> list:
        return [self._point(n) for n in sorted(list(self.breakpoints) + list(self.watchpoints))]

    def _rebuild(self) -> None:
        """Compile breakpoints and watchpoints into per-instruction lookups for the observer."""
        break_at: dict[tuple[str, int], list[Breakpoint]] = {}
        for bp in self.breakpoints.values():
            for ref in bp.location.instrs:
                break_at.setdefault(ref, []).append(bp)
        watch_at: dict[tuple[str, int], list] = {}
        sem_watch: dict[int, list[Watchpoint]] = {}
        for wp in self.watchpoints.values():
            if wp.target.kind == "sem":
                sem_watch.setdefault(wp.target.sem, []).append(wp)
                continue
            for engine, stream in self.index.streams.items():
                for i, ins in enumerate(stream):
                    kinds = {kind for kind, _, ap in operand_accesses(ins) if _touches(ap, wp.footprints)}
                    kind = "w" if "w" in kinds and wp.wants("w") else ("r" if "r" in kinds and wp.wants("r") else "")
                    if kind:
                        watch_at.setdefault((engine, i), []).append((wp, kind))
        self.obs.break_at, self.obs.watch_at, self.obs.sem_watch = break_at, watch_at, sem_watch

    # ---- inspection --------------------------------------------------------------------------
    def print_(self, expr: str) -> Value:
        return read_target(self.machine, parse_target(expr, self.program), self._retired)

    def examine(self, fmt: str, address: str) -> Value:
        ap, letter = parse_examine(fmt, address)
        value = read_target(self.machine, Target("ap", address, ap=ap), self._retired)
        value.note = letter  # the console formats by it
        return value

    def display(self, expr: str) -> int:
        parse_target(expr, self.program)
        n = self._next_display
        self._next_display += 1
        self._displays[n] = expr
        return n

    def undisplay(self, numbers: list[int] | None = None) -> list[int]:
        gone = list(self._displays) if not numbers else numbers
        for n in gone:
            if n not in self._displays:
                raise DebugError(f"no display number {n}")
            del self._displays[n]
        return gone

    def displays(self) -> list[tuple[int, str, object]]:
        out = []
        for n, expr in self._displays.items():
            try:
                out.append((n, expr, self.print_(expr)))
            except DebugError as exc:
                out.append((n, expr, str(exc)))
        return out

    def info_sems(self, all_sems: bool = False) -> list[SemInfo]:
        signal: dict[int, set[str]] = {}
        wait: dict[int, set[str]] = {}
        for ins in self.program.instrs:
            for s, _ in ins.signals:
                signal.setdefault(s, set()).add(ins.engine)
            for s, _ in ins.waits:
                wait.setdefault(s, set()).add(ins.engine)
        out = []
        for s, value in enumerate(self.machine.sem):
            if all_sems or value or s in signal or s in wait:
                out.append(SemInfo(s, value, _engine_order(signal.get(s, ())), _engine_order(wait.get(s, ()))))
        return out

    def info_queues(self) -> list[EngineInfo]:
        return [info for info in self.info_engines() if engine_kind(info.view.name) == "dma"]

    def info_memory(self) -> list[LiveRange]:
        """SBUF/PSUM ranges (bytes per partition, all partitions together) written by a retired
        instruction and still to be read by one that has not retired: what is live now."""
        out = []
        for space in ("sbuf", "psum"):
            writer: dict[int, int] = {}
            readers: dict[int, set[int]] = {}
            pcs = {e: self.machine.engine(e).last_retired for e in self.index.streams}
            for engine, stream in self.index.streams.items():
                for i, ins in enumerate(stream):
                    done = i <= pcs[engine]
                    for name, ap in ins.operands.items():
                        if ap.space != space:
                            continue
                        lo, hi = ap.byte_extent()
                        for b in range(lo // ONCHIP_BLOCK, (hi - 1) // ONCHIP_BLOCK + 1):
                            if is_written(name) and done:
                                writer[b] = ins.dbg
                            elif not is_written(name) and not done:
                                readers.setdefault(b, set()).add(ins.dbg)
            live = sorted(b for b in readers if b in writer)
            for run in _runs(live):
                w = sorted({self.index.node_name(writer[b]) for b in run})
                r = sorted({self.index.node_name(d) for b in run for d in readers[b]})
                out.append(LiveRange(space, run[0] * ONCHIP_BLOCK, (run[-1] + 1) * ONCHIP_BLOCK, w, r))
        return out

    def backtrace(self) -> list[Frame]:
        """instruction -> kernel -> ONNX node -> model, for the focused engine's current instruction."""
        engine, index = self._current()
        ins = self.index.instr(engine, index)
        origin = self.program.origins[ins.dbg] if 0 <= ins.dbg < len(self.program.origins) else None
        frames = [Frame(0, "instruction", f"{engine}:{index}  {ins}")]
        if origin is not None:
            frames.append(Frame(1, "kernel", f"{origin.op_type or 'hand-written'} kernel"))
            frames.append(Frame(2, "node", origin.name))
        model = self.program.meta.get("model", "") or self.program.meta.get("source", "")
        frames.append(Frame(len(frames), "model", model or "(program)"))
        return frames

    info_line = backtrace

    def _current(self) -> tuple[str, int]:
        v = self.machine.engine(self.focus)
        index = v.pc if v.pc < v.count else v.count - 1
        return self.focus, index

    def listing(self, loc: str | None = None, context: int = 5) -> list[ListingLine]:
        """Instructions around the focused engine's pc (or LOC), `current` marking the pc."""
        if loc:
            where = self.index.resolve(loc, self.focus)
            engine, center = sorted(where.instrs)[0]
        else:
            engine, center = self._current()
        return self._lines(engine, max(center - context, 0), center + context + 1)

    def disassemble(self) -> list[ListingLine]:
        """Every instruction of the focused engine's current node."""
        engine, index = self._current()
        stream = self.index.streams[engine]
        node = stream[index].dbg
        lo = hi = index
        while lo > 0 and stream[lo - 1].dbg == node:
            lo -= 1
        while hi + 1 < len(stream) and stream[hi + 1].dbg == node:
            hi += 1
        return self._lines(engine, lo, hi + 1)

    def _lines(self, engine: str, lo: int, hi: int) -> list[ListingLine]:
        stream = self.index.streams[engine]
        pc = self.machine.engine(engine).pc
        marks: dict[int, list[int]] = {}
        for bp in self.breakpoints.values():
            for e, i in bp.location.instrs:
                if e == engine:
                    marks.setdefault(i, []).append(bp.number)
        return [ListingLine(engine, i, str(stream[i]), self.index.node_name(stream[i].dbg), i == pc,
                            marks.get(i, [])) for i in range(lo, min(hi, len(stream)))]

    def dump(self, expr: str, path: str, force: bool = False) -> str:
        """Write the value of `expr` to a .npy file (atomically; an existing file needs force)."""
        value = self.print_(expr)
        buf = io.BytesIO()
        np.save(buf, np.asarray(value.array), allow_pickle=False)
        try:
            write_bytes_atomic(path, buf.getvalue(), force=force)
        except OutputError as exc:
            raise DebugError(str(exc)) from None
        return str(path)

    def info_hang(self) -> HangInfo:
        hung = self.last_stop is not None and self.last_stop.reason == "hang"
        return HangInfo(hung, self.machine.hang_report())

    def info_history(self) -> HistoryInfo:
        """What reverse execution holds: snapshots, their pages' bytes against the budget, the interval."""
        h = self.history
        return HistoryInfo(len(h.snaps), h.bytes, h.budget, h.interval, len(h.steps), self.point)

    def location(self, loc: str) -> Location:
        return self.index.resolve(loc, self.focus)


def _touches(ap, footprints) -> bool:
    lo, hi = ap.byte_extent()
    for fp in footprints:
        if fp.space != ap.space or hi <= fp.first or fp.end <= lo:
            continue
        if ap.space != "hbm" and not (ap.pstart < fp.pstart + fp.pcount and fp.pstart < ap.pstart + ap.pcount):
            continue
        if overlaps(ap, fp):
            return True
    return False


def _engine_order(engines) -> list[str]:
    return sorted(engines, key=ENGINES.index)


def _runs(blocks: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for b in blocks:
        if out and out[-1][-1] == b - 1:
            out[-1].append(b)
        else:
            out.append([b])
    return out


def _bisect_left(points: list[Point], p: Point) -> int:
    return bisect.bisect_left(points, p)
