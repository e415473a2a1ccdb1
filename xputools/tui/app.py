"""The xpu terminal app: one tab per tool (Debug, Profile, Accuracy), each a thin view over its
headless core. Keys follow VS Code / pudb (see docs/tui.md and the `?` screen)."""
from __future__ import annotations

from collections.abc import Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane

from xputools.debug import Debugger

from .debug_view import DebugView
from .help import HelpScreen
from .palette import DebugCommands

CSS = """
Screen { layout: vertical; }
TabbedContent { height: 1fr; }
TabPane { padding: 0; }
DebugView { height: 1fr; }
#debug-top { height: 1fr; }
#engines-area { width: 1fr; }
#engines { height: 1fr; }
#strip { height: auto; max-height: 4; display: none; border-bottom: solid $panel-lighten-2; }
Screen.-narrow #strip { display: block; }
Screen.-narrow EngineColumn { display: none; }
Screen.-narrow EngineColumn.-focus-engine { display: block; }
Screen.-narrow #side { width: 28; }
Screen.-narrow #sems { max-height: 5; }
Screen.-narrow #watches { max-height: 3; }
#nodes { min-height: 4; }
EngineColumn, SemaphorePane, WatchPane, TensorView { text-wrap: nowrap; text-overflow: ellipsis; }
EngineColumn { width: 1fr; border-right: solid $panel-lighten-2; }
EngineColumn.-focus-engine { width: 2fr; }
EngineColumn:focus { background: $boost; }
#side { width: 34; }
#nodes { height: 1fr; border: round $panel-lighten-2; }
#sems, #watches { height: auto; max-height: 8; border: round $panel-lighten-2; }
#status { height: 1; background: $panel; }
#debug-bottom { height: 8; }
#console { width: 1fr; }
#console-log { height: 1fr; }
#console-input { height: 1; border: none; padding: 0; }
#tensor { width: 40%; border: round $panel-lighten-2; }
ProfileView, AccuracyView { height: 1fr; }
#timeline { height: auto; max-height: 50%; border: round $panel-lighten-2; }
#instr-detail { height: 1; text-wrap: nowrap; text-overflow: ellipsis; background: $panel; }
#prof-bottom, #acc-bottom { height: 1fr; }
#layers, #acc-table { width: 1fr; }
#acc-head { height: 1; background: $panel; }
#acc-spark { height: 2; }
#acc-culprits { width: 40%; border: round $panel-lighten-2; }
#acc-loading { height: 3; }
#prof-summary { width: 45%; border: round $panel-lighten-2; }
Screen.-wide #side { width: 30%; }
Screen.-wide #debug-bottom { height: 14; }
Screen.-wide #sems, Screen.-wide #watches { max-height: 14; }
"""


class XpuApp(App):
    """`XpuApp(debugger=..., profile=..., accuracy=...)`: the tabs given (each loader is called in
    a worker when the app starts)."""

    TITLE = "xpu"
    CSS = CSS
    COMMANDS = App.COMMANDS | {DebugCommands}
    BINDINGS = [
        Binding("f5", "debug('resume')", "Cont", priority=True),
        Binding("shift+f5,f17", "debug_line('reverse-continue')", "Rev-cont", priority=True),
        Binding("f9", "debug('toggle_breakpoint')", "Break", priority=True),
        Binding("f10", "debug_line('next')", "Next", priority=True),
        Binding("f11", "debug_line('stepi')", "Stepi", priority=True),
        Binding("shift+f11,f23", "debug_line('finish')", "Finish", priority=True),
        Binding("ctrl+c", "debug('interrupt')", "Interrupt", priority=True, show=False),
        Binding("colon,escape", "debug('focus_console')", "Console", show=False),
        Binding("e", "debug('cycle_engine', 1)", "Engine", show=False),
        Binding("E", "debug('cycle_engine', -1)", show=False),
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys"),
        Binding("1", "tab('debug')", show=False), Binding("2", "tab('profile')", show=False),
        Binding("3", "tab('accuracy')", show=False),
        Binding("ctrl+pagedown", "cycle_tab(1)", show=False, priority=True),
        Binding("ctrl+pageup", "cycle_tab(-1)", show=False, priority=True),
    ]

    def __init__(self, debugger: Debugger | None = None, startup: list[str] | None = None,
                 profile: Callable | None = None, accuracy: Callable | None = None):
        super().__init__()
        self.debugger = debugger
        self.startup = startup
        self.profile_loader = profile
        self.accuracy_loader = accuracy

    @property
    def debug_view(self) -> DebugView | None:
        found = self.query(DebugView)
        return found.first() if found else None

    def compose(self) -> ComposeResult:
        with TabbedContent(id="tabs"):
            if self.debugger is not None:
                with TabPane("Debug", id="debug"):
                    yield DebugView(self.debugger, self.startup)
            if self.profile_loader is not None:
                from .profile_view import ProfileView

                with TabPane("Profile", id="profile"):
                    yield ProfileView(self.profile_loader)
            if self.accuracy_loader is not None:
                from .accuracy_view import AccuracyView

                with TabPane("Accuracy", id="accuracy"):
                    yield AccuracyView(self.accuracy_loader)
        yield Footer()

    def _fatal_error(self) -> None:
        """Textual's exit after an unhandled exception, without its traceback screen: `run_app`
        re-raises the exception so the CLI reports it as one line (the traceback with --debug)."""
        self.bell()
        self._close_messages_no_wait()

    def on_resize(self, event) -> None:
        self._size_classes(event.size.width, event.size.height)

    def on_mount(self) -> None:
        self._size_classes(self.size.width, self.size.height)

    def _size_classes(self, width: int, height: int) -> None:
        """-wide: more room for the side panes and console; -narrow: only the focused engine's
        column, the others as one line each in a strip."""
        self.screen.set_class(width >= 140 and height >= 40, "-wide")
        self.screen.set_class(width < 120, "-narrow")

    # ---- actions --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("debug", "debug_line") and self.debugger is None:
            return False  # a profile-only session: no debugger keys in the footer
        return True

    def _active_debug(self) -> DebugView | None:
        view = self.debug_view
        if view is None or self.query_one(TabbedContent).active != "debug":
            return None
        return view

    def action_debug(self, method: str, *args) -> None:
        view = self._active_debug()
        if view is not None:
            getattr(view, method)(*args)

    def action_debug_line(self, line: str) -> None:
        view = self._active_debug()
        if view is not None:
            view.key_command(line)

    def run_debug_command(self, line: str) -> None:
        """Run a console command on the Debug tab (the palette, "debug here")."""
        view = self.debug_view
        if view is None:
            self.notify("no program to debug in this session (xpu tui MODEL opens one)", severity="warning")
            return
        if self.query_one(TabbedContent).active != "debug":
            self.query_one(TabbedContent).active = "debug"
            view._focused_column().focus_quietly()  # focus left in a hidden tab would switch it back
        view.run_commands([line])

    def action_tab(self, name: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.query(f"TabPane#{name}"):
            tabs.active = name
            self._focus_pane()

    def action_cycle_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        ids = [p.id for p in tabs.query(TabPane)]
        if ids:
            tabs.active = ids[(ids.index(tabs.active) + step) % len(ids)]
            self._focus_pane()

    def _focus_pane(self) -> None:
        """Focus the first pane of the tab shown (focus left in a hidden tab would switch back to it)."""
        pane = self.query_one(TabbedContent).active_pane
        first = next((w for w in pane.query("*") if w.focusable), None) if pane is not None else None
        self.set_focus(first)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
