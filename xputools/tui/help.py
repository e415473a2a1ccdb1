"""The `?` screen: every key of the app."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = """[b]xpu TUI keys[/b]

[b]Debug[/b]
  F5 continue (run when stopped)     Shift+F5 reverse-continue
  F9 toggle breakpoint at selection  F10 next node
  F11 step instruction (focused engine, the others frozen)
  Shift+F11 finish                   Ctrl+C interrupt a running command
  : or Esc  focus the console        Up/Down  history, Right  complete
  [ ]  pick the DMA queue            Enter on a node  break there
  d  dump the shown tensor (.npy)    h  hex/float

[b]Profile[/b]
  + -  zoom    < >  pan    Up/Down  lane    , .  previous/next instruction
  Enter on a layer  debug here (Debug stopped at that node)

[b]Accuracy[/b]
  o  worst first / graph order   Enter  debug here   k  keep at fp32 and re-run

[b]Everywhere[/b]
  1 2 3 or Ctrl+PgUp/PgDn  switch screens   Tab  next pane
  Ctrl+P  command palette (nodes, tensors, commands)   q quit   ? this help
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 100%; height: auto; max-height: 100%;
                          border: round $accent; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(KEYS)
