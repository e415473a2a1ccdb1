"""Crashes and silent wrong shapes the ONNX node suite found: graph outputs that fold to constants,
0-d constants, and shapes decided by an input's value (frozen with const_inputs, or refused with the
input named; never a shape learned from zeros)."""
from __future__ import annotations

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, ort_run
from model_builders import F32, const, make_model, rand
from onnx import TensorProto, helper

from xputools.compiler import frontend
from xputools.compiler.errors import CompileError

I64 = TensorProto.INT64


@pytest.mark.parametrize("op, kwargs", [("Shape", {}), ("Size", {}), ("Shape", {"start": 1})])
def test_graph_output_that_folds_to_a_constant(op, kwargs):
    rng = np.random.default_rng(5101)
    x = rand(rng, 2, 3)
    model = make_model([helper.make_node(op, ["x"], ["y"], **kwargs), helper.make_node("Relu", ["x"], ["r"])],
                       [("x", F32, [2, 3])], [("y", I64, None), ("r", F32, None)])
    got, _ = assert_matches_ort(model, {"x": x})
    assert got["y"].dtype == np.int64


def test_constant_graph_outputs_beside_computed_ones():
    rng = np.random.default_rng(5102)
    x = rand(rng, 2, 3)
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", F32, [2], [1.5, 2.5])),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["z"], value=helper.make_tensor("w", F32, [1], [7.0])),
             helper.make_node("Neg", ["x"], ["y"])]
    model = make_model(nodes, [("x", F32, [2, 3])], [("c", F32, None), ("z", F32, None), ("y", F32, None)])
    assert_matches_ort(model, {"x": x})


def test_zero_d_constant_after_a_noop_castlike():
    """gelu/shrink `_expanded`: Constant(2.0, 0-d) -> CastLike(., x) -> Neg -> Add(x, .)."""
    rng = np.random.default_rng(5103)
    x = rand(rng, 2, 3)
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", F32, [], [2.0])),
             helper.make_node("CastLike", ["c", "x"], ["cc"]), helper.make_node("Neg", ["cc"], ["n"]),
             helper.make_node("Add", ["x", "n"], ["y"])]
    assert_matches_ort(make_model(nodes, [("x", F32, [2, 3])], [("y", F32, None)]), {"x": x})


def _window_model(op="HannWindow"):
    return make_model([helper.make_node(op, ["size"], ["y"])], [("size", I64, [])], [("y", F32, None)])


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window_size_from_an_input_is_refused_with_the_input_named(op):
    with pytest.raises(CompileError, match=r"run-time value of 'size'.*--const-inputs FILE.npz holding size"):
        device_run(_window_model(op), {"size": np.array(10)})


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window_size_frozen_gives_the_right_shape(op):
    model = _window_model(op)
    got, _, _ = device_run(model, {}, const_inputs={"size": np.array(10)})
    want = ort_run(model, {"size": np.array(10)})["y"]
    assert got["y"].shape == (10,)
    np.testing.assert_allclose(got["y"], want, atol=1e-6)


def test_a_shape_that_moves_with_an_input_value_is_refused_even_when_not_listed(monkeypatch):
    """The safety net: an op missing from SHAPE_SLOTS is caught by a second run on other values."""
    monkeypatch.setattr(frontend, "SHAPE_SLOTS", {k: v for k, v in frontend.SHAPE_SLOTS.items()
                                                  if k != "HannWindow"})
    with pytest.raises(CompileError, match=r"shape of 'y' depends on the run-time value of input size"):
        device_run(_window_model(), {"size": np.array(10)})


def test_affine_grid_size_refused_or_frozen():
    rng = np.random.default_rng(5104)
    theta = rand(rng, 2, 2, 3)
    model = make_model([helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=1)],
                       [("theta", F32, [2, 2, 3]), ("size", I64, [4])], [("grid", F32, None)], opset=20)
    size = np.array([2, 3, 5, 6], np.int64)
    with pytest.raises(CompileError, match="holding size"):
        device_run(model, {"theta": theta, "size": size})
    got, _, _ = device_run(model, {"theta": theta}, const_inputs={"size": size})
    want = ort_run(model, {"theta": theta, "size": size})["grid"]
    assert got["grid"].shape == want.shape == (2, 5, 6, 2)
    np.testing.assert_allclose(got["grid"], want, atol=1e-5)


