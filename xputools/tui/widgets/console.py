"""The console at the bottom of the Debug screen: a log of `xpu debug` output and an input line with
history (Up/Down) and completion (Right accepts the suggested word: commands, engines, nodes, tensors)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input, RichLog


class WordSuggester(Suggester):
    """Completes the last word of the line from a vocabulary (given as a callable, so it stays current)."""

    def __init__(self, words: Callable[[], Iterable[str]]):
        super().__init__(use_cache=False, case_sensitive=True)
        self._words = words

    async def get_suggestion(self, value: str) -> str | None:
        head, _, last = value.rpartition(" ")
        if not last:
            return None
        for word in self._words():
            if word.startswith(last) and word != last:
                return (head + " " if head else "") + word
        return None


class CommandInput(Input):
    """The `(xpu)` line: Up/Down walk the history."""

    def __init__(self, **kw):
        super().__init__(placeholder="(xpu) command — Esc or : to focus, Tab to leave", **kw)
        self.history: list[str] = []
        self._pos = 0

    def remember(self, line: str) -> None:
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self._pos = len(self.history)

    def _on_key(self, event: events.Key) -> None:
        if event.key in ("up", "down") and self.history:
            self._pos = max(0, min(len(self.history), self._pos + (-1 if event.key == "up" else 1)))
            self.value = self.history[self._pos] if self._pos < len(self.history) else ""
            self.cursor_position = len(self.value)
            event.stop()
            event.prevent_default()


class Console(Vertical):
    """Output log plus the command line; posts `Console.Submitted` with the line."""

    class Submitted(Message):
        def __init__(self, line: str):
            super().__init__()
            self.line = line

    def __init__(self, words: Callable[[], Iterable[str]], **kw):
        super().__init__(**kw)
        self._words = words

    def compose(self) -> ComposeResult:
        yield RichLog(id="console-log", wrap=False, markup=False, max_lines=2000)
        yield CommandInput(id="console-input", suggester=WordSuggester(self._words))

    @property
    def input(self) -> CommandInput:
        return self.query_one(CommandInput)

    def write(self, line: str, style: str = "") -> None:
        self.query_one(RichLog).write(Text(line, style=style))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        line = event.value.strip()
        self.input.value = ""
        self.input.remember(line)
        if line:
            self.post_message(self.Submitted(line))
