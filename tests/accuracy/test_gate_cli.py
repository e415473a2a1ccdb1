"""`xpu acc` on the command line: gate exit codes, baselines, JUnit/Markdown/JSON, manifests,
compare and bisect output files, bad input."""
from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from acc_models import SAMPLES, cancel_chain, inputs_for
from click.testing import CliRunner

from xputools.cli import cli


def xpu(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def chain(tmp_path):
    m = cancel_chain()
    path = tmp_path / "chain.onnx"
    path.write_bytes(m.SerializeToString())
    np.savez(tmp_path / "in.npz", **inputs_for(m))
    return path, tmp_path / "in.npz"


def test_gate_passes_fails_and_fails_on_a_baseline_regression(chain, tmp_path):
    model, inputs = chain
    common = [model, "--precision", "bf16", "--inputs", inputs]
    code, out, _ = xpu("acc", "gate", *common, "--keep", "bad=fp32", "--min-sqnr", 30)
    assert code == 0 and "gate: pass" in out
    code, out, _ = xpu("acc", "gate", *common, "--min-sqnr", 30)
    assert code == 1 and "FAIL" in out
    base = tmp_path / "base.json"
    code, _, _ = xpu("acc", "gate", *common, "--keep", "bad=fp32", "--baseline", base, "--update-baseline")
    assert code == 0 and json.loads(base.read_text())["models"]["chain:bf16"]["y"]["sqnr_db"] > 30
    # absolute threshold still passes, the baseline says it got worse
    code, out, _ = xpu("acc", "gate", *common, "--min-sqnr", -20, "--baseline", base, "--json", "-")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "fail"
    checks = doc["models"][0]["outputs"][0]["checks"]
    assert [c["passed"] for c in checks if c["kind"] == "threshold"] == [True]
    assert not all(c["passed"] for c in checks if c["kind"] == "baseline")


def test_junit_markdown_and_json_reports(chain, tmp_path):
    model, inputs = chain
    th = tmp_path / "th.toml"
    th.write_text('[default]\nmax_abs_err = 1000\n[outputs.y]\nmin_sqnr = 30\n')
    junit, md, js = tmp_path / "a.xml", tmp_path / "a.md", tmp_path / "a.json"
    code, _, _ = xpu("acc", "gate", model, "--precision", "bf16", "--inputs", inputs, "--thresholds", th,
                     "--junit", junit, "--markdown", md, "--json", js)
    assert code == 1
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert {c.get("name") for c in cases} == {"y: max_abs <= 1000", "y: sqnr_db >= 30"}
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["y: sqnr_db >= 30"] and root.get("failures") == "1"
    assert "FAIL" in md.read_text() and json.loads(js.read_text())["schema"] == "xputools.acc.gate/1"
    code, _, err = xpu("acc", "gate", model, "--inputs", inputs, "--min-sqnr", 1, "--junit", junit)
    assert code == 2 and "exists" in err


def test_manifest_gates_several_models_in_a_process_pool(tmp_path):
    man = tmp_path / "models.toml"
    man.write_text(f'''
[[model]]
path = "{SAMPLES / 'mlp.onnx'}"
precision = "bf16"
inputs = "{SAMPLES / 'mlp.inputs.npz'}"
min_sqnr = 30
[[model]]
path = "{SAMPLES / 'cnn.onnx'}"
name = "cnn-strict"
precision = "bf16"
inputs = "{SAMPLES / 'cnn.inputs.npz'}"
min_sqnr = 90
''')
    code, out, _ = xpu("acc", "gate", "--manifest", man, "--jobs", 2, "--json", "-")
    doc = json.loads(out)
    assert code == 1
    assert [(m["name"], m["verdict"]) for m in doc["models"]] == [("mlp:bf16", "pass"), ("cnn-strict", "fail")]


@pytest.mark.parametrize("args, message", [
    (["--min-cosine", "3"], "out of range"),
    (["--thresholds", "BADTOML"], "unknown threshold"),
    (["--thresholds", "UNKNOWN_OUTPUT"], "unknown output"),
    ([], "give a threshold"),
])
def test_bad_gate_input_exits_2_with_one_line(chain, tmp_path, args, message):
    model, inputs = chain
    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nmin_snr = 3\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[outputs.nope]\nmin_sqnr = 3\n")
    args = [{"BADTOML": bad, "UNKNOWN_OUTPUT": unknown}.get(a, a) for a in args]
    if not args:
        code, _, err = xpu("acc", "bisect", model, "--inputs", inputs)
    else:
        code, _, err = xpu("acc", "gate", model, "--inputs", inputs, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_compare_cli_json_csv_report_and_bisect_keep_file(chain, tmp_path):
    model, inputs = chain
    code, out, _ = xpu("acc", "compare", model, "--precision", "bf16", "--inputs", inputs, "--json",
                       "--csv", tmp_path / "t.csv", "--report", tmp_path / "r.html", "--recover", 1)
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "xputools.acc.compare/1"
    assert {"name", "node", "op", "engine", "accumulated", "local"} <= set(doc["tensors"][0])
    assert {"node", "nodes", "local", "recovered_sqnr_db"} <= set(doc["culprits"][0])
    assert doc["culprits"][0]["node"] == "bad"
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") == 2 and "<script" not in html and "bad" in html
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("name,node,nodes,op")
    code, out, _ = xpu("acc", "compare", model, "--precision", "bf16", "--inputs", inputs)
    assert code == 0 and "culprits" in out and "1. bad" in out
    keep = tmp_path / "keep.txt"
    code, out, _ = xpu("acc", "bisect", model, "--precision", "bf16", "--inputs", inputs, "--min-sqnr", 30,
                       "-o", keep, "--report", tmp_path / "b.html")
    assert code == 0 and "bad=fp32" in keep.read_text()
    assert "<td>bad</td><td>fp32</td>" in (tmp_path / "b.html").read_text()
    code, _, _ = xpu("compile", model, "--precision", "bf16", "--keep-file", keep, "-o", tmp_path / "m.xpu")
    assert code == 0
    code, _, err = xpu("acc", "compare", model, "--inputs", inputs, "--output", "nope")
    assert code == 2 and "unknown output" in err
    code, _, err = xpu("acc", "compare", model, "--inputs", SAMPLES / "cnn.inputs.npz")
    assert code == 2 and "expects" in err
