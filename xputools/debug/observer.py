"""The debugger's machine observer: checks breakpoints at issue and watchpoints at each access,
asks the machine to stop, and keeps what reverse execution needs (the retire log, the position)."""
from __future__ import annotations

from collections.abc import Callable

from device_model.events import InstrEvent, MemoryAccess, Observer, SemaphoreEvent
from device_model.isa import ENGINE_INDEX
from device_model.machine import Machine

from .expressions import eval_condition, read_target
from .locations import ProgramIndex
from .points import Breakpoint, Hit, Point, Watchpoint

RUN, REPLAY, SCAN = "run", "replay", "scan"


class DebugObserver(Observer):
    def __init__(self, machine: Machine, index: ProgramIndex, retired: Callable[[str, int], bool]):
        self.machine = machine
        self.index = index
        self._retired = retired
        self.k = 0  # issues reported since the last completion
        self.retire_log: list[int] = []  # engine id of every completion, in order
        self.entered: set[int] = set()  # nodes with an instruction issued
        self.mode = RUN
        self.target: Point | None = None  # replay / scan: stop here
        self.break_at: dict[tuple[str, int], list[Breakpoint]] = {}
        self.watch_at: dict[tuple[str, int], list[tuple[Watchpoint, str]]] = {}
        self.sem_watch: dict[int, list[Watchpoint]] = {}
        self.stepping = False  # breakpoints do not stop a stepi (its own stop comes next)
        self.issue_until: Callable[[InstrEvent], bool] | None = None  # extra stop before an issue
        self.complete_until: Callable[[InstrEvent], bool] | None = None  # extra stop after a completion
        self.snapshot_at = 1 << 62  # request a stop here so the debugger can snapshot
        self.reasons: set[str] = set()
        self.hits: list[Hit] = []
        self.scan_hits: list[tuple[Point, list[Hit]]] = []
        self.scan_issue: Callable[[InstrEvent], bool] | None = None
        self._pending: list[tuple[Watchpoint, str, object]] = []
        self._accessed: tuple[str, int] | None = None
        self.interrupted: Callable[[], bool] = lambda: False  # the debugger's thread-safe Ctrl+C flag

    @property
    def point(self) -> Point:
        return (len(self.retire_log), self.k)

    def reset_stop(self) -> None:
        self.reasons = set()
        self.hits = []

    # ---- rewinding with the machine --------------------------------------------------------
    def save_state(self):
        return (len(self.retire_log), self.k, frozenset(self.entered))

    def restore_state(self, state) -> None:
        n, self.k, entered = state
        del self.retire_log[n:]
        self.entered = set(entered)
        self._pending, self._accessed = [], None

    # ---- hooks ---------------------------------------------------------------------------------
    def _stop(self, reason: str) -> None:
        self.reasons.add(reason)
        self.machine.request_stop(reason)

    def on_issue(self, ev: InstrEvent) -> None:
        self.k += 1
        dbg = ev.instr.dbg
        first_of_node = dbg not in self.entered
        if first_of_node:
            self.entered.add(dbg)
        if self.mode == REPLAY:
            if self.target == (len(self.retire_log), self.k):
                self._stop("target")
            return
        bps = self.break_at.get((ev.engine, ev.index))
        hits = [bp for bp in bps if self._fires(bp, ev, first_of_node)] if bps else []
        if self.mode == SCAN:
            if hits or (self.scan_issue is not None and self.scan_issue(ev)):
                self.scan_hits.append((self.point, [self._bp_hit(bp, ev) for bp in hits]))
            if self.target == self.point:
                self._stop("target")
            return
        if self.stepping:
            return
        for bp in hits:
            if bp.ignore > 0:
                bp.ignore -= 1
                continue
            bp.hits += 1
            self.hits.append(self._bp_hit(bp, ev))
        if self.hits:
            self._stop("breakpoint")
        if self.issue_until is not None and self.issue_until(ev):
            self._stop("until")

    def _fires(self, bp: Breakpoint, ev: InstrEvent, first_of_node: bool) -> bool:
        if not bp.enabled:
            return False
        if bp.location.nodes and not (first_of_node and ev.instr.dbg in bp.location.nodes):
            return False  # a node breakpoint stops once, when the node's first instruction issues
        if bp.cond_tree is not None:
            names = {"time": self.machine.time, "index": ev.index, "engine": ev.engine, "hits": bp.hits}
            return eval_condition(bp.cond_tree, names, self.machine.sem)
        return True

    def _bp_hit(self, bp: Breakpoint, ev: InstrEvent) -> Hit:
        return Hit(bp.number, "breakpoint", ev.engine, ev.index, self.index.node_name(ev.instr.dbg))

    def on_memory_access(self, acc: MemoryAccess) -> None:
        if self.mode == REPLAY:
            return
        key = (acc.engine, acc.index)
        if key == self._accessed:
            return
        wps = self.watch_at.get(key)
        if not wps:
            return
        self._accessed = key
        for wp, kind in wps:  # (the instructions whose operands overlap were found when it was set)
            if wp.enabled:
                self._pending.append((wp, kind, self._value(wp)))

    def _value(self, wp: Watchpoint):
        return read_target(self.machine, wp.target, self._retired).array

    def on_semaphore(self, ev: SemaphoreEvent) -> None:
        if self.mode == REPLAY:
            return
        for wp in self.sem_watch.get(ev.sem, ()):
            if wp.enabled:
                self._pending.append((wp, "signal", (ev.old, ev.new)))

    def on_complete(self, ev: InstrEvent) -> None:
        self.retire_log.append(ENGINE_INDEX[ev.engine])
        self.k = 0
        self._accessed = None
        if self.mode == REPLAY:
            if self.target == (len(self.retire_log), 0):
                self._stop("target")
            return
        hits = []
        if self._pending:
            node = self.index.node_name(ev.instr.dbg)
            for wp, kind, old in self._pending:
                if kind == "signal":
                    old, new = old
                else:
                    new = self._value(wp) if kind == "w" else None
                if not self._condition(wp, ev) or (self.mode == RUN and not self._counts(wp)):
                    continue
                hits.append(Hit(wp.number, "watchpoint", ev.engine, ev.index, node, kind, wp.target.text, old, new))
            self._pending = []
        if self.mode == SCAN:
            if hits:
                self.scan_hits.append((self.point, hits))
            if self.target == self.point:
                self._stop("target")
            return
        if hits:
            self.hits.extend(hits)
            self._stop("watchpoint")
        if self.complete_until is not None and self.complete_until(ev):
            self._stop("until")
        if len(self.retire_log) >= self.snapshot_at:
            self._stop("snapshot")
        if self.interrupted():
            self._stop("interrupt")

    def _condition(self, wp: Watchpoint, ev: InstrEvent) -> bool:
        if wp.cond_tree is None:
            return True
        names = {"time": self.machine.time, "index": ev.index, "engine": ev.engine, "hits": wp.hits}
        return eval_condition(wp.cond_tree, names, self.machine.sem)

    def _counts(self, wp: Watchpoint) -> bool:
        if wp.ignore > 0:
            wp.ignore -= 1
            return False
        wp.hits += 1
        return True
