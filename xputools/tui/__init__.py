"""The xpu terminal UI (Textual): `xpu debug --tui`, `xpu tui MODEL`, `xpu-prof view PROFILE`.

A view over the headless cores (xputools.debug, xputools.profile, xputools.accuracy): it formats
what they return and runs debugger actions as console commands. See docs/tui.md."""
from __future__ import annotations


def run_app(**kw) -> None:
    """Run the app full-screen until the user quits (`XpuApp` keyword arguments)."""
    from .app import XpuApp

    XpuApp(**kw).run()