def test_mel_weight_matrix_inputs_refused_or_frozen():
    names = ["num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz"]
    model = make_model([helper.make_node("MelWeightMatrix", names, ["m"])],
                       [(n, I64 if i < 3 else F32, []) for i, n in enumerate(names)], [("m", F32, None)])
    values = {"num_mel_bins": np.array(8), "dft_length": np.array(16), "sample_rate": np.array(8192),
              "lower_edge_hertz": np.array(0.0, np.float32), "upper_edge_hertz": np.array(4096.0, np.float32)}
    with pytest.raises(CompileError, match="holding"):
        device_run(model, values)
    frozen = {k: values[k] for k in ("num_mel_bins", "dft_length")}
    got, _, _ = device_run(model, {k: v for k, v in values.items() if k not in frozen}, const_inputs=frozen)
    want = ort_run(model, values)["m"]
    assert got["m"].shape == want.shape == (9, 8)
    np.testing.assert_allclose(got["m"], want, atol=1e-6)


def test_stft_default_onesided_has_the_onesided_shape():
    """ONNX shape inference reads STFT's missing `onesided` as 0 (a full spectrum); the default is 1."""
    rng = np.random.default_rng(5105)
    signal = rand(rng, 1, 128, 1)
    model = make_model([helper.make_node("STFT", ["signal", "step", "", "length"], ["y"])],
                       [("signal", F32, [1, 128, 1])], [("y", F32, None)],
                       [const("step", np.array(8)), const("length", np.array(16))])
    got, _, _ = device_run(model, {"signal": signal})
    want = ort_run(model, {"signal": signal})["y"]
    assert got["y"].shape == want.shape == (1, 15, 9, 2)
    np.testing.assert_allclose(got["y"], want, atol=1e-4)


def test_dft_length_from_an_input_is_refused_with_the_input_named():
    rng = np.random.default_rng(5106)
    x = rand(rng, 1, 10, 1)
    model = make_model([helper.make_node("DFT", ["x", "n"], ["y"], inverse=1, onesided=0)],
                       [("x", F32, [1, 10, 1]), ("n", I64, [])], [("y", F32, None)], opset=20)
    with pytest.raises(CompileError, match="holding n"):
        device_run(model, {"x": x, "n": np.array(10)})


def test_scan_opset8_keeps_the_models_own_inputs():
    """The opset converter's Scan 8 -> 9 adapter drops the batch dim of the graph inputs."""
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "next"], ["sum_out"]),
         helper.make_node("Identity", ["sum_out"], ["scan_out"])], "body",
        [helper.make_tensor_value_info("sum_in", F32, [2]), helper.make_tensor_value_info("next", F32, [2])],
        [helper.make_tensor_value_info("sum_out", F32, [2]), helper.make_tensor_value_info("scan_out", F32, [2])])
    node = helper.make_node("Scan", ["", "initial", "x"], ["y", "z"], num_scan_inputs=1, body=body)
    model = make_model([node], [("initial", F32, [1, 2]), ("x", F32, [1, 3, 2])],
                       [("y", F32, [1, 2]), ("z", F32, [1, 3, 2])], opset=8)
    rng = np.random.default_rng(5107)
    feeds = {"initial": rand(rng, 1, 2), "x": rand(rng, 1, 3, 2)}
    assert_matches_ort(model, feeds, on_device=False)


def test_host_op_reading_an_alias_of_an_input_gets_a_copy():
    """nllloss `_expanded`: Unsqueeze(target) aliases the input's bytes with another shape; the host op
    reading it used to declare an overlapping program tensor (IsaError at compile time)."""
    rng = np.random.default_rng(5108)
    x = rand(rng, 3, 5)
    t = np.array([1, 4, 0], np.int64)
    nodes = [helper.make_node("Unsqueeze", ["t", "axes"], ["u"]),
             helper.make_node("GatherElements", ["x", "u"], ["g"], axis=1), helper.make_node("Neg", ["g"], ["y"])]
    model = make_model(nodes, [("x", F32, [3, 5]), ("t", I64, [3])], [("y", F32, None)],
                       [const("axes", np.array([1], np.int64))])
    assert_matches_ort(model, {"x": x, "t": t}, on_device=False)
