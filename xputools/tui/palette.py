"""Command palette (Ctrl+P) entries for the Debug screen: nodes (break there), tensors (print them)
and the debugger's commands; each runs as a console command."""
from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

READY = ("run", "start", "continue", "next", "finish", "stepi", "reverse-stepi", "reverse-continue",
         "reverse-finish", "kill", "bt", "list", "disassemble", "info engines", "info sems", "info queues",
         "info memory", "info breakpoints", "info display", "info hang", "delete", "help")


class DebugCommands(Provider):
    def _entries(self) -> list[tuple[str, str]]:
        view = getattr(self.app, "debug_view", None)
        if view is None:
            return []
        prog = view.dbg.program
        out = [(c, "debugger command") for c in READY]
        out += [(f"break node {n}", "breakpoint at this ONNX node") for n in view.node_names()]
        out += [(f"print {t.name}", "tensor (tap)") for t in prog.taps]
        out += [(f"print {t.name}", "program tensor") for t in prog.tensors]
        return out

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.run_debug_command, text),
                          help=help_text)
