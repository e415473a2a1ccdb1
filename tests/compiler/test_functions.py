"""ONNX function expansion (compiler/functions.py): composite ops the device lacks run as their
function bodies on the device, match onnx's reference evaluator, and keep their names and origins;
nodes whose body cannot run on the device stay as they were."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from xputools.cli import cli
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import check_model, compile_model
from xputools.compiler.frontend import import_model
from xputools.compiler.outputs import onnx_outputs
from xputools.runtime import run_program


def _model(nodes, inputs: dict[str, np.ndarray], outputs: list[str], opset: int, initializers=None):
    initializers = initializers or {}
    graph = helper.make_graph(
        nodes, "f",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _run_on_device(model, feeds):
    compiled = compile_model(model, CompileOptions())
    prog = compiled.program
    return onnx_outputs(prog, run_program(prog, feeds).outputs), compiled


def _assert_device_matches_reference(model, feeds, rtol=1e-5, atol=1e-6):
    got, compiled = _run_on_device(model, feeds)
    assert not compiled.program.host_ops, [h.op_type for h in compiled.program.host_ops]
    names = [o.name for o in model.graph.output]
    want = ReferenceEvaluator(model).run(None, feeds)
    for name, ref in zip(names, want):
        assert got[name].shape == ref.shape
        np.testing.assert_allclose(got[name].astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=name)
    return compiled


def test_rms_normalization_runs_on_the_device():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    scale = rng.standard_normal(16).astype(np.float32)
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], name="rms", epsilon=1e-5)
    compiled = _assert_device_matches_reference(_model([node], {"x": x}, ["y"], 23, {"scale": scale}), {"x": x})
    assert {n.expanded_from for n in compiled.graph.nodes} == {"RMSNormalization"}
    assert all(n.origin == ["rms"] and n.name.startswith("rms/") for n in compiled.graph.nodes)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_runs_on_the_device(causal):
    rng = np.random.default_rng(2 + causal)
    q = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    v = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn", is_causal=causal)
    feeds = {"q": q, "k": k, "v": v}
    compiled = _assert_device_matches_reference(_model([node], feeds, ["y"], 23), feeds)
    ops = {n.op_type for n in compiled.graph.nodes}
    assert "MatMul" in ops and "Softmax" in ops and "Attention" not in ops


def test_reduce_l1_runs_on_the_device():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    node = helper.make_node("ReduceL1", ["x", "axes"], ["y"], name="l1", keepdims=0)
    model = _model([node], {"x": x}, ["y"], 18, {"axes": np.array([1], np.int64)})
    compiled = _assert_device_matches_reference(model, {"x": x})
    assert sorted(n.op_type for n in compiled.graph.nodes) == ["Abs", "ReduceSum"]


def test_elu_without_alpha_takes_the_schema_default():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6)).astype(np.float32) * 3
    nodes = [helper.make_node("Elu", ["x"], ["t"], name="e_default"),  # alpha omitted: 1.0
             helper.make_node("Elu", ["t"], ["y"], name="e_half", alpha=0.5)]
    model = _model(nodes, {"x": x}, ["y"], 22)
    _assert_device_matches_reference(model, {"x": x})
    graph = import_model(model)
    assert graph.const("e_default/AlphaCast") == np.float32(1.0)
    assert graph.const("e_half/AlphaCast") == np.float32(0.5)


def test_two_nodes_of_one_op_get_unique_names_and_keep_their_outputs():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    # two unnamed Elu nodes, a model tensor and a node already called like the first body's inner ones
    nodes = [helper.make_node("Elu", ["x"], ["Elu_0/ExpX"]),
             helper.make_node("Elu", ["Elu_0/ExpX"], ["t"]),
             helper.make_node("Relu", ["t"], ["y"], name="Elu_0/Exp")]
    model = _model(nodes, {"x": x}, ["y"], 22)
    graph = import_model(model)
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))
    produced = [o for n in graph.nodes for o in n.outputs if o]
    assert len(produced) == len(set(produced))
    assert "Elu_0/ExpX" in produced and "y" in produced  # the nodes' outputs keep their names
    assert {tuple(n.origin) for n in graph.nodes} == {("Elu_0",), ("Elu_1",), ("Elu_0/Exp",)}
    _assert_device_matches_reference(model, {"x": x})


def test_castlike_becomes_a_device_cast():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    like = np.zeros((1,), np.float16)
    node = helper.make_node("CastLike", ["x", "like"], ["y"], name="cl")
    compiled = _assert_device_matches_reference(_model([node], {"x": x, "like": like}, ["y"], 21),
                                                {"x": x, "like": like}, rtol=0, atol=0)
    assert [n.op_type for n in compiled.graph.nodes] == ["Cast"]


def test_a_body_with_control_flow_stays_on_the_host():
    # AffineGrid-20's body holds an If: the node is not expanded and falls back to the host
    rng = np.random.default_rng(8)
    theta = rng.standard_normal((2, 2, 3)).astype(np.float32)
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="grid", align_corners=1)
    model = _model([node], {"theta": theta}, ["grid"], 20, {"size": np.array([2, 3, 4, 5], np.int64)})
    got, compiled = _run_on_device(model, {"theta": theta})
    assert [n.op_type for n in compiled.graph.nodes] == ["AffineGrid"]
    (row,) = check_model(model)["nodes"]
    assert row["where"] == "host" and row["why"].endswith("its ONNX function body was not used: its body holds If")
    assert [h.op_type for h in compiled.program.host_ops] == ["AffineGrid"]
    np.testing.assert_allclose(got["grid"], ReferenceEvaluator(model).run(None, {"theta": theta})[0], rtol=1e-6)


def test_a_body_that_would_still_need_the_host_is_not_expanded():
    # float64 is no device dtype: every op of Elu's body would fall back, so Elu stays one host node
    x = np.random.default_rng(9).standard_normal((2, 3))
    model = _model([helper.make_node("Elu", ["x"], ["y"], name="e64")], {"x": x}, ["y"], 22)
    graph = import_model(model)
    assert [(n.name, n.op_type, n.expanded_from) for n in graph.nodes] == [("e64", "Elu", "")]
    assert graph.nodes[0].body_problem.endswith("in its body runs on the host")


def test_device_nodes_and_unknown_bodies_are_left_alone():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="clip"),  # constant bounds: a device op
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = _model(nodes, {"x": x}, ["y"], 17, {"lo": np.float32(-0.5), "hi": np.float32(0.5)})
    graph = import_model(model)
    assert [(n.name, n.op_type, n.expanded_from) for n in graph.nodes] == [("clip", "Clip", ""),
                                                                          ("relu", "Relu", "")]


def test_clip_with_run_time_bounds_runs_on_the_device():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    lo, hi = np.float32(-0.3), np.float32(0.4)
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")
    feeds = {"x": x, "lo": np.array(lo), "hi": np.array(hi)}
    _assert_device_matches_reference(_model([node], feeds, ["y"], 13), feeds, rtol=0, atol=0)


def test_check_reports_the_expanded_nodes(tmp_path):
    x = np.zeros((2, 3), np.float32)
    model = _model([helper.make_node("Elu", ["x"], ["y"], name="act")], {"x": x}, ["y"], 22)
    report = check_model(model)
    assert report["expanded"] == [{"name": "act", "op_type": "Elu", "nodes": len(report["nodes"])}]
    assert all(r["expanded_from"] == "Elu" and r["where"] == "device" for r in report["nodes"])
    path = tmp_path / "elu.onnx"
    onnx.save(model, path)
    text = CliRunner().invoke(cli, ["check", str(path)], catch_exceptions=False)
    assert text.exit_code == 0
    assert "expanded into primitive ops (ONNX function bodies, rewrites): act (Elu, " in text.output
    assert "(from Elu act)" in text.output
    as_json = CliRunner().invoke(cli, ["check", str(path), "--json"], catch_exceptions=False)
    assert json.loads(as_json.output)["expanded"][0]["op_type"] == "Elu"


def test_accuracy_tool_names_the_onnx_node_of_an_expanded_output():
    from xputools.accuracy.graphinfo import graph_tensors

    x = np.zeros((2, 3), np.float32)
    model = _model([helper.make_node("Elu", ["x"], ["y"], name="act")], {"x": x}, ["y"], 22)
    compiled = compile_model(model, CompileOptions())
    (info,) = graph_tensors(model, compiled.graph, compiled.program)
    assert info.name == "y" and info.engine == "device" and info.nodes == ["act"]


def test_keep_names_the_onnx_node_of_an_expanded_body():
    from xputools.compiler.precision import node_compute_dtype, unmatched_keep_patterns

    rng = np.random.default_rng(12)
    feeds = {n: rng.standard_normal((1, 2, 4, 8)).astype(np.float32) for n in ("q", "k", "v")}
    model = _model([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")], feeds, ["y"], 23)
    compiled = compile_model(model, CompileOptions(precision="bf16", keep=[("attn", "fp32")]))
    assert compiled.unmatched_keep == []
    matmuls = [n for n in compiled.graph.nodes if n.op_type == "MatMul"]
    assert len(matmuls) == 2
    assert all(node_compute_dtype(n, "bf16", [("attn", "fp32")]) == "f32" for n in matmuls)
    assert unmatched_keep_patterns([("nothing", "fp32")], compiled.graph.nodes) == ["nothing"]


def test_a_body_op_must_mean_the_same_at_the_models_opset():
    from xputools.compiler.functions import same_meaning

    # ReduceMean's axes moved from an attribute to an input at opset 18
    assert not same_meaning(helper.make_node("ReduceMean", ["x"], ["y"], axes=[1]), "", 13, 18)
    assert not same_meaning(helper.make_node("ReduceMean", ["x", "axes"], ["y"]), "", 18, 13)
    # without axes both reduce everything; Min only gained types; Cast gained an attribute it does not use
    assert same_meaning(helper.make_node("ReduceMean", ["x"], ["y"]), "", 13, 18)
    assert same_meaning(helper.make_node("Min", ["a", "b", "c"], ["y"]), "", 11, 13)
    assert same_meaning(helper.make_node("Cast", ["x"], ["y"], to=1), "", 13, 21)
    assert not same_meaning(helper.make_node("Cast", ["x"], ["y"], to=1, saturate=0), "", 21, 13)
    # GroupNormalization's scale changed from per group to per channel at 21 (same inputs)
    assert not same_meaning(helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2), "", 18, 21)
