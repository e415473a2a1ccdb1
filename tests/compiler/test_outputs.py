"""Outputs come back in the model's ONNX dtypes, whatever characters the output names hold."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.outputs import onnx_output_dtype, onnx_outputs
from xputools.runtime import run_program

ODD = "y:0,score"  # the separators of the old "name:dtype,..." encoding


def test_output_dtypes_survive_names_with_separators():
    graph = helper.make_graph(
        [helper.make_node("Greater", ["x", "t"], [ODD]), helper.make_node("Relu", ["x"], ["r,1:f"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(ODD, TensorProto.BOOL, [2, 3]),
         helper.make_tensor_value_info("r,1:f", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    program = compile_model(model, CompileOptions()).program
    assert onnx_output_dtype(program, ODD) == np.dtype(bool)
    assert onnx_output_dtype(program, "r,1:f") == np.dtype(np.float32)
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((2, 3), dtype=np.float32), rng.standard_normal((2, 3), dtype=np.float32)
    out = onnx_outputs(program, run_program(program, {"x": x, "t": t}).outputs)
    assert out[ODD].dtype == np.dtype(bool) and np.array_equal(out[ODD], x > t)
    np.testing.assert_array_equal(out["r,1:f"], np.maximum(x, 0))


def test_a_program_without_the_record_reports_its_device_dtypes():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    program = compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).program
    program.meta["onnx_dtypes"] = "not json"
    assert onnx_output_dtype(program, "y") == np.dtype(np.float32)
