"""A program carries its arch: compiled for a custom TOML arch, it runs (and is profiled) from its
`.xpu` where that TOML does not exist, and a mismatched `--arch` is refused with one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from device_model.arch import load_arch
from device_model.container import load_program
from xputools.cli import cli

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "samples/mlp.onnx"
MLP_INPUTS = ROOT / "samples/mlp.inputs.npz"


def xpu(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def custom_toml(path: Path) -> Path:
    """xpu1 renamed `myvariant`, at another clock and HBM bandwidth: not a bundled preset."""
    text = (ROOT / "device_model/presets/xpu1.toml").read_text()
    text = text.replace('name = "xpu1"', 'name = "myvariant"').replace("clock_ghz = 1.4", "clock_ghz = 2.0")
    assert 'name = "myvariant"' in text and "clock_ghz = 2.0" in text
    path.write_text(text)
    return path


def test_a_program_for_a_custom_toml_arch_runs_from_its_xpu_without_the_toml(tmp_path):
    toml = custom_toml(tmp_path / "my.toml")
    arch = load_arch(str(toml))
    xpu_file = tmp_path / "mlp.xpu"
    code, _, err = xpu("compile", MLP, "--arch", toml, "-o", xpu_file)
    assert code == 0, err
    toml.unlink()  # from here on, no process can find the arch by name or path
    assert load_program(xpu_file).arch == arch
    # a fresh interpreter in another directory: nothing but the .xpu says what myvariant is
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "xputools", "run", str(xpu_file), "--inputs", str(MLP_INPUTS),
                          "--json", "-o", "out.npz"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["seconds"] == summary["cycles"] / 2.0e9  # the custom clock, not xpu1's 1.4 GHz
    # the same outputs as compiling and running in one go with --arch (which used to fail by name)
    code, out, err = xpu("run", MLP, "--arch", custom_toml(tmp_path / "again.toml"), "--inputs", MLP_INPUTS,
                         "-o", tmp_path / "direct.npz")
    assert code == 0, err
    assert np.array_equal(np.load(elsewhere / "out.npz")["probs"], np.load(tmp_path / "direct.npz")["probs"])


def test_the_profiler_records_a_custom_arch_program_with_its_clock(tmp_path):
    toml = custom_toml(tmp_path / "my.toml")
    xpu_file = tmp_path / "mlp.xpu"
    assert xpu("compile", MLP, "--arch", toml, "-o", xpu_file)[0] == 0
    toml.unlink()
    code, out, err = xpu("prof", "record", xpu_file, "--inputs", MLP_INPUTS, "-o", tmp_path / "t.pftrace", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["arch"] == "myvariant" and summary["clock_ghz"] == 2.0


def test_the_debugger_runs_a_custom_arch_program(tmp_path):
    toml = custom_toml(tmp_path / "my.toml")
    xpu_file = tmp_path / "mlp.xpu"
    assert xpu("compile", MLP, "--arch", toml, "-o", xpu_file)[0] == 0
    toml.unlink()
    code, out, err = xpu("debug", xpu_file, "--inputs", MLP_INPUTS, "-ex", "run", "--batch")
    assert code == 0, err + out


def test_a_mismatched_arch_is_refused_in_one_line(tmp_path):
    xpu_file = tmp_path / "mlp.xpu"
    assert xpu("compile", MLP, "-o", xpu_file)[0] == 0
    code, _, err = xpu("run", xpu_file, "--arch", "xpu1-edge", "--inputs", MLP_INPUTS)
    assert code == 2
    assert err.count("\n") == 1 and "built for arch 'xpu1'" in err and "not 'xpu1-edge'" in err
    asm = tmp_path / "p.xasm"
    asm.write_text(".arch xpu1-edge\npool nop\n")
    code, _, err = xpu("run", asm, "--arch", "xpu1")
    assert code == 2 and "built for arch 'xpu1-edge'" in err
    # naming the arch the program was built for is fine
    assert xpu("run", xpu_file, "--arch", "xpu1", "--inputs", MLP_INPUTS)[0] == 0
