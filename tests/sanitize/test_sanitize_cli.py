"""`xpu sanitize`: exit codes (0 clean, 1 findings, 2 bad input), the JSON schema, and the
`xpu debug` command that reproduces each finding."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from sanitize_util import PROGRAMS, ROOT

from xputools.clikit import XpuGroup
from xputools.debug.sanitize.cli import register


@pytest.fixture(scope="module")
def root():
    @click.group(cls=XpuGroup)
    def cli():
        pass

    register(cli)
    return cli


def _run(root, *args):
    return CliRunner().invoke(root, ["sanitize", *map(str, args)])


def test_clean_program_exits_0(root):
    result = _run(root, PROGRAMS / "gemm512.xasm", "--random-inputs")
    assert result.exit_code == 0, result.output
    assert "clean" in result.output.splitlines()[-1]


def test_findings_exit_1_with_json(root):
    path = PROGRAMS / "race_war.xasm"
    result = _run(root, path, "--random-inputs", "--json", "--check", "race,uninit")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["schema"] == "xpu-sanitize/1"
    assert data["checks"] == ["race", "uninit"]
    (finding,) = data["findings"]
    assert finding["check"] == "race" and finding["kind"] == "WAR"
    assert [(a["engine"], a["index"], a["opcode"], a["ap"]) for a in finding["accesses"]] == [
        ("dve", 0, "tensor_scalar", "sbuf[0:+128]@0x0{1:64}:f32"),
        ("dma1", 0, "dma_copy", "sbuf[0:+128]@0x0{1:64}:f32")]
    assert all(set(a) >= {"engine", "index", "opcode", "ap", "node"} for a in finding["accesses"])
    assert finding["repro"] == f"xpu debug {path} --random-inputs -ex 'break dma1:0' -ex run"


def test_text_output_names_both_sides_and_the_debug_command(root):
    result = _run(root, PROGRAMS / "race_war.xasm", "--random-inputs")
    assert result.exit_code == 1
    assert "dve #0 tensor_scalar read src=sbuf[0:+128]@0x0{1:64}:f32" in result.output
    assert "dma1 #0 dma_copy write dst=sbuf[0:+128]@0x0{1:64}:f32" in result.output
    assert "reproduce: xpu debug" in result.output


def test_model_findings_reproduce_with_the_same_compile_options(root):
    result = _run(root, ROOT / "samples/mlp.onnx", "--inputs", ROOT / "samples/mlp.inputs.npz",
                  "--precision", "bf16", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["findings"] == []


def test_repro_keeps_compile_options():
    from pathlib import Path

    from xputools.debug.sanitize.cli import debug_command_prefix

    words = debug_command_prefix(Path("m.onnx"), {"precision": "bf16", "shapes": ("x=1x3",), "keep": (),
                                                  "arch": None, "calibration": None}, ["--inputs", "in.npz"])
    assert words == ["xpu", "debug", "m.onnx", "--inputs", "in.npz", "--precision", "bf16", "--shape", "x=1x3"]


@pytest.mark.parametrize("args,message", [
    (["--check", "races"], "unknown check races"),
    ([], "give --inputs IN.npz or --random-inputs"),
    (["--inputs", "missing.npz"], "no such file"),
])
def test_bad_input_exits_2_with_one_line(root, args, message):
    result = _run(root, PROGRAMS / "race_war.xasm", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_program_exits_2(root):
    result = _run(root, ROOT / "no_such_program.xasm", "--random-inputs")
    assert result.exit_code == 2 and "no such file" in result.output
