"""Front end: loading errors, shape binding, constant folding, If inlining, static shapes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import F32, const, make_model, ort_run, rand
from onnx import TensorProto, helper
from onnx.external_data_helper import convert_model_to_external_data

from xputools.compiler.errors import CompileError, UnsupportedError
from xputools.compiler.frontend import import_model, load_model, parse_shape_spec
from xputools.compiler.host import run_graph_reference


def _matmul_model(rng, n_in=16, n_out=8, batch="batch"):
    w = rand(rng, n_in, n_out)
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                      [("x", F32, [batch, n_in])], [("y", F32, [batch, n_out])], [const("w", w)])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ---- loading ---------------------------------------------------------------------------------------
def test_load_missing_file(tmp_path):
    with pytest.raises(CompileError) as exc:
        load_model(tmp_path / "nope.onnx")
    assert "nope.onnx: no such file" in _one_line(exc)


def test_load_directory(tmp_path):
    with pytest.raises(CompileError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("data", [b"hello world, I am not a model", b"\x89PNG\r\n\x1a\n\x00\x00",
                                  b"{\"a\": 1}"])
def test_load_not_onnx_bytes(data, tmp_path):
    with pytest.raises(CompileError) as exc:
        load_model(data)
    assert "not an ONNX model" in _one_line(exc)
    path = tmp_path / "fake.onnx"
    path.write_bytes(data)
    with pytest.raises(CompileError, match="fake.onnx: not an ONNX model"):
        load_model(path)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(CompileError, match="empty file"):
        load_model(path)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.97])
def test_load_truncated_file(fraction, tmp_path):
    rng = np.random.default_rng(9911)
    data = _matmul_model(rng, 64, 64).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CompileError) as exc:
        load_model(path)
    assert "truncated" in _one_line(exc)


def test_load_valid_model_from_path_and_bytes(tmp_path):
    rng = np.random.default_rng(2439)
    model = _matmul_model(rng)
    path = tmp_path / "ok.onnx"
    onnx.save(model, path)
    assert load_model(path).graph.node[0].op_type == "MatMul"
    assert load_model(model.SerializeToString()).graph.node[0].name == "mm"


def test_load_empty_graph():
    model = make_model([], [("x", F32, [1])], [("x", F32, [1])])
    with pytest.raises(CompileError, match="no nodes"):
        load_model(model.SerializeToString())


def test_load_checker_failure_is_one_line():
    model = make_model([helper.make_node("Relu", ["nowhere"], ["y"])], [("x", F32, [2])], [("y", F32, [2])])
    with pytest.raises(CompileError) as exc:
        load_model(model.SerializeToString())
    assert "invalid ONNX model" in _one_line(exc)
    assert "nowhere" in str(exc.value)


def test_load_external_data_present_and_missing(tmp_path):
    rng = np.random.default_rng(7855)
    model = _matmul_model(rng, 64, 64)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin",
                                   size_threshold=0)
    onnx.save(model, tmp_path / "ext.onnx")
    loaded = load_model(tmp_path / "ext.onnx")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(loaded.graph.initializer[0]), w)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(CompileError) as exc:
        load_model(tmp_path / "ext.onnx")
    assert "external data file 'weights.bin'" in _one_line(exc) and "missing" in str(exc.value)


# ---- shapes ----------------------------------------------------------------------------------------
def test_unbound_dims_error_lists_every_dim_and_how_to_bind():
    model = make_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["z"], ["t"])],
                       [("x", F32, ["batch", 3, "h", None]), ("z", F32, [2, 5])],
                       [("y", F32, None), ("t", F32, None)])
    with pytest.raises(CompileError) as exc:
        import_model(model)
    text = _one_line(exc)
    assert "input x dim 0 ('batch')" in text
    assert "input x dim 2 ('h')" in text
    assert "input x dim 3 (unnamed)" in text
    assert "--shape x=1x3x1x1" in text
    assert "input z" not in text


def test_shape_for_unknown_input_lists_inputs():
    rng = np.random.default_rng(3287)
    with pytest.raises(CompileError) as exc:
        import_model(_matmul_model(rng), {"X": (1, 16)})
    text = _one_line(exc)
    assert "'X' is not an input" in text and "inputs are: x" in text


def test_shape_for_an_initializer_says_so():
    rng = np.random.default_rng(7817)
    with pytest.raises(CompileError, match="'w' is an initializer"):
        import_model(_matmul_model(rng), {"w": (16, 8)})


def test_shape_with_wrong_rank_or_conflicting_static_dim():
    rng = np.random.default_rng(6596)
    with pytest.raises(CompileError, match="has rank 3 but input 'x' has rank 2"):
        import_model(_matmul_model(rng), {"x": (1, 16, 1)})
    with pytest.raises(CompileError, match="dim 1 is 16 in the model, not 15"):
        import_model(_matmul_model(rng), {"x": (1, 15)})


def test_dim_name_bound_once_applies_to_every_input():
    model = make_model([helper.make_node("Add", ["a", "b"], ["c"])],
                       [("a", F32, ["batch", 4]), ("b", F32, ["batch", 4])], [("c", F32, ["batch", 4])])
    graph = import_model(model, {"a": (3, 4)})
    assert graph.values["b"].shape == (3, 4) and graph.values["c"].shape == (3, 4)


def test_parse_shape_spec():
    assert parse_shape_spec("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_shape_spec("input:0=2,5") == ("input:0", (2, 5))
    assert parse_shape_spec("s=") == ("s", ())
    with pytest.raises(CompileError, match="expected NAME=DIMS"):
        parse_shape_spec("1x3")
    with pytest.raises(CompileError, match="dims must be integers"):
        parse_shape_spec("x=1xbatch")


def test_import_binds_shapes_and_keeps_static_model_unchanged():
    rng = np.random.default_rng(1317)
    graph = import_model(_matmul_model(rng), {"x": (4, 16)})
    assert graph.input_names == ["x"]
    assert graph.values["y"].shape == (4, 8)
    assert graph.values["w"].is_const and graph.values["w"].dtype == np.float32
    assert [n.name for n in graph.nodes] == ["mm"] and graph.nodes[0].origin == ["mm"]


def test_initializer_that_is_also_an_input_is_a_constant():
    rng = np.random.default_rng(2073)
    model = _matmul_model(rng, batch=2)
    model.graph.input.append(helper.make_tensor_value_info("w", F32, [16, 8]))
    graph = import_model(model)
    assert graph.input_names == ["x"] and graph.values["w"].is_const


def test_nameless_nodes_get_op_type_and_index():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"], name="neg"),
             helper.make_node("Relu", ["b"], ["y"])]
    model = make_model(nodes, [("x", F32, [2])], [("y", F32, [2])])
    assert [n.name for n in import_model(model).nodes] == ["Relu_0", "neg", "Relu_2"]


# ---- folding -----------------------------------------------------------------------------------------
def _flatten_by_shape_model():
    """y = Reshape(Relu(x), Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): the usual exported flatten."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["s0"], axis=0, name="gather"),
             helper.make_node("Unsqueeze", ["s0", "axes0"], ["s0u"], name="unsqueeze"),
             helper.make_node("Concat", ["s0u", "minus1"], ["target"], axis=0, name="concat"),
             helper.make_node("Reshape", ["r", "target"], ["y"], name="reshape")]
    inits = [const("zero", np.array(0, np.int64)), const("axes0", np.array([0], np.int64)),
             const("minus1", np.array([-1], np.int64))]
    return make_model(nodes, [("x", F32, ["N", 3, 4, 5])], [("y", F32, None)], inits)


