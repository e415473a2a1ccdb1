"""compare: planted culprits are ranked first (not their successors), fused groups, host nodes,
samples, determinism, device-vs-device."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from acc_models import SAMPLES, calibration_for, cancel_branches, cancel_chain, host_fallback, inputs_for, wide_channel

from xputools.accuracy import compare
from xputools.compiler.context import CompileOptions
from xputools.errors import UserError
from xputools.runtime import read_npz


def _rows(doc):
    return {r["name"]: r for r in doc["tensors"]}


def test_planted_node_is_the_first_culprit_not_its_successors():
    m = cancel_chain()
    doc = compare(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], recover_top=1)
    rows = _rows(doc)
    assert doc["culprits"][0]["node"] == "bad"
    # the successors inherit as much accumulated error but introduce little
    assert rows["post1/tanh"]["accumulated"]["sqnr_db"] < 10 and rows["post1/tanh"]["local"]["sqnr_db"] > 30
    assert rows["bad"]["local"]["sqnr_db"] < 10
    assert [c["node"] for c in doc["culprits"]].index("post2") > 0
    top = doc["culprits"][0]
    assert top["recovered_sqnr_db"] > top["output_sqnr_db"] + 20


def test_two_planted_nodes_on_parallel_branches_are_the_top_two():
    m = cancel_branches()
    doc = compare(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], recover_top=0)
    assert {c["node"] for c in doc["culprits"][:2]} == {"bad_a", "bad_b"}
    assert doc["culprits"][2]["local"]["sqnr_db"] > 30


def test_int8_wide_channel_blames_the_node_that_quantizes_it():
    m = wide_channel()
    opts = CompileOptions(precision="int8", calibration=calibration_for(m))
    doc = compare(m.SerializeToString(), opts, [inputs_for(m)], recover_top=0)
    assert doc["culprits"][0]["node"] == "mm2"
    assert doc["culprits"][0]["local"]["sqnr_db"] + 10 < doc["culprits"][1]["local"]["sqnr_db"]


def test_fused_tensors_are_listed_and_blamed_as_a_group():
    doc = compare(SAMPLES / "cnn.onnx", CompileOptions(precision="bf16"), [read_npz(SAMPLES / "cnn.inputs.npz")],
                  recover_top=0)
    rows = _rows(doc)
    assert rows["stem/conv"]["engine"] == "fused" and rows["stem/conv"]["fused_into"] == "stem/relu"
    assert {n["name"] for n in doc["not_compared"]} >= {"stem/conv", "stem/bn"}
    stem = next(c for c in doc["culprits"] if c["node"] == "stem/conv")
    assert stem["nodes"] == ["stem/conv", "stem/bn", "stem/relu"]
    assert len(doc["tensors"]) == 19


def test_host_nodes_are_marked_and_never_blamed():
    m = host_fallback()
    doc = compare(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], recover_top=0)
    assert _rows(doc)["c"]["engine"] == "host"
    assert "sin" not in {c["node"] for c in doc["culprits"]}
    assert {c["node"] for c in doc["culprits"]} >= {"proj", "out"}


def test_samples_aggregate_worst_and_mean_and_runs_are_deterministic():
    m = cancel_chain()
    rng = np.random.default_rng(3)
    samples = [{"x": rng.standard_normal((16, 64)).astype(np.float32)} for _ in range(3)]
    a = compare(m.SerializeToString(), CompileOptions(precision="bf16"), samples, recover_top=1)
    b = compare(m.SerializeToString(), CompileOptions(precision="bf16"), samples, recover_top=1)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    row = _rows(a)["bad"]
    assert row["accumulated"]["sqnr_db"] <= row["accumulated_mean"]["sqnr_db"]
    assert row["accumulated"]["max_abs"] >= row["accumulated_mean"]["max_abs"]
    assert a["samples"] == 3


def test_device_against_saved_device_run(tmp_path):
    m = cancel_chain().SerializeToString()
    feeds = inputs_for(cancel_chain())
    run = tmp_path / "fp32.npz"
    compare(m, CompileOptions(precision="fp32"), [feeds], save_run=run, recover_top=0)
    same = compare(m, CompileOptions(precision="fp32"), None, against=run, recover_top=0)
    assert same["reference"] == f"run:{run}"
    assert all(r["accumulated"]["sqnr_db"] == 200.0 for r in same["tensors"] if r["accumulated"])
    bf16 = compare(m, CompileOptions(precision="bf16"), [feeds], against=run, recover_top=0)
    assert bf16["culprits"][0]["node"] == "bad"
    with pytest.raises(UserError, match="other values"):
        compare(m, CompileOptions(precision="bf16"), [{"x": feeds["x"] + 1}], against=run, recover_top=0)


def test_unknown_output_is_bad_input():
    m = cancel_chain()
    with pytest.raises(UserError, match="unknown output"):
        compare(m.SerializeToString(), CompileOptions(precision="bf16"), [inputs_for(m)], output="nope")


def test_a_small_memory_budget_gives_the_same_numbers_with_more_reference_runs():
    m = cancel_chain()
    opts = CompileOptions(precision="bf16")
    whole = compare(m.SerializeToString(), opts, [inputs_for(m)], recover_top=0)
    tight = compare(m.SerializeToString(), opts, [inputs_for(m)], recover_top=0, budget_bytes=8 * 16 * 64)
    assert tight["reference_runs"] > whole["reference_runs"] == 1
    assert tight["tensors"] == whole["tensors"] and tight["culprits"] == whole["culprits"]


def test_the_forked_teacher_forced_run_gives_the_same_document(monkeypatch):
    module = importlib.import_module("xputools.accuracy.analysis")
    monkeypatch.setattr(module, "FORK_MIN_SECONDS", 0.0)  # fork even for a tiny model
    m = cancel_chain()
    opts = CompileOptions(precision="bf16")
    forked = compare(m.SerializeToString(), opts, [inputs_for(m)], recover_top=0, parallel=True)
    inline = compare(m.SerializeToString(), opts, [inputs_for(m)], recover_top=0, parallel=False)
    assert json.dumps(forked, sort_keys=True) == json.dumps(inline, sort_keys=True)


def test_samples_from_a_batched_npz_and_from_a_directory(tmp_path):
    from xputools.accuracy import Analysis, load_samples

    m = cancel_chain()
    an = Analysis(m.SerializeToString(), CompileOptions(precision="bf16"))
    rng = np.random.default_rng(5)
    batch = rng.standard_normal((3, 16, 64)).astype(np.float32)
    np.savez(tmp_path / "batch.npz", x=batch)
    assert [s["x"].shape for s in load_samples(tmp_path / "batch.npz", an.program)] == [(16, 64)] * 3
    d = tmp_path / "dir"
    d.mkdir()
    for i in range(2):
        np.savez(d / f"s{i}.npz", x=batch[i])
    got = load_samples(d, an.program)
    assert len(got) == 2 and np.array_equal(got[1]["x"], batch[1])
    doc = compare(m.SerializeToString(), samples=got, recover_top=2, analysis=an)
    assert doc["samples"] == 2 and doc["culprits"][0]["op"] == "MatMul"
    assert doc["culprits"][0]["recovery_rank"] == 1


def test_qdq_tensors_are_compared_dequantized_and_round_trip_through_a_saved_run(tmp_path):
    feeds = read_npz(SAMPLES / "int8_qdq.inputs.npz")
    opts = CompileOptions(precision="int8")
    run = tmp_path / "run.npz"
    doc = compare(SAMPLES / "int8_qdq.onnx", opts, [feeds], recover_top=0, save_run=run)
    q = _rows(doc)["conv1/quantize"]
    assert q["engine"] == "device" and q["accumulated"]["sqnr_db"] > 30
    assert np.load(run)["conv1/quantize"].dtype == np.int8  # saved as ONNX Runtime gives it: codes
    same = compare(SAMPLES / "int8_qdq.onnx", opts, None, against=run, recover_top=0)
    assert all(r["accumulated"]["sqnr_db"] == 200.0 and r["local"]["sqnr_db"] == 200.0
               for r in same["tensors"] if r["accumulated"])
