"""Side panes of the Debug screen: semaphores (value, who signals, who waits) and watches/displays
(values that changed since the last stop highlighted)."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from xputools.debug import Debugger
from xputools.debug.render import _same, value_lines


class SemaphorePane(Static, can_focus=True):
    """`info sems`, with the engines blocked on each semaphore in red."""

    def __init__(self, dbg: Debugger, **kw):
        super().__init__(**kw)
        self.dbg = dbg
        self.border_title = "semaphores"

    def update_view(self) -> None:
        blocked: dict[int, list[str]] = {}
        for e in self.dbg.info_engines():
            if e.view.state == "BLOCKED" and e.view.blocked_on:
                blocked.setdefault(e.view.blocked_on[0], []).append(e.view.name)
        out = Text(no_wrap=True, overflow="ellipsis")
        for s in self.dbg.info_sems():
            out.append(f"s{s.sem:<3}", style="bold")
            out.append(f"{s.value:>4} ")
            out.append(f"{','.join(s.signalled_by) or '-'} -> {','.join(s.waited_by) or '-'}")
            if s.sem in blocked:
                out.append(f" BLOCKED: {','.join(blocked[s.sem])}", style="bold white on red")
            out.append("\n")
        out.rstrip()
        self.update(out if out.plain else Text("(no semaphores used)", style="dim"))


def _summary(value) -> str:
    if isinstance(value, str):
        return value
    return value_lines(value)[0]


class WatchPane(Static, can_focus=True):
    """Watchpoints with their hit counts and displays with a one-line summary of their value;
    a display whose value changed since the previous stop is highlighted."""

    def __init__(self, dbg: Debugger, **kw):
        super().__init__(**kw)
        self.dbg = dbg
        self.border_title = "watches / displays"
        self._previous: dict[int, object] = {}
        self.changed: set[int] = set()  # displays whose value changed at the last stop

    def update_view(self) -> None:
        out = Text(no_wrap=True, overflow="ellipsis")
        for wp in self.dbg.watchpoints.values():
            out.append(f"w{wp.number} {wp.kind} {wp.target.text}  hits {wp.hits}\n",
                       style="" if wp.enabled else "dim")
        current: dict[int, object] = {}
        self.changed = set()
        for n, _expr, value in self.dbg.displays():
            arr = None if isinstance(value, str) else value.array
            current[n] = arr
            if n in self._previous and arr is not None and not _same(self._previous[n], arr):
                self.changed.add(n)
            out.append(f"{n}: {_summary(value)}\n", style="bold black on yellow" if n in self.changed else "")
        self._previous = current
        out.rstrip()
        self.update(out if out.plain else Text("(display EXPR / watch EXPR in the console)", style="dim"))