def test_shape_subgraph_folds_into_a_constant_reshape_target():
    rng = np.random.default_rng(6824)
    model = _flatten_by_shape_model()
    graph = import_model(model, {"x": (2, 3, 4, 5)})
    assert [n.op_type for n in graph.nodes] == ["Relu", "Reshape"]
    np.testing.assert_array_equal(graph.const("target"), [2, -1])
    assert graph.values["y"].shape == (2, 60)
    x = rand(rng, 2, 3, 4, 5)
    np.testing.assert_array_equal(run_graph_reference(graph, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def _if_on_batch_model(rng):
    """If batch > 1: y = x * 2 (then), else y = Neg(x) + w (else); both branches read outer x."""
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t_out"], name="t_mul")], "then", [],
                               [helper.make_tensor_value_info("t_out", F32, None)],
                               [const("two", np.array(2.0, np.float32))])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e_neg"], name="e_neg"),
                                helper.make_node("Add", ["e_neg", "w"], ["e_out"], name="e_add")], "else", [],
                               [helper.make_tensor_value_info("e_out", F32, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0, name="gather"),
             helper.make_node("Greater", ["b", "one"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if")]
    inits = [const("zero", np.array(0, np.int64)), const("one", np.array(1, np.int64)),
             const("w", rand(rng, 3))]
    return make_model(nodes, [("x", F32, ["B", 3])], [("y", F32, ["B", 3])], inits)


@pytest.mark.parametrize("batch,expected_ops", [(2, ["Mul"]), (1, ["Neg", "Add"])])
def test_if_with_constant_condition_is_inlined(batch, expected_ops):
    rng = np.random.default_rng(4853)
    model = _if_on_batch_model(rng)
    graph = import_model(model, {"x": (batch, 3)})
    assert [n.op_type for n in graph.nodes] == expected_ops
    assert graph.nodes[-1].outputs == ["y"]
    assert graph.values["y"].shape == (batch, 3)
    x = rand(rng, batch, 3)
    want = ort_run(model, {"x": x})["y"]
    np.testing.assert_allclose(run_graph_reference(graph, {"x": x})["y"], want, rtol=1e-6)


def test_if_with_runtime_condition_stays_a_host_node():
    rng = np.random.default_rng(8756)
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F32, [3])])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F32, [3])])
    model = make_model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                       [("x", F32, [3]), ("c", TensorProto.BOOL, [])], [("y", F32, [3])])
    graph = import_model(model)
    assert [n.op_type for n in graph.nodes] == ["If"]
    assert graph.nodes[0].implicit_inputs() == ["x"]
    x = rand(rng, 3)
    for c in (True, False):
        got = run_graph_reference(graph, {"x": x, "c": np.array(c)})["y"]
        np.testing.assert_array_equal(got, -x if c else np.abs(x))


