"""`xpu debug` in batch mode: a script's output, exit codes, one-line errors."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from xputools.cli import cli

ROOT = Path(__file__).resolve().parents[2]
GEMM = ROOT / "samples/programs/gemm512.xasm"


def xpu(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_batch_script_output(tmp_path):
    script = tmp_path / "s.gdb"
    script.write_text("# stop at the second tile's first matmul\nbreak mm_tile1\nrun\ninfo engines\n"
                      "engine pe\nstepi\nlist\nbt\nprint s0\ncontinue\n")
    code, out, err = xpu("debug", GEMM, "--random-inputs", "-x", script, "-ex", "info breakpoints", "--batch")
    assert code == 0, err
    lines = out.splitlines()
    assert "(xpu) break mm_tile1" in lines and "Breakpoint 1 at mm_tile1 (1 instruction)" in lines
    assert "Breakpoint 1, pe:4 [gemm]" in lines
    assert any(line.startswith("=> about to issue pe:4  mm_tile1: pe   matmul") for line in lines)
    assert any(line.startswith("* pe     pc 4/16") for line in lines)
    assert any(line.startswith("   retired pe:4") for line in lines)
    assert any(line.startswith("=>") and "pe:5" in line for line in lines)  # list marks the new pc
    assert "#2  node        gemm" in lines and "s0 = 4" in lines
    assert "[program finished]" in lines
    assert lines[-1].startswith("1    break       y    1")


def test_batch_exits_1_on_a_bad_command_with_one_line_of_help():
    code, out, err = xpu("debug", GEMM, "--random-inputs", "-ex", "break pe:999", "-ex", "frobnicate", "--batch")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "pe has 16 instructions" in errors[0] and "usage: break LOC" in errors[0]
    assert "unknown command 'frobnicate'" in errors[1]
    assert "Traceback" not in out + err


def test_batch_exits_1_when_the_program_faults_and_stops_post_mortem():
    oob = ROOT / "samples/programs/out_of_bounds.xasm"
    code, out, _ = xpu("debug", oob, "--random-inputs", "-ex", "run", "-ex", "bt", "--batch")
    assert code == 1
    assert "Program faulted" in out and "=> faulted at dve:0" in out and "#0  instruction dve:0" in out


def test_bad_program_file_is_exit_2():
    code, _, err = xpu("debug", ROOT / "nope.xpu", "--batch")
    assert code == 2 and "no such file" in err


def test_interactive_console_reads_until_quit(monkeypatch, tmp_path):
    import io

    from xputools.debug import console
    from xputools.debug.commands import Commands
    from xputools.debug.core import Debugger
    from xputools.runtime import random_inputs
    from xputools.runtime.programs import load_program_file

    prog = load_program_file(GEMM)
    lines = iter(["break pe:1", "run", "commands 1", "print s0", "end", "bogus", "engine pe", "stepi", "", "quit",
                  "never reached"])
    prompts = []

    def fake_input(prompt):
        prompts.append(prompt)
        return next(lines)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(console, "HISTORY", tmp_path / "history")
    out = io.StringIO()
    session = console.Session(Commands(Debugger(prog, random_inputs(prog, 0))), out=out)
    session.interactive()
    text = out.getvalue()
    assert prompts[:3] == ["(xpu) ", "(xpu) ", "(xpu) "] and prompts[3] == ">"
    assert "Breakpoint 1, pe:1 [gemm]" in text and "error: unknown command 'bogus'" in text
    assert "   retired pe:1" in text and "   retired pe:2" in text  # the empty line repeated stepi
    assert session.failed


def test_batch_json_lines():
    import json

    code, out, _ = xpu("debug", ROOT / "samples/programs/deadlock.xasm", "-ex", "run", "-ex", "info hang",
                       "-ex", "print s1", "--batch", "--json")
    assert code == 1  # the program hangs
    run, hang, sem = [json.loads(line) for line in out.splitlines()]
    assert run["data"]["reason"] == "hang" and not run["ok"]
    assert {b["engine"] for b in hang["data"]["report"]["blocked"]} == {"pe", "act", "dma0"}
    assert sem["data"]["array"] == 0
