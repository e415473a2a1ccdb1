"""Device/host placement rules and the `xpu check` report."""
from __future__ import annotations

import numpy as np
import pytest
from model_builders import F32, const, make_model, rand
from onnx import TensorProto, helper

from xputools.compiler.errors import CompileError
from xputools.compiler.frontend import import_model
from xputools.compiler.passes import run_passes
from xputools.compiler.support import DEVICE_OPS, SUPPORT_RULES, check_report, placement


def _placements(model, shapes=None, passes=False) -> dict[str, tuple[str, str]]:
    graph = import_model(model, shapes)
    if passes:
        graph = run_passes(graph)
    return {n.name: placement(n, graph) for n in graph.nodes}


def test_device_op_list_covers_the_documented_ops():
    documented = """MatMul Gemm Conv ConvTranspose Add Sub Mul Div Pow Sqrt Reciprocal Neg Abs Exp Log
    Erf Tanh Sigmoid Relu LeakyRelu Clip HardSigmoid HardSwish Gelu Softplus Max Min Sum Where Equal
    Greater Less GreaterOrEqual LessOrEqual Not And Or IsNaN Cast BatchNormalization LayerNormalization
    ReduceMean ReduceSum ReduceMax ReduceMin ReduceL2 Softmax LogSoftmax MaxPool AveragePool
    GlobalAveragePool GlobalMaxPool Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather
    Expand Pad Resize LSTM QuantizeLinear DequantizeLinear""".split()  # noqa: SIM905 - as the design lists it
    assert set(documented) <= set(DEVICE_OPS)  # lowering helpers may add ops, never drop these
    assert all(callable(SUPPORT_RULES[op]) for op in DEVICE_OPS)


def test_conv_2d_runs_on_device_and_conv_3d_falls_back():
    rng = np.random.default_rng(610)
    nodes = [helper.make_node("Conv", ["x2", "w2"], ["y2"], name="conv2d", pads=[1, 1, 1, 1], group=4),
             helper.make_node("Conv", ["x3", "w3"], ["y3"], name="conv3d")]
    model = make_model(nodes, [("x2", F32, [1, 4, 8, 8]), ("x3", F32, [1, 2, 4, 4, 4])],
                       [("y2", F32, None), ("y3", F32, None)],
                       [const("w2", rand(rng, 4, 1, 3, 3)), const("w3", rand(rng, 2, 2, 1, 1, 1))])
    where = _placements(model)
    assert where["conv2d"] == ("device", "supported")
    assert where["conv3d"][0] == "host" and "Conv 3-D is not supported" in where["conv3d"][1]


def test_float64_falls_back_with_the_dtype_named():
    model = make_model([helper.make_node("Add", ["a", "b"], ["c"], name="add64")],
                       [("a", TensorProto.DOUBLE, [4]), ("b", TensorProto.DOUBLE, [4])],
                       [("c", TensorProto.DOUBLE, None)])
    where, why = _placements(model)["add64"]
    assert where == "host" and why.startswith("dtype float64 not supported")


def test_unknown_and_custom_ops_fall_back():
    nodes = [helper.make_node("Sin", ["x"], ["v"], name="sin"),
             helper.make_node("Relu", ["v"], ["y"], name="relu")]
    model = make_model(nodes, [("x", F32, [2, 8])], [("y", F32, None)])
    where = _placements(model)
    assert where["sin"] == ("host", "op Sin is not implemented on the device")
    assert where["relu"] == ("device", "supported")


@pytest.mark.parametrize("attrs,expected", [
    ({"mode": "nearest"}, "device"),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, "device"),
    ({"mode": "cubic"}, "Resize mode 'cubic' is not supported"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     "coordinate_transformation_mode"),
])
def test_resize_modes(attrs, expected):
    model = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", **attrs)],
                       [("x", F32, [1, 2, 4, 4])], [("y", F32, None)],
                       [const("scales", np.array([1, 1, 2, 2], np.float32))])
    where, why = _placements(model)["resize"]
    assert where == expected if expected == "device" else (where == "host" and expected in why)


def test_pad_modes():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["a"], name="reflect", mode="reflect"),
             helper.make_node("Pad", ["x", "pads"], ["b"], name="wrap", mode="wrap")]
    model = make_model(nodes, [("x", F32, [1, 2, 4, 4])], [("a", F32, None), ("b", F32, None)],
                       [const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], opset=19)
    where = _placements(model)
    assert where["reflect"][0] == "device"
    assert where["wrap"] == ("host", "Pad mode 'wrap' is not supported (supported: constant, edge, reflect)")


