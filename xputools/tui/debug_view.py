"""The Debug screen: a view over `xputools.debug.Debugger`. Every action is a console command run
through `xputools.debug.commands.Commands` (so the TUI reaches nothing the console cannot), in a
worker thread so long runs keep the UI alive and Ctrl+C (Debugger.interrupt) stops them."""
from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Static

from device_model.isa import ENGINES, engine_kind
from xputools.debug import Debugger
from xputools.debug.commands import ALIASES, HELP, Commands, Result
from xputools.debug.expressions import Value
from xputools.debug.points import Stop
from xputools.debug.render import render

from .widgets.console import Console
from .widgets.engines import EngineColumn, EngineStrip
from .widgets.nodes import NodeTree
from .widgets.state import SemaphorePane, WatchPane
from .widgets.tensor import TensorView

INFO_WORDS = ("engines", "sems", "queues", "memory", "line", "breakpoints", "display", "hang")


class DebugView(Vertical):
    """Engine columns, side panes (nodes, semaphores, watches), tensor viewer and console."""

    busy: reactive[bool] = reactive(False)

    def __init__(self, dbg: Debugger, startup: list[str] | None = None, **kw):
        super().__init__(**kw)
        self.dbg = dbg
        self.commands = Commands(dbg)
        self.startup = list(startup or [])
        self.columns: list[EngineColumn] = []
        self._pending: list[str] = []

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        streams = self.dbg.index.streams
        compute = [e for e in ENGINES if e in streams and engine_kind(e) != "dma"]
        queues = [e for e in ENGINES if e in streams and engine_kind(e) == "dma"]
        groups = [[e] for e in compute] + ([queues] if queues else [])
        with Horizontal(id="debug-top"):
            with Vertical(id="engines-area"):
                yield EngineStrip(self.dbg, id="strip")
                with Horizontal(id="engines"):
                    for engines in groups:
                        col = EngineColumn(self.dbg, engines, classes="engine")
                        self.columns.append(col)
                        yield col
            with Vertical(id="side"):
                yield NodeTree(self.dbg, id="nodes")
                yield SemaphorePane(self.dbg, id="sems")
                yield WatchPane(self.dbg, id="watches")
        yield Static("", id="status")
        with Horizontal(id="debug-bottom"):
            yield Console(self.words, id="console")
            yield TensorView(id="tensor")

    def on_mount(self) -> None:
        self._focused_column().focus_quietly()
        self.refresh_panes()
        lines = self.startup or ["start"]
        self.run_commands(lines)

    # ---- vocabulary for completion and the command palette ----------------------------------
    def words(self) -> list[str]:
        verbs = sorted(set(HELP) | set(ALIASES) | {"x", "reverse-finish"})
        engines = list(self.dbg.index.streams)
        tensors = [t.name for t in self.dbg.program.taps] + [t.name for t in self.dbg.program.tensors]
        return verbs + list(INFO_WORDS) + engines + ["node", "op"] + self.node_names() + tensors

    def node_names(self) -> list[str]:
        return self.query_one(NodeTree).names

    # ---- running commands --------------------------------------------------------------------
    def run_commands(self, lines: list[str]) -> None:
        """Run command lines one after the other (queued while a command runs)."""
        self._pending.extend(lines)
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self._pending:
            line = self._pending.pop(0)
            self.query_one(Console).write(f"(xpu) {line}", style="bold")
            self.busy = True
            self._execute(line)

    @work(thread=True, exclusive=False, group="debug", exit_on_error=False)
    def _execute(self, line: str) -> None:
        try:
            result = self.commands.execute(line)
        except Exception as exc:  # the app never shows a traceback: a core bug is one console line too
            result = Result(line.split()[0], line, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self._finished, result)

    def _finished(self, result: Result | None) -> None:
        self.busy = False
        console = self.query_one(Console)
        if result is not None:
            for text in render(result):
                console.write(text, style="red" if text.startswith("error:") else "")
            if isinstance(result.data, Value):
                self.query_one(TensorView).show(result.data)
            if isinstance(result.data, Stop):
                self._after_stop(result.data)
        self._follow_focus()
        self.refresh_panes()
        self._next()

    def _follow_focus(self) -> None:
        """Show the focused engine in its column (the DMA column picks that queue)."""
        for col in self.columns:
            if self.dbg.focus in col.engines and col.engine != self.dbg.focus:
                col.pick = col.engines.index(self.dbg.focus)
                col.follow_pc()

    def _after_stop(self, stop: Stop) -> None:
        target = stop.engine if stop.reason == "fault" and stop.engine in self.dbg.index.streams else ""
        for col in self.columns:
            col.follow_pc()
            if target and target in col.engines:
                col.pick = col.engines.index(target)
                col.cursor = max(stop.index, 0)
                self.dbg.set_focus(target)
        if stop.node:
            self.query_one(NodeTree).show_node(stop.node)

    def watch_busy(self, busy: bool) -> None:
        self._status()

    def _status(self) -> None:
        if not self.is_mounted:
            return
        status = self.query_one("#status", Static)
        if self.busy:
            status.update("[b reverse] RUNNING [/] Ctrl+C interrupts")
            return
        stop = self.dbg.last_stop
        where = ""
        if stop is not None:
            where = f"{stop.reason}"
            if stop.engine and stop.index >= 0:
                where += f" at {stop.engine}:{stop.index}" + (f" [{stop.node}]" if stop.node else "")
            where += f"  cycle {stop.time}  retired {stop.point[0]}"
        status.update(f"focus [b]{self.dbg.focus}[/]  {where}  [dim]F5 cont  F10 next  F11 stepi  ? keys[/]")

    def refresh_panes(self) -> None:
        if self.busy:
            return  # the machine is running in the worker: read it once it stops
        for col in self.columns:
            col.refresh()
        self.query_one(EngineStrip).refresh()
        self.query_one(SemaphorePane).update_view()
        self.query_one(WatchPane).update_view()
        self._status()

    # ---- events from the widgets --------------------------------------------------------------
    def on_console_submitted(self, event: Console.Submitted) -> None:
        self.key_command(event.line)

    def on_engine_column_focused(self, event: EngineColumn.Focused) -> None:
        if not self.busy and self.dbg.focus != event.engine:
            self.dbg.set_focus(event.engine)
            self.refresh_panes()

    def on_node_tree_chosen(self, event: NodeTree.Chosen) -> None:
        self.key_command(f"break node {event.node}")

    def on_tensor_view_dump_requested(self, event: TensorView.DumpRequested) -> None:
        self.key_command(f"dump {event.expr} {event.path}")

    # ---- key actions (bound in the app) -----------------------------------------------------
    def key_command(self, line: str) -> None:
        """A key's command: refused while another runs (keys pressed during a long run must not
        pile up behind it)."""
        if self.busy:
            self.query_one(Console).write(f"busy: {line} not run (Ctrl+C interrupts the running command)",
                                          style="red")
            return
        self.run_commands([line])

    def resume(self) -> None:
        if self.busy:
            return self.key_command("continue")
        m = self.dbg.machine
        live = self.dbg.running and m.fault is None and not m.done
        self.key_command("continue" if live else "run")

    def toggle_breakpoint(self) -> None:
        """F9: a breakpoint at the selected instruction (engine column) or node (node tree); again removes it."""
        focused = self.app.focused
        if isinstance(focused, NodeTree):
            node = focused.cursor_node
            if node is None or not node.data:
                return
            loc, text = None, f"node {node.data}"
        else:
            col = focused if isinstance(focused, EngineColumn) else self._focused_column()
            loc, text = (col.engine, col.cursor), f"{col.engine}:{col.cursor}"
        for bp in self.dbg.breakpoints.values():
            if bp.location.text == text or (loc is not None and bp.location.kind == "instr"
                                            and bp.location.instrs == frozenset([loc])):
                self.key_command(f"delete {bp.number}")
                return
        self.key_command(f"break {text}")

    def cycle_engine(self, step: int) -> None:
        """e / E: focus the next / previous engine (the console's `engine NAME`)."""
        engines = list(self.dbg.index.streams)
        nxt = engines[(engines.index(self.dbg.focus) + step) % len(engines)]
        self.key_command(f"engine {nxt}")

    def _focused_column(self) -> EngineColumn:
        return next((c for c in self.columns if self.dbg.focus in c.engines), self.columns[0])

    def interrupt(self) -> None:
        if self.busy:
            self.dbg.interrupt()
            self.query_one(Console).write("^C interrupt requested", style="yellow")

    def focus_console(self) -> None:
        self.query_one(Console).input.focus()
