"""Snapshots of each screen (pytest-textual-snapshot) at 80x24 and 160x48 on the mlp sample in bf16.
Deterministic: the app shows no clock, the console's cursor does not blink in a snapshot, and each
screen is taken once its workers have finished. Update with `pytest tests/tui --snapshot-update`."""
from __future__ import annotations

import pytest
from tuihelp import loaded, mlp_session, settle

from xputools.tui.accuracy_view import AccuracyView
from xputools.tui.app import XpuApp
from xputools.tui.profile_view import ProfileView

SIZES = [(80, 24), (160, 48)]


@pytest.fixture(scope="module")
def session():
    """The session with its profile and comparison computed once (the tabs' loaders return them)."""
    s = mlp_session(precision="bf16")
    s.cached = (s.profile(), s.accuracy([]))
    yield s
    s.close()


def _app(session) -> XpuApp:
    kw = session.app_kwargs()
    data, doc = session.cached
    kw["profile"] = lambda: data
    kw["accuracy"] = lambda keep: doc
    return XpuApp(**kw)


async def _ready(pilot, tab: str, lines: list[str]) -> None:
    app = pilot.app
    app.query_one("#console-input").cursor_blink = False
    await settle(app, pilot)
    app.debug_view.run_commands(lines)
    await settle(app, pilot)
    await loaded(app, pilot, ProfileView, "data")
    await loaded(app, pilot, AccuracyView, "doc")
    await pilot.press(tab)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_debug_screen(snap_compare, session, size):
    async def before(pilot):
        await _ready(pilot, "1", ["break pe:2", "display fc1/relu[0, 0:4]", "continue",
                                  "print fc1/relu"])
    assert snap_compare(_app(session), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_profile_screen(snap_compare, session, size):
    async def before(pilot):
        await _ready(pilot, "2", [])
    assert snap_compare(_app(session), terminal_size=size, run_before=before, press=["full_stop", "plus"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_accuracy_screen(snap_compare, session, size):
    async def before(pilot):
        await _ready(pilot, "3", [])
    assert snap_compare(_app(session), terminal_size=size, run_before=before)
