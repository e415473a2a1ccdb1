"""gdb-style command lines -> Debugger method calls. `Commands.execute(line)` returns a `Result`
(the method's data, or the one-line error); formatting is the console's job (render.py)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from device_model.memory import AccessError

from ..errors import UserError
from .core import Debugger
from .errors import DebugError
from .locations import LOC_HELP
from .points import Stop

HELP = {
    "run": "run — restart the program and run to the first stop (also r)",
    "start": "start — restart the program and stop before anything runs",
    "continue": "continue [N] — resume; N ignores the breakpoint stopped at N-1 more times (also c)",
    "stepi": "stepi [N | -all] — the focused engine retires N instructions, others frozen; -all: any engine (si)",
    "tick": "tick N — all engines run N cycles",
    "next": "next — run to the focused engine's next ONNX node (also step, n, s)",
    "finish": "finish — run until the current node has retired on every engine",
    "until": "until LOC — run until LOC is about to issue (also advance)",
    "kill": "kill — stop the program (run or start restarts it)",
    "reverse-stepi": "reverse-stepi [N | -all] — undo the focused engine's last N instructions (rsi)",
    "reverse-continue": "reverse-continue — back to the previous breakpoint or watchpoint hit (rc)",
    "reverse-finish": "reverse-finish — back to where the focused engine started its current node",
    "engine": "engine [pe|act|dve|pool|dmaN|host] — show or set the focused engine",
    "break": f"break LOC [if COND] — {LOC_HELP} (also b, tbreak)",
    "watch": "watch|rwatch|awatch EXPR [if COND] — EXPR: sbuf[0:+128]@0x0{1:256}:f32, a tensor name, or sN",
    "delete": "delete [N...] — delete breakpoints/watchpoints (all if none given); disable/enable likewise",
    "condition": "condition N [COND] — set or clear a stop condition (sN, time, index, engine, hits)",
    "ignore": "ignore N COUNT — skip the next COUNT hits of N",
    "commands": "commands N — then one command per line, ending with `end` (or: commands N: cmd1; cmd2)",
    "print": "print EXPR — a tensor[slices], an access pattern or sN (also p; display EXPR each stop)",
    "x": "x/NFU ADDR — examine memory: N units, F in x d u f, U in b h w g; ADDR sbuf[P:+N]@OFF or hbm@OFF",
    "dump": "dump EXPR FILE.npy [--force] — write a value to a .npy file",
    "info": "info engines|sems|queues|memory|line|breakpoints|display|hang|history",
    "bt": "bt — instruction -> kernel -> ONNX node -> model (also backtrace, where, info line)",
    "list": "list [LOC] — instructions around the pc with => (also l); disassemble: the current node",
}
ALIASES = {"r": "run", "c": "continue", "cont": "continue", "si": "stepi", "n": "next", "s": "next", "step": "next",
           "u": "until", "advance": "until", "rsi": "reverse-stepi", "rc": "reverse-continue", "b": "break",
           "tbreak": "break", "d": "delete", "disable": "delete", "enable": "delete", "p": "print",
           "display": "print", "undisplay": "print", "rwatch": "watch", "awatch": "watch", "backtrace": "bt",
           "where": "bt", "l": "list", "disassemble": "list", "output": "print"}


@dataclass
class Result:
    command: str  # canonical verb
    line: str
    ok: bool = True
    data: object = None
    error: str = ""
    followups: list["Result"] = field(default_factory=list)  # breakpoint `commands` run after a stop


class Commands:
    def __init__(self, debugger: Debugger):
        self.dbg = debugger
        self._collecting: tuple[int, list[str]] | None = None  # inside `commands N` ... `end`

    @property
    def collecting(self) -> bool:
        return self._collecting is not None

    def execute(self, line: str, depth: int = 0) -> Result | None:
        """Run one command line; None for blank lines, comments and lines of a `commands` block."""
        text = line.strip()
        if self._collecting is not None:
            number, lines = self._collecting
            if text == "end":
                self._collecting = None
                return Result("commands", line, data=self.dbg.commands(number, lines))
            lines.append(text)
            return None
        if not text or text.startswith("#"):
            return None
        verb, _, rest = text.partition(" ")
        fmt = ""
        if verb.startswith("x/"):
            verb, fmt = "x", verb[2:]
        canonical = ALIASES.get(verb, verb)
        handler = getattr(self, "_cmd_" + canonical.replace("-", "_"), None)
        if handler is None:
            return Result(verb, line, ok=False, error=f"unknown command {verb!r}; try help")
        try:
            data = handler(rest.strip(), verb, fmt)
        except (UserError, AccessError, ValueError, KeyError, IndexError) as exc:  # (IsaError, AsmError: ValueError)
            msg = str(exc).strip("'\"") or type(exc).__name__
            return Result(canonical, line, ok=False, error=f"{msg}  (usage: {HELP.get(canonical, canonical)})")
        result = Result(canonical, line, data=data)
        if isinstance(data, Stop):
            if data.reason == "fault" or data.reason == "hang":
                result.ok = False
                result.error = data.message
            if depth < 4:
                for cmd in data.commands:
                    sub = self.execute(cmd, depth + 1)
                    if sub is not None:
                        result.followups.append(sub)
        return result

    # ---- run control -----------------------------------------------------------------------
    def _cmd_run(self, rest, verb, fmt):
        return self.dbg.run()

    def _cmd_start(self, rest, verb, fmt):
        return self.dbg.start()

    def _cmd_kill(self, rest, verb, fmt):
        return self.dbg.kill()

    def _cmd_continue(self, rest, verb, fmt):
        return self.dbg.cont(_count(rest))

    def _cmd_stepi(self, rest, verb, fmt):
        if rest.startswith("-all"):
            return self.dbg.stepi(_count(rest[4:].strip()), all_engines=True)
        return self.dbg.stepi(_count(rest))

    def _cmd_tick(self, rest, verb, fmt):
        if not rest:
            raise DebugError("tick needs a number of cycles")
        return self.dbg.tick(_count(rest))

    def _cmd_next(self, rest, verb, fmt):
        return self.dbg.next()

    def _cmd_finish(self, rest, verb, fmt):
        return self.dbg.finish()

    def _cmd_until(self, rest, verb, fmt):
        return self.dbg.until(rest)

    def _cmd_reverse_stepi(self, rest, verb, fmt):
        if rest.startswith("-all"):
            return self.dbg.reverse_stepi(_count(rest[4:].strip()), all_engines=True)
        return self.dbg.reverse_stepi(_count(rest))

    def _cmd_reverse_continue(self, rest, verb, fmt):
        return self.dbg.reverse_continue()

    def _cmd_reverse_finish(self, rest, verb, fmt):
        return self.dbg.reverse_finish()

    # ---- focus and breakpoints ---------------------------------------------------------------
    def _cmd_engine(self, rest, verb, fmt):
        if not rest:
            return self.dbg._engine_info(self.dbg.focus)
        return self.dbg.set_focus(rest)

    def _cmd_break(self, rest, verb, fmt):
        loc, cond = _split_if(rest)
        return self.dbg.break_(loc, cond, temporary=(verb == "tbreak"))

    def _cmd_watch(self, rest, verb, fmt):
        expr, cond = _split_if(rest)
        return self.dbg.watch(expr, {"rwatch": "rwatch", "awatch": "awatch"}.get(verb, "watch"), cond)

    def _cmd_delete(self, rest, verb, fmt):
        numbers = _numbers(rest)
        fn = {"disable": self.dbg.disable, "enable": self.dbg.enable}.get(verb, self.dbg.delete)
        return fn(numbers)

    def _cmd_condition(self, rest, verb, fmt):
        number, _, cond = rest.partition(" ")
        return self.dbg.condition(_int(number), cond)

    def _cmd_ignore(self, rest, verb, fmt):
        parts = rest.split()
        if len(parts) != 2:
            raise DebugError("ignore needs a number and a count")
        return self.dbg.ignore(_int(parts[0]), _int(parts[1]))

    def _cmd_commands(self, rest, verb, fmt):
        head, colon, inline = rest.partition(":")
        number = _int(head.strip()) if head.strip() else max(list(self.dbg.breakpoints) + list(
            self.dbg.watchpoints) or [0])
        self.dbg._point(number)
        if colon:
            return self.dbg.commands(number, [c for c in inline.split(";")])
        self._collecting = (number, [])
        return None

    # ---- inspection --------------------------------------------------------------------------
    def _cmd_print(self, rest, verb, fmt):
        if verb == "display":
            if not rest:
                return self.dbg.displays()
            n = self.dbg.display(rest)
            return [(n, rest, self.dbg.print_(rest))]
        if verb == "undisplay":
            return self.dbg.undisplay(_numbers(rest))
        if not rest:
            raise DebugError("print needs an expression")
        return self.dbg.print_(rest)

    def _cmd_x(self, rest, verb, fmt):
        if not rest:
            raise DebugError("x needs an address")
        return self.dbg.examine(fmt, rest)

    def _cmd_dump(self, rest, verb, fmt):
        try:
            parts = shlex.split(rest)
        except ValueError as exc:
            raise DebugError(str(exc)) from None
        force = "--force" in parts
        parts = [p for p in parts if p != "--force"]
        if len(parts) != 2:
            raise DebugError("dump needs EXPR and FILE.npy")
        return self.dbg.dump(parts[0], parts[1], force)

    def _cmd_info(self, rest, verb, fmt):
        what = rest.split()[0] if rest else ""
        table = {"engines": self.dbg.info_engines, "sems": self.dbg.info_sems, "semaphores": self.dbg.info_sems,
                 "queues": self.dbg.info_queues, "memory": self.dbg.info_memory, "line": self.dbg.backtrace,
                 "breakpoints": self.dbg.info_breakpoints, "break": self.dbg.info_breakpoints,
                 "watchpoints": self.dbg.info_breakpoints, "display": self.dbg.displays,
                 "hang": self.dbg.info_hang, "history": self.dbg.info_history}
        if what not in table:
            raise DebugError(f"info {what}: expected one of {', '.join(table)}")
        return table[what]()

    def _cmd_bt(self, rest, verb, fmt):
        return self.dbg.backtrace()

    def _cmd_list(self, rest, verb, fmt):
        if verb == "disassemble":
            return self.dbg.disassemble()
        return self.dbg.listing(rest or None)

    def _cmd_help(self, rest, verb, fmt):
        if rest:
            key = ALIASES.get(rest, rest)
            if key not in HELP:
                raise DebugError(f"no command {rest!r}")
            return [HELP[key]]
        return list(HELP.values())


def _split_if(text: str) -> tuple[str, str]:
    m = re.match(r"(.*?)\s+if\s+(.*)$", text)
    return (m.group(1).strip(), m.group(2).strip()) if m else (text.strip(), "")


def _int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise DebugError(f"expected a number, got {text.strip()!r}")
    return int(text)


def _count(text: str) -> int:
    n = _int(text) if text.strip() else 1
    if n < 1:
        raise DebugError("the count must be at least 1")
    return n


def _numbers(text: str) -> list[int]:
    return [_int(t) for t in text.replace(",", " ").split()]
