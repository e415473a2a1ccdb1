"""Breakpoints, watchpoints and what a stop reports (plain data: the console and the TUI format it)."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from device_model.access import Footprint

from .expressions import Target
from .locations import Location

Point = tuple[int, int]  # (instructions retired, issues since the last completion): a place in the run


@dataclass(kw_only=True)
class StopPoint:
    """What breakpoints and watchpoints share: enabling, a condition, an ignore count, hit count
    and the commands run when it stops the program."""

    enabled: bool = True
    condition: str = ""
    cond_tree: ast.Expression | None = None
    ignore: int = 0
    hits: int = 0
    commands: list[str] = field(default_factory=list)


@dataclass
class Breakpoint(StopPoint):
    number: int
    location: Location
    temporary: bool = False

    @property
    def kind(self) -> str:
        return "tbreak" if self.temporary else "break"


@dataclass
class Watchpoint(StopPoint):
    number: int
    kind: str  # "watch" (writes), "rwatch" (reads), "awatch" (both)
    target: Target
    footprints: list[Footprint]

    def wants(self, access_kind: str) -> bool:
        return self.kind == "awatch" or (access_kind == "w") == (self.kind == "watch")


@dataclass
class Hit:
    """One breakpoint or watchpoint firing: where, and for watchpoints the value before and after."""

    number: int
    kind: str  # "breakpoint" or "watchpoint"
    engine: str
    index: int
    node: str
    access: str = ""  # watchpoints: "r" / "w" / "signal"
    expr: str = ""
    old: object = None
    new: object = None


@dataclass
class Stop:
    """Where a run-control command left the program."""

    reason: str  # breakpoint, watchpoint, step, exited, fault, hang, blocked, start, killed, reverse-start
    point: Point
    time: int
    engine: str = ""  # the instruction concerned (about to issue, just retired, faulted)
    index: int = -1
    phase: str = ""  # "issue" (not run yet) or "complete" (just retired)
    instr: str = ""
    node: str = ""
    hits: list[Hit] = field(default_factory=list)
    message: str = ""
    report: object = None  # HangReport for a hang or a blocked step
    displays: list = field(default_factory=list)  # (number, expression, Value or error text)
    commands: list[str] = field(default_factory=list)  # the `commands` of the points that stopped it