def test_constant_of_shape_range_and_cast_fold():
    rng = np.random.default_rng(4803)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["ones"],
                              value=helper.make_tensor("v", F32, [1], [1.0])),
             helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Range", ["start", "n", "step"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=F32),
             helper.make_node("Reshape", ["rf", "s"], ["rs"]),
             helper.make_node("Add", ["x", "ones"], ["a"]),
             helper.make_node("Mul", ["a", "rs"], ["y"])]
    inits = [const("start", np.array(0, np.int64)), const("step", np.array(1, np.int64))]
    model = make_model(nodes, [("x", F32, [2, 3])], [("y", F32, [2, 3])], inits)
    graph = import_model(model)
    assert [n.op_type for n in graph.nodes] == ["Add", "Mul"]
    np.testing.assert_array_equal(graph.const("rs"), np.arange(6, dtype=np.float32).reshape(2, 3))
    x = rand(rng, 2, 3)
    np.testing.assert_allclose(run_graph_reference(graph, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_dequantize_of_constant_weight_is_kept_for_int8_lowering():
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [const("wq", np.arange(8, dtype=np.int8).reshape(2, 4)), const("ws", np.array(0.5, np.float32)),
             const("wz", np.array(0, np.int8))]
    graph = import_model(make_model(nodes, [("x", F32, [1, 2])], [("y", F32, [1, 4])], inits))
    assert [n.op_type for n in graph.nodes] == ["DequantizeLinear", "MatMul"]


def test_opset_11_model_is_converted_to_13():
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]), helper.make_node("Relu", ["u"], ["y"])]
    model = make_model(nodes, [("x", F32, [3])], [("y", F32, [1, 3])], opset=11)
    graph = import_model(model)
    assert graph.opset[""] == 13
    unsqueeze = graph.nodes[0]
    assert "axes" not in unsqueeze.attrs and graph.const(unsqueeze.inputs[1]).tolist() == [0]


