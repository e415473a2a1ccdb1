"""`xpu debug`: a gdb-style debugger for XPU programs (engine focus, device-memory watchpoints,
reverse execution). `Debugger` is the headless core: every command is a method returning data.

    from xputools.debug import Debugger
    dbg = Debugger(program, feeds)
    dbg.break_("node /layer.0/*")
    stop = dbg.run()
"""
from .core import Debugger, EngineInfo, Frame, HangInfo, ListingLine, LiveRange, SemInfo
from .errors import DebugError
from .points import Breakpoint, Hit, Stop, Watchpoint

__all__ = ["Debugger", "DebugError", "Breakpoint", "Watchpoint", "Hit", "Stop", "EngineInfo", "SemInfo", "Frame",
           "ListingLine", "LiveRange", "HangInfo"]
