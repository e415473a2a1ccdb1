"""The `(xpu)` console: batch execution of script lines and an interactive loop with readline
history. It only formats what `Commands` returns."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from .commands import Commands
from .render import render, to_json

PROMPT = "(xpu) "
HISTORY = Path(os.path.expanduser("~")) / ".xpu_debug_history"


class Session:
    """Runs command lines, writes their text, and remembers whether anything failed."""

    def __init__(self, commands: Commands, out=None, echo: bool = False, as_json: bool = False):
        self.commands = commands
        self.out = out or sys.stdout
        self.echo = echo and not as_json
        self.as_json = as_json
        self.failed = False

    def run_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.one(line)

    def one(self, line: str) -> None:
        if self.echo and line.strip() and not line.strip().startswith("#"):
            self.out.write(PROMPT + line.strip() + "\n")
        result = self.commands.execute(line)
        if result is None:
            return
        if not result.ok:
            self.failed = True
        for sub in result.followups:
            if not sub.ok:
                self.failed = True
        if self.as_json:  # one JSON object per command (JSON lines)
            self.out.write(json.dumps(to_json(result)) + "\n")
        else:
            for text in render(result):
                self.out.write(text + "\n")
        self.out.flush()

    def interactive(self) -> None:
        try:
            import readline
        except ImportError:  # pragma: no cover - not on every platform
            readline = None
        if readline is not None:
            try:
                readline.read_history_file(HISTORY)
            except OSError:
                pass
        last = ""
        try:
            while True:
                try:
                    line = input(">" if self.commands.collecting else PROMPT)
                except EOFError:
                    self.out.write("\n")
                    break
                except KeyboardInterrupt:
                    self.out.write("\n")
                    continue
                if line.strip() in ("quit", "q", "exit"):
                    break
                if not line.strip() and not self.commands.collecting:
                    line = last  # gdb: an empty line repeats the last command
                else:
                    last = line
                self.one(line)
        finally:
            if readline is not None:
                try:
                    readline.write_history_file(HISTORY)
                except OSError:
                    pass
