"""bisect: the keep set is exactly the planted nodes, and the keep file it writes fixes the model."""
from __future__ import annotations

import math

import pytest
from acc_models import cancel_branches, cancel_chain, inputs_for

from xputools.accuracy import bisect
from xputools.accuracy.metrics import tensor_metrics
from xputools.accuracy.search import write_keep_file
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.keepfile import options_from_spec
from xputools.errors import UserError
from xputools.runtime import DeviceSession
from xputools.runtime.host_runner import ModelRunner


@pytest.mark.parametrize("build, planted", [(cancel_chain, {"bad"}), (cancel_branches, {"bad_a", "bad_b"})])
def test_keep_set_is_the_planted_nodes_and_the_keep_file_meets_the_threshold(tmp_path, build, planted):
    m = build()
    feeds = inputs_for(m)
    doc = bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [feeds], min_sqnr=30.0)
    assert {k["node"] for k in doc["keep"]} == planted
    assert doc["met"] and doc["before"]["sqnr_db"] < 30 <= doc["after"]["sqnr_db"]
    assert doc["runs"] <= doc["prefix_bisection_runs"] + 2  # 2 of them are compare's runs
    assert doc["cost"]["cycles"] >= 0
    # the keep file, read back the way `xpu compile --keep-file` reads it, fixes the model
    keep = tmp_path / "keep.txt"
    write_keep_file(doc, keep)
    options = options_from_spec("bf16", keep_file=keep)
    model_path = tmp_path / "m.onnx"
    model_path.write_bytes(m.SerializeToString())
    program = compile_model(model_path, options).program
    y = DeviceSession(program).run(feeds).outputs["y"]
    ref = ModelRunner(m.SerializeToString(), m, engine="onnxruntime")(feeds)[0]
    assert tensor_metrics(y, ref)["sqnr_db"] >= 30


def test_nothing_to_keep_when_the_threshold_already_holds():
    m = cancel_chain()
    doc = bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], min_sqnr=-50.0)
    assert doc["keep"] == [] and doc["met"] and doc["builds"] == 0


def test_unreachable_threshold_is_reported_not_met():
    m = cancel_chain()
    doc = bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], min_sqnr=500.0)
    assert not doc["met"]
    assert math.ceil(math.log2(doc["nodes"])) + 1 == doc["prefix_bisection_runs"]


def test_bad_thresholds_are_bad_input():
    m = cancel_chain()
    with pytest.raises(UserError, match="threshold"):
        bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)])
    with pytest.raises(UserError, match="out of range"):
        bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], min_cosine=2.0)


def test_bisect_is_deterministic():
    m = cancel_branches()
    a = bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], min_sqnr=30.0)
    b = bisect(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], min_sqnr=30.0)
    assert a == b
