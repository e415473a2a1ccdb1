"""`xpu compile`, `xpu check` and `xpu run MODEL.onnx`: outputs, files and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xputools.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def xpu(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_run_onnx_sample_prints_outputs_and_writes_npz(tmp_path):
    code, out, _ = xpu("run", ROOT / "samples/mlp.onnx", "--inputs", ROOT / "samples/mlp.inputs.npz",
                       "-o", tmp_path / "o.npz")
    assert code == 0 and "probs" in out and "cycles:" in out
    assert np.load(tmp_path / "o.npz")["probs"].shape == (4, 10)


def test_compile_writes_a_program_that_runs_and_never_overwrites_by_default(tmp_path):
    model = tmp_path / "mlp.onnx"
    model.write_bytes((ROOT / "samples/mlp.onnx").read_bytes())
    (tmp_path / "mlp.xpu").write_bytes(b"keep me")
    code, _, err = xpu("compile", model, "--precision", "bf16")
    assert code == 0 and "mlp-1.xpu" in err
    assert (tmp_path / "mlp.xpu").read_bytes() == b"keep me"
    code, out, _ = xpu("run", tmp_path / "mlp-1.xpu", "--inputs", ROOT / "samples/mlp.inputs.npz", "--json")
    assert code == 0 and json.loads(out)["outputs"]["probs"]["shape"] == [4, 10]


def test_check_lists_placement_and_strict_fails_on_host_nodes(tmp_path):
    code, out, _ = xpu("check", ROOT / "samples/transformer.onnx", "--shape", "input_ids=1x16", "--json")
    assert code == 0
    report = json.loads(out)
    assert {r["where"] for r in report["nodes"]} <= {"device", "host"}
    assert report["counts"]["total"]["device"] + report["counts"]["total"]["host"] == len(report["nodes"])
    from onnx import TensorProto, helper

    node = helper.make_node("Det", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    import onnx

    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, out, _ = xpu("check", path)
    assert code == 0 and "host" in out
    code, _, err = xpu("check", path, "--strict")
    assert code == 1 and "host" in err


@pytest.mark.parametrize("args,expect", [
    (("compile", "{junk}"), "not an ONNX model"),
    (("compile", "{trunc}"), "truncated"),
    (("compile", "{missing}"), "no such file"),
    (("run", "samples/transformer.onnx", "--random-inputs"), "--shape input_ids="),
    (("run", "samples/mlp.onnx", "--inputs", "{badname}"), "unknown input"),
    (("run", "samples/mlp.onnx", "--inputs", "{badshape}"), "shape 3x64"),
    (("compile", "samples/mlp.onnx", "--keep", "fc1"), "NODE_OR_GLOB=DTYPE"),
    (("compile", "samples/mlp.onnx", "--keep", "fc1=fp64"), "unknown precision"),
    (("compile", "samples/mlp.onnx", "--shape", "nope=1x2"), "not an input"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, expect):
    (tmp_path / "junk.onnx").write_bytes(b"this is not protobuf at all \xff\xfe")
    data = (ROOT / "samples/cnn.onnx").read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "badname.npz", y=np.zeros((4, 64), np.float32))
    np.savez(tmp_path / "badshape.npz", x=np.zeros((3, 64), np.float32))
    subst = {"{junk}": tmp_path / "junk.onnx", "{trunc}": tmp_path / "trunc.onnx",
             "{missing}": tmp_path / "missing.onnx", "{badname}": tmp_path / "badname.npz",
             "{badshape}": tmp_path / "badshape.npz"}
    argv = [str(subst.get(a, ROOT / a if a.startswith("samples/") else a)) for a in args]
    code, _, err = xpu(*argv, "-o", tmp_path / "o.xpu") if args[0] == "compile" else xpu(*argv)
    assert code == 2, err
    assert expect.lower() in err.lower()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_precision_is_a_usage_error():
    code, _, err = xpu("compile", ROOT / "samples/mlp.onnx", "--precision", "fp4")
    assert code == 2 and "fp4" in err
