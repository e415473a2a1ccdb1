"""Every profiler writer (issue 13 §3, §5): refuses an existing file without --force, never writes
over an input, writes whole or not at all and cleans up on failure; errors are one line, exit 2."""
from __future__ import annotations

import os
import sqlite3

import pytest
from click.testing import CliRunner
from prof_helpers import SAMPLES

from xputools.profile.cli import prof


def run(*args):
    result = CliRunner().invoke(prof, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code, err, words):
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:") and words in err, err


def test_record_into_a_missing_directory(tmp_path):
    code, _, err = run("record", SAMPLES / "mlp.onnx", "-o", tmp_path / "nope" / "x.pftrace")
    one_line_error(code, err, "does not exist")


def test_record_never_writes_over_its_input(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes((SAMPLES / "mlp.onnx").read_bytes())
    before = model.read_bytes()
    code, _, err = run("record", model, "-o", model, "--force")
    one_line_error(code, err, "is an input")
    assert model.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_record_default_name_in_a_read_only_directory(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.chdir(ro)
    try:
        code, _, err = run("record", SAMPLES / "mlp.onnx")
        one_line_error(code, err, "not writable")
    finally:
        ro.chmod(0o755)


def test_record_on_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    from xputools.profile import database

    def full(*_args, **_kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(database, "_fill", full)
    out = tmp_path / "full.pftrace"
    code, _, err = run("record", SAMPLES / "mlp.onnx", "-o", out)
    one_line_error(code, err, "no space left")
    assert list(tmp_path.iterdir()) == []          # no trace, no database, no .tmp


def test_record_trace_failure_keeps_the_previous_outputs(tmp_path, monkeypatch):
    out = tmp_path / "keep.pftrace"
    assert run("record", SAMPLES / "mlp.onnx", "-o", out)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    from xputools.profile import recorder

    def broken(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder, "export_trace", broken)
    code, _, err = run("record", SAMPLES / "mlp.onnx", "-o", out, "--force")
    one_line_error(code, err, "no space left")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_sweep_outputs(tmp_path):
    model = SAMPLES / "transformer.onnx"
    shape = ("--shape", "input_ids=1x16")
    code, _, err = run("sweep", model, "--batch", "1", *shape, "-o", model)
    one_line_error(code, err, "is an input")
    existing = tmp_path / "s.png"
    existing.write_bytes(b"keep")
    code, _, err = run("sweep", model, "--batch", "1", *shape, "-o", existing)
    one_line_error(code, err, "--force")
    assert existing.read_bytes() == b"keep"
    code, _, err = run("sweep", model, "--batch", "1", *shape, "-o", tmp_path / "no" / "s.png")
    one_line_error(code, err, "does not exist")
    code, _, _ = run("sweep", model, "--batch", "1", *shape, "-o", existing, "--force")
    assert code == 0 and existing.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]
