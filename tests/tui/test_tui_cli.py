"""The TUI's entry points: `xpu debug --tui`, `xpu tui`, `xpu-prof view` wire the app (run_app is
replaced by a recorder: no terminal here) and reject bad input with one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import xputools.tui as tui
from xputools.cli import cli
from xputools.profile.cli import prof

ROOT = Path(__file__).resolve().parents[2]
GEMM = ROOT / "samples/programs/gemm512.xasm"


def invoke(group, *args):
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def opened(monkeypatch):
    calls = []
    monkeypatch.setattr(tui, "run_app", lambda **kw: calls.append(kw))
    return calls


def test_debug_tui_opens_the_app_with_the_ex_commands(opened):
    code, _, err = invoke(cli, "debug", GEMM, "--random-inputs", "--tui", "-ex", "break pe:3")
    assert code == 0, err
    (kw,) = opened
    assert kw["startup"] == ["start", "break pe:3"]
    assert kw["debugger"].program.instrs


def test_debug_tui_and_batch_exclude_each_other(opened):
    code, _, err = invoke(cli, "debug", GEMM, "--random-inputs", "--tui", "--batch")
    assert code == 2 and "exclude" in err and not opened


def test_xpu_tui_on_a_program_has_debug_and_profile_tabs(opened):
    code, _, err = invoke(cli, "tui", GEMM, "--random-inputs")
    assert code == 0, err
    (kw,) = opened
    assert kw["debugger"] is not None and kw["accuracy"] is None and callable(kw["profile"])


def test_xpu_tui_bad_file_is_one_line_exit_2(tmp_path, opened):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = invoke(cli, "tui", bad, "--random-inputs")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not opened


def test_prof_view_opens_a_recorded_profile_and_rejects_a_bad_one(tmp_path, opened):
    trace = tmp_path / "g.pftrace"
    code, _, err = invoke(prof, "record", GEMM, "-o", trace)
    assert code == 0, err
    code, _, err = invoke(prof, "view", trace)
    assert code == 0, err
    data = opened[0]["profile"]()
    assert data.meta["cycles"] > 0 and "debugger" not in opened[0]
    junk = tmp_path / "junk.profile.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    code, _, err = invoke(prof, "view", junk)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_an_unexpected_error_inside_the_app_is_one_line_not_a_traceback(monkeypatch):
    """The app closes (terminal restored) and the CLI prints one `internal error:` line, exit 3."""
    from textual.app import App

    from xputools.tui.debug_view import DebugView

    def broken(self):
        raise RuntimeError("boom")

    run = App.run
    monkeypatch.setattr(DebugView, "on_mount", broken)  # a bug in a handler, hit while the app runs
    monkeypatch.setattr(App, "run", lambda self, **kw: run(self, headless=True, size=(80, 24)))
    code, out, err = invoke(cli, "debug", GEMM, "--random-inputs", "--tui")
    assert code == 3
    assert err.strip().splitlines() == ["internal error: RuntimeError: boom (rerun with --debug for the traceback)"]
