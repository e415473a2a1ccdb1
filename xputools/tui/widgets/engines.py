"""One column per engine: the instruction stream around its pc with `=>` at the pc, breakpoint marks
in a gutter, BLOCKED engines highlighted with the semaphore they wait on. The DMA queues share one
column with a queue picker ([ and ])."""
from __future__ import annotations

import re

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from device_model.isa import engine_kind
from xputools.debug import Debugger


def engine_state(dbg: Debugger, engine: str) -> Text:
    """`pe 4/16 RUNNING`, BLOCKED engines in red with the semaphore they wait on."""
    v = dbg.machine.engine(engine)
    head = Text(f"{v.pc}/{v.count} ")
    if v.state == "BLOCKED" and v.blocked_on:
        s, want, now = v.blocked_on
        head.append(f"BLOCKED s{s}>={want} (now {now})", style="bold white on red")
    else:
        head.append(v.state + ("+" if v.in_flight else ""), style={"DONE": "dim", "RUNNING": "green"}.get(v.state, ""))
    return head


class MachineView(Widget):
    """A widget drawn from the machine's state. While a command runs in the worker thread the
    machine is changing under us: it then shows what it drew last (redrawn when the command stops)."""

    def __init__(self, dbg: Debugger, **kw):
        super().__init__(**kw)
        self.dbg = dbg
        self._last: Text | None = None

    def render(self) -> Text:
        view = getattr(self.app, "debug_view", None)
        if self._last is not None and view is not None and view.busy:
            return self._last
        self._last = self.draw()
        return self._last

    def draw(self) -> Text:
        raise NotImplementedError


class EngineStrip(MachineView):
    """One line per engine (state, pc, what it waits on): shown instead of the other engines'
    columns when the terminal is too narrow for a column each."""

    def draw(self) -> Text:
        entries = []
        for engine in self.dbg.index.streams:
            if engine_kind(engine) == "dma":
                continue
            entry = Text(f"{'*' if engine == self.dbg.focus else ' '}{engine:<5}", style="bold")
            entry.append_text(engine_state(self.dbg, engine))
            entries.append(entry)
        queues = [self.dbg.machine.engine(e) for e in self.dbg.index.streams if engine_kind(e) == "dma"]
        if queues:
            states: dict[str, int] = {}
            for v in queues:
                states[v.state] = states.get(v.state, 0) + 1
            entry = Text(f" dma×{len(queues)} ", style="bold")
            entry.append(" ".join(f"{n} {state}" for state, n in sorted(states.items())),
                         style="bold white on red" if "BLOCKED" in states else "")
            entries.append(entry)
        width = max(20, self.size.width // 2)
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, entry in enumerate(entries):
            entry.truncate(width - 1, pad=True)
            out.append_text(entry)
            out.append("\n" if i % 2 else " ")
        out.rstrip()
        return out


class EngineColumn(MachineView, can_focus=True):
    """The listing of one engine (or of the DMA queue picked among `engines`)."""

    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False), Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "move(-10)", show=False), Binding("pagedown", "move(10)", show=False),
        Binding("left_square_bracket", "queue(-1)", "Prev queue", show=False),
        Binding("right_square_bracket", "queue(1)", "Next queue", show=False),
    ]
    cursor: reactive[int] = reactive(0)

    class Focused(Message):
        def __init__(self, engine: str):
            super().__init__()
            self.engine = engine

    def __init__(self, dbg: Debugger, engines: list[str], **kw):
        super().__init__(dbg, **kw)
        self.engines = engines
        self.pick = 0
        self._quiet = False
        self.follow_pc()

    @property
    def engine(self) -> str:
        return self.engines[self.pick]

    @property
    def count(self) -> int:
        return len(self.dbg.index.streams[self.engine])

    def follow_pc(self) -> None:
        view = self.dbg.machine.engine(self.engine)
        self.cursor = min(view.pc, self.count - 1)

    def action_move(self, delta: int) -> None:
        self.cursor = max(0, min(self.count - 1, self.cursor + delta))

    def action_queue(self, delta: int) -> None:
        if len(self.engines) > 1:
            self.pick = (self.pick + delta) % len(self.engines)
            self.follow_pc()
            self.post_message(self.Focused(self.engine))
            self.refresh()

    def focus_quietly(self) -> None:
        """Take the keyboard focus without making this engine the debugger's focus (at start the
        two agree already, and the startup commands may move the debugger's focus meanwhile)."""
        self._quiet = True
        self.focus()

    def on_focus(self) -> None:
        if self._quiet:
            self._quiet = False
            return
        self.post_message(self.Focused(self.engine))

    def on_mount(self) -> None:
        self.set_class(self.dbg.focus in self.engines, "-focus-engine")

    def refresh(self, *args, **kw):
        if self.is_mounted:
            self.set_class(self.dbg.focus in self.engines, "-focus-engine")
        return super().refresh(*args, **kw)

    def draw(self) -> Text:
        dbg, engine = self.dbg, self.engine
        width = max(self.size.width, 10)
        height = max(self.size.height, 3)
        out = Text(no_wrap=True, overflow="crop")
        head = self._header()
        head.truncate(width)
        out.append_text(head)
        out.append("\n")
        rows = height - 1
        lo = max(0, min(self.cursor - rows // 2, self.count - rows))
        stop = dbg.last_stop
        fault = (stop.engine, stop.index) if stop is not None and stop.reason == "fault" else None
        # listing(loc, context) centres on loc: ask for exactly the visible window
        lines = dbg.listing(f"{engine}:{min(lo + rows // 2, self.count - 1)}", context=rows // 2 + 1)
        shown = [x for x in lines if lo <= x.index < lo + rows]
        for x in shown:
            mark = "!!" if fault == (engine, x.index) else ("=>" if x.current else "  ")
            gutter = "●" if x.breakpoints else " "
            style = "bold red" if mark == "!!" else ("bold yellow" if x.current else "")
            if x.index == self.cursor and self.has_focus:
                style += " reverse"
            text = re.sub(rf"^((?:\S+: )?){re.escape(engine)}\s+", r"\1", x.text)  # the column names the engine
            line = Text(f"{mark}{gutter}{x.index:>4} {text}", style=style.strip())
            if x.breakpoints:
                line.stylize("bold red", 2, 3)
            line.truncate(width)
            out.append_text(line)
            out.append("\n")
        out.rstrip()
        return out

    def _header(self) -> Text:
        picker = f"[{self.pick + 1}/{len(self.engines)}]" if len(self.engines) > 1 else ""
        focus = "*" if self.dbg.focus == self.engine else " "
        head = Text(f"{focus}{self.engine}{picker} ", style="bold")
        head.append_text(engine_state(self.dbg, self.engine))
        return head
