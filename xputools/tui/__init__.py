"""The xpu terminal UI (Textual): `xpu debug --tui`, `xpu tui MODEL`, `xpu-prof view PROFILE`.

A view over the headless cores (xputools.debug, xputools.profile, xputools.accuracy): it formats
what they return and runs debugger actions as console commands. See docs/tui.md."""
from __future__ import annotations


def run_app(**kw) -> None:
    """Run the app full-screen until the user quits (`XpuApp` keyword arguments). An unexpected
    exception inside the app closes it cleanly and is raised here (the CLI prints it as one line)."""
    from .app import XpuApp

    app = XpuApp(**kw)
    app.run()
    error = getattr(app, "_exception", None)  # Textual keeps the first unhandled exception here
    if error is not None:
        raise error
