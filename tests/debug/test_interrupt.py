"""Debugger.interrupt(): another thread stops a long continue / reverse-continue (the TUI's Ctrl+C)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from device_model.assembly import assemble
from device_model.events import Observer
from device_model.isa import ENGINES
from xputools.debug import Debugger

GEMM = Path("samples/programs/gemm512.xasm")


def gemm_debugger(seed=0, **kw) -> Debugger:
    prog = assemble(GEMM.read_text(), str(GEMM))
    rng = np.random.default_rng(seed)
    return Debugger(prog, {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in prog.inputs()}, **kw)


class _CtrlC(Observer):
    """Stands in for the user's Ctrl+C arriving mid-run: from another thread, once `n` instructions retired."""

    def __init__(self, dbg: Debugger, n: int):
        self.dbg, self.n = dbg, n

    def on_complete(self, ev) -> None:
        if len(self.dbg.obs.retire_log) == self.n:
            t = threading.Thread(target=self.dbg.interrupt)
            t.start()
            t.join()


def test_interrupt_stops_a_continue_early_and_the_run_resumes_identically():
    full = gemm_debugger()
    end = full.run()
    assert end.reason == "exited"
    dbg = gemm_debugger()
    dbg.machine.attach(_CtrlC(dbg, 5))
    stop = dbg.run()
    assert stop.reason == "interrupted"
    assert 5 <= stop.point[0] <= 6 < end.point[0]
    again = dbg.cont()  # the request was consumed: the rest runs to the end, same cycles as uninterrupted
    assert again.reason == "exited" and again.time == end.time and again.point == end.point


def test_interrupt_requested_before_the_command_starts_stops_it_at_once():
    dbg = gemm_debugger()
    dbg.start()
    dbg.interrupt()
    stop = dbg.cont()
    assert stop.reason == "interrupted" and stop.point[0] == 1


def test_interrupted_reverse_continue_stays_where_it_started():
    dbg = gemm_debugger(interval=4)
    dbg.break_("pe:0")
    dbg.run()
    dbg.delete()
    end = dbg.cont()
    assert end.reason == "exited"
    before = (end.point, [dbg.machine.engine(e).pc for e in ENGINES if e in dbg.index.streams])
    dbg.break_("pe:0")
    dbg.interrupt()
    back = dbg.reverse_continue()
    assert back.reason == "interrupted"
    assert (dbg.point, [dbg.machine.engine(e).pc for e in ENGINES if e in dbg.index.streams]) == before
    assert dbg.reverse_continue().reason == "breakpoint"  # not stuck interrupted
