"""The per-engine timeline drawn in the terminal: one lane per engine, each cell the instruction
opcode that covers most of its cycles (a letter, coloured by layer), zoom (+ -) and pan (< >) with
keys, a selected lane (Up/Down) and instruction (, .) whose details show below the lanes."""
from __future__ import annotations

import bisect
import zlib

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue", "bright_red")
GLYPH = {"matmul": "M", "dma_copy": "D", "activate": "A", "tensor_tensor": "T", "tensor_scalar": "S",
         "reduce": "R", "preduce": "R", "host_call": "H"}


def layer_colour(name: str) -> str:
    """A stable colour per layer name (crc32: the same in every run, unlike hash())."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


class Timeline(Widget, can_focus=True):
    BINDINGS = [
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in"), Binding("minus", "zoom(2)", "Zoom out"),
        Binding("less_than_sign,left", "pan(-1)", "Pan left", show=False),
        Binding("greater_than_sign,right", "pan(1)", "Pan right", show=False),
        Binding("up", "lane(-1)", show=False), Binding("down", "lane(1)", show=False),
        Binding("comma", "step(-1)", "Prev instr", show=False), Binding("full_stop", "step(1)", "Next instr",
                                                                        show=False),
        Binding("0", "reset", "Fit", show=False),
    ]

    class Selected(Message):
        def __init__(self, instr: dict | None):
            super().__init__()
            self.instr = instr

    def __init__(self, instrs: list[dict], engines: list[str], total: int, **kw):
        super().__init__(**kw)
        self.lanes = {e: [i for i in instrs if i["engine"] == e] for e in engines}
        # an engine runs one instruction at a time: its starts are sorted, so the window is a bisect away
        self._starts = {e: [i["start_cycle"] for i in lane] for e, lane in self.lanes.items()}
        self.engines = [e for e in engines if self.lanes[e]]
        self.total = max(1, total)
        self.lo, self.span = 0, self.total
        self.lane, self.pick = 0, 0
        self.border_title = "timeline (+/- zoom, </> pan, ,/. instr)"

    @property
    def selected(self) -> dict | None:
        if not self.engines:
            return None
        lane = self.lanes[self.engines[self.lane]]
        return lane[min(self.pick, len(lane) - 1)] if lane else None

    def action_zoom(self, factor: float) -> None:
        centre = self.lo + self.span / 2
        sel = self.selected
        if sel is not None and factor < 1:
            centre = (sel["start_cycle"] + sel["end_cycle"]) / 2
        self.span = int(max(16, min(self.total, self.span * factor)))
        self.lo = int(max(0, min(self.total - self.span, centre - self.span / 2)))
        self.refresh()

    def action_pan(self, direction: int) -> None:
        self.lo = int(max(0, min(self.total - self.span, self.lo + direction * self.span / 4)))
        self.refresh()

    def action_reset(self) -> None:
        self.lo, self.span = 0, self.total
        self.refresh()

    def action_lane(self, delta: int) -> None:
        if self.engines:
            old = self.selected
            self.lane = (self.lane + delta) % len(self.engines)
            lane = self.lanes[self.engines[self.lane]]
            at = old["start_cycle"] if old else self.lo
            self.pick = next((k for k, i in enumerate(lane) if i["end_cycle"] > at), len(lane) - 1)
            self._selected()

    def action_step(self, delta: int) -> None:
        if self.engines:
            lane = self.lanes[self.engines[self.lane]]
            self.pick = max(0, min(len(lane) - 1, self.pick + delta))
            sel = self.selected
            if sel["start_cycle"] < self.lo or sel["end_cycle"] > self.lo + self.span:
                self.lo = int(max(0, min(self.total - self.span, sel["start_cycle"] - self.span / 4)))
            self._selected()

    def _selected(self) -> None:
        self.refresh()
        self.post_message(self.Selected(self.selected))

    def render(self) -> Text:
        label = 7
        width = max(8, self.size.width - label)
        per = self.span / width
        out = Text(no_wrap=True, overflow="crop")
        out.append(f"{'cycle':<{label}}{self.lo:<{width // 2}}{self.lo + self.span:>{width - width // 2}}\n",
                   style="dim")
        sel = self.selected
        for n, engine in enumerate(self.engines):
            cells: list[tuple[str, str, float]] = [(" ", "", 0.0)] * width
            lane = self.lanes[engine]
            first = max(0, bisect.bisect_right(self._starts[engine], self.lo) - 1)
            for ins in lane[first:bisect.bisect_left(self._starts[engine], self.lo + self.span)]:
                s, e = ins["start_cycle"], ins["end_cycle"]
                if e <= self.lo:
                    continue
                c0 = int(max(0, (s - self.lo) / per))
                c1 = int(min(width - 1, max(c0, (e - 1 - self.lo) / per)))
                for c in range(c0, c1 + 1):
                    cover = min(e, self.lo + (c + 1) * per) - max(s, self.lo + c * per)
                    if cover > cells[c][2]:
                        style = layer_colour(ins["layer_name"]) + (" reverse" if ins is sel else "")
                        cells[c] = (GLYPH.get(ins["op"], ins["op"][:1].upper() or "?"), style, cover)
            out.append(f"{engine:<{label - 1}} ", style="bold reverse" if n == self.lane and self.has_focus
                       else "bold")
            for glyph, style, _ in cells:
                out.append(glyph, style=style)
            out.append("\n")
        out.rstrip()
        return out
