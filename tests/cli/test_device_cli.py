"""`xpu arch`, `xpu asm`, `xpu disasm`, `xpu run` on hand-written programs, and their errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xputools.cli import cli

ROOT = Path(__file__).resolve().parents[2]
GEMM = ROOT / "samples/programs/gemm512.xasm"


def xpu(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_arch_show_prints_derived_peaks():
    code, out, _ = xpu("arch", "show", "xpu1", "--json")
    assert code == 0
    d = json.loads(out)["derived"]
    assert d["peak_tflops"]["bf16"] == pytest.approx(45.875, rel=1e-3)
    assert d["peak_tflops"]["f32"] == pytest.approx(45.875 / 4, rel=1e-3)
    assert d["ridge_flop_per_byte"]["bf16"] == pytest.approx(45.875e12 / 400e9, rel=1e-3)
    code, out, _ = xpu("arch", "show", "xpu1-edge")
    assert code == 0 and "xpu1-edge" in out and "50 GB/s" in out


def test_arch_show_rejects_a_bad_preset_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "device_model/presets/xpu1.toml").read_text().replace("clock_ghz = 1.4", "clock_ghz = -1"))
    code, _, err = xpu("arch", "show", bad)
    assert code == 2 and "clock_ghz" in err and len(err.strip().splitlines()) == 1
    typo = tmp_path / "typo.toml"
    preset = (ROOT / "device_model/presets/xpu1.toml").read_text()
    typo.write_text(preset.replace("[sbuf]\npartitions", "[sbuf]\npartitons"))
    code, _, err = xpu("arch", "show", typo)
    assert code == 2 and "sbuf.partitons" in err
    code, _, err = xpu("arch", "show", "nonesuch")
    assert code == 2 and "xpu1" in err


def test_asm_disasm_round_trip_and_run(tmp_path):
    prog = tmp_path / "gemm.xpu"
    assert xpu("asm", GEMM, "-o", prog)[0] == 0
    code, text, _ = xpu("disasm", prog)
    assert code == 0 and "; node=gemm (MatMul)" in text
    again = tmp_path / "again.xasm"
    again.write_text(text)
    prog2 = tmp_path / "gemm2.xpu"
    assert xpu("asm", again, "-o", prog2)[0] == 0
    assert prog.read_bytes() == prog2.read_bytes()
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
    np.savez(tmp_path / "in.npz", a_t=a, b=b)
    code, out, _ = xpu("run", prog, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert code == 0
    assert "cycles: 24125" in out and "pe" in out and "13792" in out
    c = np.load(tmp_path / "out.npz")["c"]
    np.testing.assert_allclose(c, a.T @ b, rtol=0.05, atol=0.5)


@pytest.mark.parametrize("feeds,expect", [
    ({"a_t": np.zeros((512, 512), np.float32), "bee": np.zeros((512, 512), np.float32)}, "unknown input bee"),
    ({"a_t": np.zeros((512, 512), np.float32)}, "missing input b"),
    ({"a_t": np.zeros((512, 511), np.float32), "b": np.zeros((512, 512), np.float32)}, "shape 512x511"),
    ({"a_t": np.zeros((512, 512), np.float64), "b": np.zeros((512, 512), np.float32)}, "dtype float64"),
])
def test_run_rejects_bad_inputs_listing_what_the_program_expects(tmp_path, feeds, expect):
    np.savez(tmp_path / "in.npz", **feeds)
    code, _, err = xpu("run", GEMM, "--inputs", tmp_path / "in.npz")
    assert code == 2
    assert expect in err and "a_t 512x512 float32, b 512x512 float32" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_files_give_one_line_and_exit_2(tmp_path):
    junk = tmp_path / "junk.xpu"
    junk.write_bytes(b"\x00garbage" * 10)
    for args in (("disasm", junk), ("run", junk, "--random-inputs"), ("run", tmp_path / "missing.xpu"),
                 ("asm", junk, "-o", tmp_path / "o.xpu")):
        code, _, err = xpu(*args)
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "bad.xasm").write_text("pe matmul dst=psum[0:+128]@0x0{1:4}:f32\n")
    code, _, err = xpu("asm", tmp_path / "bad.xasm", "-o", tmp_path / "o.xpu")
    assert code == 2 and "bad.xasm:1" in err
    np.savez(tmp_path / "in.npz", x=np.zeros(3))
    (tmp_path / "notnpz.npz").write_bytes(b"nope")
    code, _, err = xpu("run", GEMM, "--inputs", tmp_path / "notnpz.npz")
    assert code == 2 and "npz" in err


def test_hang_exits_1_with_the_report_and_oob_exits_2():
    code, _, err = xpu("run", ROOT / "samples/programs/deadlock.xasm")
    assert code == 1 and "deadlock cycle" in err and "s1 >= 1" in err
    code, _, err = xpu("run", ROOT / "samples/programs/out_of_bounds.xasm", "--random-inputs")
    # refused when the program loads, before anything runs: one line naming the instruction
    assert code == 2 and "(dve tensor_scalar)" in err and "reaches byte" in err and len(err.splitlines()) == 1


def test_console_script_help_has_examples():
    out = subprocess.run([sys.executable, "-m", "xputools", "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and "Examples:" in out.stdout and "--random-inputs" in out.stdout
