"""`xpu debug`: a gdb-style debugger for XPU programs (engine focus, device-memory watchpoints,
reverse execution). `Debugger` is the headless core: every command is a method returning data.

    from xputools.debug import Debugger
    dbg = Debugger(program, feeds)
    dbg.break_("node /layer.0/*")
    stop = dbg.run()
"""
import importlib

# Lazy, so that registering the `xpu debug` command does not import the core (numpy, the machine).
_WHERE = {"Debugger": "core", "EngineInfo": "core", "Frame": "core", "HangInfo": "core", "ListingLine": "core",
          "LiveRange": "core", "SemInfo": "core", "DebugError": "errors", "Breakpoint": "points", "Hit": "points",
          "Stop": "points", "Watchpoint": "points"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