def _lstm_model(rng, direction="forward", peepholes=False):
    dirs = 2 if direction == "bidirectional" else 1
    ins = ["x", "W", "R", "B", "", "", ""] + (["P"] if peepholes else [])
    inits = [const("W", rand(rng, dirs, 16, 3)), const("R", rand(rng, dirs, 16, 4)),
             const("B", rand(rng, dirs, 32)), const("P", rand(rng, dirs, 12))]
    return make_model([helper.make_node("LSTM", ins, ["Y"], name="lstm", hidden_size=4, direction=direction)],
                      [("x", F32, [5, 2, 3])], [("Y", F32, None)], inits)


def test_lstm_directions_and_peepholes():
    rng = np.random.default_rng(5088)
    assert _placements(_lstm_model(rng, "bidirectional"))["lstm"] == ("device", "supported")
    assert _placements(_lstm_model(rng, "reverse"))["lstm"] == ("device", "supported")
    where, why = _placements(_lstm_model(rng, peepholes=True))["lstm"]
    assert where == "host" and "peepholes" in why


def test_reduce_with_runtime_axes_needs_them_frozen_and_int_mean_runs_on_host():
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], name="sum_runtime_axes")]
    inputs = [("x", F32, [2, 3]), ("axes", TensorProto.INT64, [1])]
    model = make_model(nodes, inputs, [("s", F32, None)])
    with pytest.raises(CompileError, match="--const-inputs .* axes"):
        import_model(model)
    frozen = run_passes(import_model(model, frozen={"axes": np.array([1], np.int64)}))
    assert frozen.values["s"].shape == (2, 1)
    nodes = [helper.make_node("ReduceMean", ["i"], ["m"], name="mean_int", axes=[1])]
    model = make_model(nodes, [("i", TensorProto.INT32, [2, 3])], [("m", TensorProto.INT32, None)])
    where = _placements(model)
    assert where["mean_int"][0] == "host" and "float only" in where["mean_int"][1]


def test_check_report_numbers_on_a_tiny_model():
    rng = np.random.default_rng(4662)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Mod", ["r", "d"], ["y"], name="mod", fmod=1)]
    inits = [const("w", rand(rng, 8, 4)), const("b", rand(rng, 4)), const("d", np.array([[2.0], [3.0]], np.float32))]
    outputs = [("y", F32, None)]
    model = make_model(nodes, [("x", F32, [2, 8])], outputs, inits)
    graph = run_passes(import_model(model))
    report = check_report(graph, "xpu1")
    rows = {r["name"]: r for r in report["nodes"]}
    assert list(rows) == ["fc", "mod"]
    fc = rows["fc"]
    assert (fc["where"], fc["op_type"], fc["output_shape"]) == ("device", "MatMul", [2, 4])
    assert fc["flops"] == 2 * 2 * 4 * 8 + 8 + 8  # matmul + bias + fused activation
    assert fc["weight_bytes"] == 8 * 4 * 4 + 4 * 4
    assert fc["fused"] == ["m", "a"] and fc["origin"] == ["fc", "bias", "relu"]
    assert fc["fused_activation"] == "Relu"
    assert fc["working_set_bytes"] == (2 * 8 + 8 * 4 + 4 + 2 * 4) * 4
    assert rows["mod"]["where"] == "host" and rows["mod"]["weight_bytes"] == 8
    assert report["counts"] == {"device": {"MatMul": 1}, "host": {"Mod": 1},
                                "total": {"device": 1, "host": 1}}
    assert report["total_weight_bytes"] == 8 * 4 * 4 + 4 * 4 + 8
    assert report["sbuf"] == {"capacity_bytes": 128 * 192 * 1024, "largest_node": "fc",
                              "largest_working_set_bytes": fc["working_set_bytes"], "fits_untiled": True}
    assert report["all_on_device"] is False
    assert report["host_nodes"] == [{"name": "mod", "op_type": "Mod",
                                     "why": "op Mod is not implemented on the device"}]
    edge = check_report(graph, "xpu1-edge")
    assert edge["sbuf"]["capacity_bytes"] < report["sbuf"]["capacity_bytes"]
