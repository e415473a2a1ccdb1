"""Helpers of the TUI tests: a seeded gemm512 debugger and waiting for the Debug view's commands."""
from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import numpy as np

from device_model.assembly import assemble
from xputools.debug import Debugger

ROOT = Path(__file__).resolve().parents[2]
GEMM = ROOT / "samples/programs/gemm512.xasm"


def gemm_debugger(seed: int = 0) -> Debugger:
    prog = assemble(GEMM.read_text(), str(GEMM))
    rng = np.random.default_rng(seed)
    return Debugger(prog, {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in prog.inputs()})


async def settle(app, pilot) -> None:
    """Wait until the Debug view has run every queued command."""
    view = app.debug_view
    for _ in range(400):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if view is None or (not view.busy and not view._pending):
            return
    raise AssertionError("the debug view never became idle")


def console_text(app) -> str:
    from textual.widgets import RichLog

    log = app.query_one("#console-log", RichLog)
    return "\n".join(strip.text for strip in log.lines)


def sync(test):
    """Run an async Pilot test with asyncio (no async pytest plugin is needed)."""
    @functools.wraps(test)
    def run(*args, **kw):
        return asyncio.run(test(*args, **kw))
    return run
