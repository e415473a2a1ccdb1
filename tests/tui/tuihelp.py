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


def gemm_session(tmp_path=None):
    """A ModelSession over gemm512 (a hand-written program: Debug and Profile tabs)."""
    from xputools.runtime import random_inputs
    from xputools.tui.sessions import ModelSession

    prog = assemble(GEMM.read_text(), str(GEMM))
    return ModelSession(GEMM, {}, random_inputs(prog, 0), prog)


MLP = ROOT / "samples/mlp.onnx"
COMPILE_KW = dict(precision="fp32", keep=(), keep_file=None, shapes=(), calibration=None,
                  calibration_method="minmax", arch=None, const_inputs=None)


def mlp_session(**kw):
    """A ModelSession over the mlp sample with its bundled inputs (Debug, Profile and Accuracy tabs)."""
    from xputools.clikit import feeds_from_options, program_from_path
    from xputools.tui.sessions import ModelSession

    compile_kw = {**COMPILE_KW, **kw}
    prog = program_from_path(MLP, compile_kw)
    return ModelSession(MLP, compile_kw, feeds_from_options(prog, ROOT / "samples/mlp.inputs.npz", False, 0), prog)


async def loaded(app, pilot, view_type, attr: str) -> None:
    """Wait until a tab's loader worker has filled `attr` of its view (or failed)."""
    view = app.query_one(view_type)
    for _ in range(600):
        await pilot.pause(0.05)
        if getattr(view, attr) is not None or not app.workers._workers:
            break
    await app.workers.wait_for_complete()
    await pilot.pause()
