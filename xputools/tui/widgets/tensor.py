"""The tensor/memory viewer: the last value printed, as a float table with a heat colour scale (or
hex of its bytes, `h`), the leading dimensions folded into rows, scrolled with the arrow keys;
`d` dumps it to .npy through the console's `dump` command."""
from __future__ import annotations

import re

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from xputools.debug.expressions import Value

HEAT = ("#3b4cc0", "#6788ee", "#9abbff", "#c9d7f0", "#edd1c2", "#f7a889", "#e26952", "#b40426")


def heat_style(x: float, lo: float, hi: float) -> str:
    """A colour from blue (lo) to red (hi); NaN/Inf in reverse video."""
    if not np.isfinite(x):
        return "bold reverse"
    t = 0.5 if hi <= lo else (x - lo) / (hi - lo)
    return "black on " + HEAT[min(len(HEAT) - 1, max(0, int(t * len(HEAT))))]


def dump_name(expr: str) -> str:
    """A file name for `expr`'s dump: its word characters."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", expr).strip("_.") or "value")[:60] + ".npy"


class TensorView(Widget, can_focus=True):
    BINDINGS = [
        Binding("d", "dump", "Dump .npy"), Binding("h", "hex", "Hex/float"),
        Binding("up", "scroll(-1, 0)", show=False), Binding("down", "scroll(1, 0)", show=False),
        Binding("left", "scroll(0, -1)", show=False), Binding("right", "scroll(0, 1)", show=False),
    ]

    class DumpRequested(Message):
        def __init__(self, expr: str, path: str):
            super().__init__()
            self.expr, self.path = expr, path

    def __init__(self, **kw):
        super().__init__(**kw)
        self.border_title = "tensor (p EXPR; d dump, h hex)"
        self.value: Value | None = None
        self.hex = False
        self.row = self.col = 0

    def show(self, value: Value) -> None:
        self.value, self.row, self.col = value, 0, 0
        self.refresh()

    def action_hex(self) -> None:
        self.hex = not self.hex
        self.refresh()

    def action_scroll(self, dr: int, dc: int) -> None:
        self.row, self.col = max(0, self.row + dr), max(0, self.col + dc)
        self.refresh()

    def action_dump(self) -> None:
        if self.value is not None:
            self.post_message(self.DumpRequested(self.value.target.text, dump_name(self.value.target.text)))

    def render(self) -> Text:
        if self.value is None:
            return Text("print a tensor or address (p EXPR) to see it here", style="dim")
        arr = np.asarray(self.value.array)
        head = Text(f"{self.value.target.text}: {'x'.join(map(str, arr.shape)) or 'scalar'} {arr.dtype}",
                    style="bold", no_wrap=True, overflow="ellipsis")
        if self.value.note and self.value.note not in "xduf":
            head.append(f"  ({self.value.note})", style="yellow")
        grid = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
        rows = max(1, self.size.height - 1)
        cell = 10 if self.hex else 9
        cols = max(1, (self.size.width - 6) // cell)
        self.row = min(self.row, max(0, grid.shape[0] - rows))
        self.col = min(self.col, max(0, grid.shape[1] - cols))
        window = grid[self.row:self.row + rows, self.col:self.col + cols]
        floats = grid.astype(np.float64) if grid.dtype.kind in "fiub" else None
        finite = floats[np.isfinite(floats)] if floats is not None else np.empty(0)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        out = Text(no_wrap=True, overflow="crop")
        out.append_text(head)
        for r, line in enumerate(window):
            out.append(f"\n{self.row + r:>5} ", style="dim")
            for x in line:
                if self.hex or floats is None:
                    raw = np.asarray(x).tobytes()[::-1].hex()
                    out.append(f"{raw:>{cell - 1}} ")
                else:
                    out.append(f"{float(x):>8.3g}", style=heat_style(float(x), lo, hi))
                    out.append(" ")
        return out