def test_local_functions_are_inlined():
    rng = np.random.default_rng(4638)
    fn = helper.make_function("custom", "DoubleRelu", ["a"], ["b"],
                              [helper.make_node("Relu", ["a"], ["r"]),
                               helper.make_node("Add", ["r", "r"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("DoubleRelu", ["x"], ["y"], domain="custom", name="dr")],
                       [("x", F32, [4])], [("y", F32, [4])], functions=[fn], extra_opsets=[("custom", 1)])
    graph = import_model(model)
    assert [n.op_type for n in graph.nodes] == ["Relu", "Add"]
    x = rand(rng, 4)
    np.testing.assert_allclose(run_graph_reference(graph, {"x": x})["y"], 2 * np.maximum(x, 0))


def test_shapes_inference_cannot_give_are_learned_by_a_zero_run():
    rng = np.random.default_rng(7717)
    # A Loop with a constant trip count: ONNX shape inference leaves its scan output's length unknown.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["fi"], to=F32),
         helper.make_node("Mul", ["x", "fi"], ["scan_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("scan_out", F32, None)])
    model = make_model([helper.make_node("Loop", ["trip", "cond"], ["y"], body=body, name="loop")],
                       [("x", F32, [2])], [("y", F32, None)],
                       [const("trip", np.array(3, np.int64)), const("cond", np.array(True))])
    graph = import_model(model)
    assert graph.values["y"].shape == (3, 2)
    assert any("zero inputs" in w for w in graph.warnings)
    x = rand(rng, 2)
    np.testing.assert_allclose(run_graph_reference(graph, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_data_dependent_shape_is_rejected():
    model = make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [("x", F32, [4])],
                       [("y", TensorProto.INT64, None)])
    with pytest.raises(UnsupportedError, match=r"'nz' \(NonZero\): its output shape depends on the input"):
        import_model(model)


def test_every_value_is_static_after_import():
    graph = import_model(_flatten_by_shape_model(), {"x": (1, 3, 4, 5)})
    graph.validate()
    assert all(v.is_static and v.dtype is not None for v in graph.values.values())


# ---- shapes as exporters write them ------------------------------------------------------------------
@pytest.mark.parametrize("dims", [(-1, 3, "?", "?"), (0, 3, "", "?"), (-1, 3, None, "-1")])
def test_exporter_unknown_dims_are_independent_and_bound_by_shape(dims):
    """PaddlePaddle writes [-1, 3, '?', '?']: every -1, 0, empty or '?' dim is its own unknown."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, list(dims))], [("y", F32, None)])
    graph = import_model(model, {"x": (1, 3, 4, 5)})
    assert graph.values["x"].shape == (1, 3, 4, 5) and graph.values["y"].shape == (1, 3, 4, 5)


def test_exporter_unknown_dims_unbound_are_listed():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [-1, 3, "?", "?"])],
                       [("y", F32, None)])
    with pytest.raises(CompileError) as exc:
        import_model(model)
    text = _one_line(exc)
    assert "input x dim 0" in text and "input x dim 2" in text and "input x dim 3" in text
    assert "input x dim 1" not in text and "--shape x=1x3x1x1" in text


def test_exporter_unknown_dims_keep_the_fixed_dim_error():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [-1, 3, "?", "?"])],
                       [("y", F32, None)])
    with pytest.raises(CompileError, match="input 'x' dim 1 is 3 in the model, not 4"):
        import_model(model, {"x": (1, 4, 4, 5)})


def test_exporter_unknown_dims_run_and_match_ort(tmp_path):
    from click.testing import CliRunner

    from xputools.cli import cli
    rng = np.random.default_rng(4411)
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [-1, 3, "?", "?"])],
                       [("y", F32, None)])
    onnx.save(model, tmp_path / "m.onnx")
    x = rand(rng, 1, 3, 4, 5)
    np.savez(tmp_path / "in.npz", x=x)
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "m.onnx"), "--shape", "x=1x3x4x5", "--inputs",
                                       str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["y"], ort_run(model, {"x": x})["y"])


def test_a_zero_dim_is_an_empty_tensor_unless_shape_binds_it():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2, 0, 4])], [("y", F32, None)])
    assert import_model(model).values["y"].shape == (2, 0, 4)
    assert import_model(model, {"x": (2, 3, 4)}).values["y"].shape == (2, 3, 4)
