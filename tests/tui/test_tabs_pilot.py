"""Profile and Accuracy tabs driven with Pilot: switching tabs, the timeline's keys, debug here,
keep at fp32 and re-run."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, TabbedContent
from tuihelp import gemm_session, loaded, mlp_session, settle, sync

from xputools.tui.accuracy_view import AccuracyView, ordered_rows
from xputools.tui.app import XpuApp
from xputools.tui.profile_view import ProfileView
from xputools.tui.widgets.timeline import Timeline


@pytest.fixture
def gemm():
    s = gemm_session()
    yield s
    s.close()


@sync
async def test_switching_tabs_by_key(gemm):
    app = XpuApp(**gemm.app_kwargs())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "debug"
        await pilot.press("2")
        assert tabs.active == "profile"
        await pilot.press("ctrl+pageup")
        assert tabs.active == "debug"
        await pilot.press("3")  # no Accuracy tab for a hand-written program: nothing happens
        assert tabs.active == "debug"
        await loaded(app, pilot, ProfileView, "data")


@sync
async def test_timeline_keys_select_and_zoom_and_debug_here_stops_at_the_layer(gemm):
    app = XpuApp(**gemm.app_kwargs())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await loaded(app, pilot, ProfileView, "data")
        timeline = app.query_one(Timeline)
        timeline.focus()
        first = timeline.selected
        await pilot.press("full_stop")
        assert timeline.selected is not first and timeline.selected["engine"] == first["engine"]
        assert timeline.selected["pc"] == first["pc"] + 1
        span = timeline.span
        await pilot.press("plus")
        assert timeline.span == span // 2
        await pilot.press("minus", "minus")
        assert timeline.span == timeline.total
        detail = str(app.query_one("#instr-detail").render())
        assert f"{first['engine']}:{first['pc'] + 1}" in detail
        table = app.query_one("#layers", DataTable)
        table.focus()
        layer = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.query_one(TabbedContent).active == "debug"
        stop = app.debugger.last_stop
        assert stop.reason == "breakpoint" and stop.node == layer


@sync
async def test_accuracy_order_debug_here_and_keep_fp32_rerun():
    session = mlp_session(precision="bf16")
    try:
        app = XpuApp(**session.app_kwargs())
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            await pilot.press("3")
            view = app.query_one(AccuracyView)
            await loaded(app, pilot, AccuracyView, "doc")
            assert view.doc is not None and view.doc["precision"] == "bf16"
            table = app.query_one("#acc-table", DataTable)
            worst = ordered_rows(view.doc, worst_first=True)
            assert table.coordinate_to_cell_key((0, 0)).row_key.value == worst[0]["name"]
            await pilot.press("o")
            graph = ordered_rows(view.doc, worst_first=False)
            assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)] == \
                [r["name"] for r in graph]
            await pilot.press("o")
            node = worst[0]["group"] or worst[0]["node"]
            before = view.doc
            await pilot.press("k")
            for _ in range(600):
                await pilot.pause(0.05)
                if view.doc is not before:
                    break
            assert view.keep == [(node, "fp32")]
            assert view.doc["keep"] == [{"node": node, "precision": "fp32"}]
            await pilot.press("enter")
            await settle(app, pilot)
            assert app.query_one(TabbedContent).active == "debug"
            assert app.debugger.last_stop.reason == "breakpoint"
    finally:
        session.close()
