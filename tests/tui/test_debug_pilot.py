"""The Debug screen driven with Textual's Pilot: keys do what the console commands do."""
from __future__ import annotations

import threading

import pytest
from tuihelp import console_text, gemm_debugger, settle, sync

from device_model.events import Observer
from xputools.tui.app import XpuApp
from xputools.tui.widgets.nodes import NodeTree


@pytest.fixture
def gemm():
    return gemm_debugger()


def _pcs(dbg) -> dict[str, int]:
    return {e.view.name: e.view.pc for e in dbg.info_engines()}


@sync
async def test_f11_advances_only_the_focused_engine_by_one(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.debug_view.run_commands(["engine dma0"])
        await settle(app, pilot)
        before = _pcs(gemm)
        await pilot.press("f11")
        await settle(app, pilot)
        after = _pcs(gemm)
        assert after["dma0"] == before["dma0"] + 1
        assert {e: pc for e, pc in after.items() if e != "dma0"} == {e: pc for e, pc in before.items() if e != "dma0"}
        assert gemm.last_stop.reason == "step"


@sync
async def test_breakpoint_from_the_node_tree_then_f5_stops_there(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        tree = app.query_one(NodeTree)
        tree.focus()
        tree.move_cursor(tree._by_name["evacuate"])
        await pilot.press("enter")
        await settle(app, pilot)
        assert [bp.location.text for bp in gemm.breakpoints.values()] == ["node evacuate"]
        await pilot.press("f5")
        await settle(app, pilot)
        stop = gemm.last_stop
        assert stop.reason == "breakpoint" and stop.node == "evacuate" and stop.phase == "issue"
        assert "Breakpoint 1" in console_text(app)


@sync
async def test_console_command_and_its_output(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("colon")
        assert app.focused is app.query_one("#console-input")
        await pilot.press(*"info engines", "enter")
        await settle(app, pilot)
        text = console_text(app)
        assert "(xpu) info engines" in text
        assert "* pe     pc 0/16" in text
        await pilot.press(*"print nope", "enter")  # a core error is one line, the app keeps going
        await settle(app, pilot)
        assert console_text(app).splitlines()[-1].startswith("error: ")
        assert app.is_running


@sync
async def test_f_keys_work_while_the_console_has_focus(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("escape")
        await pilot.press("f5")
        await settle(app, pilot)
        assert gemm.last_stop.reason == "exited"
        assert app.query_one("#console-input").value == ""


class _SlowRun(Observer):
    """Makes a continue long: after the 5th completion it waits (up to 10 s) for the user's Ctrl+C."""

    def __init__(self, dbg):
        self.dbg = dbg
        self.reached = threading.Event()

    def on_complete(self, ev) -> None:
        if len(self.dbg.obs.retire_log) == 5:
            self.reached.set()
            for _ in range(1000):
                if self.dbg.obs.interrupted():
                    return
                threading.Event().wait(0.01)


@sync
async def test_ctrl_c_interrupts_a_long_continue_without_leaving(gemm):
    slow = _SlowRun(gemm)
    gemm.machine.attach(slow)
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        for _ in range(500):
            if slow.reached.is_set():
                break
            await pilot.pause(0.01)
        assert app.debug_view.busy
        await pilot.press("f11")  # keys do not pile up behind a running command
        assert "busy: stepi not run" in console_text(app)
        await pilot.press("ctrl+c")
        await settle(app, pilot)
        assert gemm.last_stop.reason == "interrupted"
        assert gemm.last_stop.point[0] < 32
        assert "Interrupted." in console_text(app)
        assert app.is_running
        await pilot.press("f5")
        await settle(app, pilot)
        assert gemm.last_stop.reason == "exited"


@sync
async def test_fault_opens_post_mortem_at_the_faulting_instruction():
    from pathlib import Path

    from device_model.assembly import assemble
    from xputools.debug import Debugger
    from xputools.runtime import random_inputs

    path = Path(__file__).resolve().parents[2] / "samples/programs/out_of_bounds.xasm"
    prog = assemble(path.read_text(), str(path))
    dbg = Debugger(prog, random_inputs(prog, 0))
    app = XpuApp(debugger=dbg, startup=["run"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        stop = dbg.last_stop
        assert stop.reason == "fault"
        assert dbg.focus == stop.engine
        col = next(c for c in app.debug_view.columns if c.engine == stop.engine)
        assert col.cursor == stop.index
        assert "faulted" in console_text(app)


@sync
async def test_console_history_and_completion(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        console = app.query_one("#console-input")
        await pilot.press("colon", *"info sem")
        await pilot.pause(0.2)
        await pilot.press("right")  # accept the suggested word
        assert console.value == "info sems"
        await pilot.press("enter")
        await settle(app, pilot)
        assert console_text(app).splitlines()[-1].startswith("s")  # info sems printed its table
        await pilot.press(*"engine dm")
        await pilot.pause(0.2)
        await pilot.press("right")
        assert console.value == "engine dma0"
        console.value = ""
        await pilot.press("up")
        assert console.value == "info sems"


@sync
async def test_tensor_viewer_shows_a_print_and_d_dumps_it(gemm, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    app = XpuApp(debugger=gemm, startup=["run", "print c"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        viewer = app.query_one("#tensor")
        assert viewer.value is not None and viewer.value.target.text == "c"
        viewer.focus()
        await pilot.press("d")
        await settle(app, pilot)
        assert np.array_equal(np.load(tmp_path / "c.npy"), np.asarray(viewer.value.array))
        await pilot.press("d")  # the file exists now: refused, one line, nothing overwritten
        await settle(app, pilot)
        assert console_text(app).splitlines()[-1].startswith("error: ")


@sync
async def test_command_palette_finds_a_node_and_sets_a_breakpoint(gemm):
    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"break node gemm")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(app, pilot)
        assert [bp.location.text for bp in gemm.breakpoints.values()] == ["node gemm"]


@sync
async def test_question_mark_shows_the_keys_and_q_quits(gemm):
    from xputools.tui.help import HelpScreen

    app = XpuApp(debugger=gemm)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.debug_view.columns[0].focus()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


@sync
async def test_a_display_that_changed_since_the_last_stop_is_highlighted(gemm):
    from xputools.tui.widgets.state import WatchPane

    app = XpuApp(debugger=gemm, startup=["start", "display s0", "display s3", "engine dma0"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        pane = app.query_one(WatchPane)
        assert pane.changed == set()
        await pilot.press("f11")  # dma0's load signals s0; nothing signals s3
        await settle(app, pilot)
        assert gemm.print_("s0").array == 1 and pane.changed == {1}
        await pilot.press("f11")  # dma0 has nothing left: no value changes this time
        await settle(app, pilot)
        assert pane.changed == set()
