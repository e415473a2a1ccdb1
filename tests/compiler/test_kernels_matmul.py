"""MatMul and Gemm on the emulated XPU against ONNX Runtime, and how they use the device."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run
from device_util import cosine as _cosine
from device_util import seeded_rand as _rand
from onnx import helper, numpy_helper

from device_model.arch import load_arch
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model


def _model(nodes, inputs: dict, inits: dict, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(k, 1, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _ops(prog, op):
    return [i for i in prog.instrs if i.op == op]


# ---- MatMul --------------------------------------------------------------------------------------

SHAPES_2D = [
    ((3, 200), (200, 130)),     # odd sizes, K over two tiles
    ((130, 300), (300, 600)),   # M > 128, K > 256, N > 512
    ((1, 64), (64, 10)),
    ((64, 33), (33, 700)),      # ragged K inside one tile, two N tiles
    ((96, 64), (64, 64)),       # whole 32x32 blocks only
]


@pytest.mark.parametrize("a_shape,b_shape", SHAPES_2D)
def test_matmul_2d_of_two_activations(a_shape, b_shape):
    a, b = _rand(*a_shape), _rand(*b_shape)
    assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b})


@pytest.mark.parametrize("a_shape,b_shape", SHAPES_2D[:3])
def test_matmul_with_constant_weight(a_shape, b_shape):
    a = _rand(*a_shape)
    assert_matches_ort(one_node_model("MatMul", {"a": a}, ["y"], {"b": _rand(*b_shape)}), {"a": a})


def test_matmul_with_constant_left_operand():
    b = _rand(2, 40, 30)
    m = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"b": b}, {"a": _rand(2, 50, 40)})
    assert_matches_ort(m, {"b": b})


@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 3, 40, 70), (3, 70, 20)),      # B broadcast over the outer batch dim
    ((2, 4, 16, 16), (2, 4, 16, 16)),   # attention-sized, many matrices per load
    ((5, 1, 8, 24), (1, 3, 24, 8)),     # both operands broadcast
    ((2, 130, 40), (40, 50)),           # weight shared by the batch: rows folded into M
    ((3, 64, 48), (3, 48, 300)),        # one batch matrix per group (N too wide to share)
])
def test_batched_and_broadcast_matmul(a_shape, b_shape):
    a, b = _rand(*a_shape), _rand(*b_shape)
    assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b})


@pytest.mark.parametrize("a_shape,b_shape", [((70,), (3, 70, 20)), ((4, 5, 70), (70,)), ((70,), (70,)),
                                             ((33,), (33, 9))])
def test_matmul_with_1d_operands(a_shape, b_shape):
    a, b = _rand(*a_shape), _rand(*b_shape)
    assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b})


def test_float16_matmul_is_cast_in_the_dma():
    a, b = _rand(20, 30).astype(np.float16), _rand(30, 40).astype(np.float16)
    got, prog = assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b},
                                   rtol=1e-2, atol=1e-2)
    assert got["y"].dtype == np.float16
    assert all(i.operands["mov"].dtype == "f32" for i in _ops(prog, "matmul"))


def test_activation_operand_is_transposed_by_blocks_not_element_by_element():
    a, b = _rand(128, 128), _rand(128, 64)
    _, prog = assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b})
    assert len(_ops(prog, "transpose32")) == 1
    assert not _ops(prog, "transpose")  # the PE only multiplies
    loads = [i for i in _ops(prog, "dma_copy") if i.operands["src"].space == "hbm"]
    assert all(i.operands["src"].dims[-1] in ((1, 32), (1, 64 * 128), (1, 128 * 64)) for i in loads)


def test_small_batched_matrices_share_loads_and_stores():
    a, b = _rand(2, 4, 16, 16), _rand(2, 4, 16, 16)
    _, prog = assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b})
    assert len(_ops(prog, "matmul")) == 8
    stores = [i for i in _ops(prog, "dma_copy") if i.operands["dst"].space == "hbm"]
    assert len(stores) == 1


def test_matmul_tiles_follow_a_smaller_arch():
    a, b = _rand(130, 70), _rand(70, 50)
    _, prog = assert_matches_ort(one_node_model("MatMul", {"a": a, "b": b}, ["y"]), {"a": a, "b": b},
                                 arch=load_arch("xpu1-edge"))
    for mm in _ops(prog, "matmul"):
        assert mm.operands["stat"].pcount <= 32 and mm.operands["stat"].free_size <= 32


# ---- Gemm ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (), (40,), (1, 40), (7, 1), (7, 40)])
def test_gemm_attributes_with_constant_weight(trans_a, trans_b, c_shape):
    a = _rand(*((70, 7) if trans_a else (7, 70)))
    inits = {"b": _rand(*((40, 70) if trans_b else (70, 40)))}
    if c_shape is not None:
        inits["c"] = _rand(*c_shape)
    m = one_node_model("Gemm", {"a": a}, ["y"], inits, transA=trans_a, transB=trans_b, alpha=0.75, beta=1.5)
    assert_matches_ort(m, {"a": a})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_all_operands_computed_at_run_time(trans_b):
    a, c = _rand(45, 70), _rand(45, 140)
    b = _rand(*((140, 70) if trans_b else (70, 140)))
    m = one_node_model("Gemm", {"a": a, "b": b, "c": c}, ["y"], transB=trans_b, alpha=-0.5, beta=0.25)
    assert_matches_ort(m, {"a": a, "b": b, "c": c})


def test_gemm_constant_transposed_weight_is_rearranged_at_compile_time():
    a = _rand(64, 96)
    m = one_node_model("Gemm", {"a": a}, ["y"], {"b": _rand(80, 96), "c": _rand(80)}, transB=1)
    _, prog = assert_matches_ort(m, {"a": a})
    weight, = [t for t in prog.tensors if t.kind == "const" and tuple(t.shape) == (96, 80)]  # K-major
    weight_loads = [i for i in _ops(prog, "dma_copy")
                    if i.operands["src"].space == "hbm" and i.operands["src"].offset == weight.offset]
    assert len(weight_loads) == 1 and weight_loads[0].operands["src"].dims == ((1, 96 * 80),)


def test_gemm_batch_one_classifier():
    x = _rand(1, 32)
    model = one_node_model("Gemm", {"x": x}, ["y"], {"w": _rand(10, 32), "b": _rand(10)}, transB=1)
    assert_matches_ort(model, {"x": x})


# ---- fused epilogues -----------------------------------------------------------------------------

@pytest.mark.parametrize("act,attrs", [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}),
                                       ("LeakyRelu", {"alpha": 0.2}),
                                       ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {})])
def test_matmul_add_activation_fuse_into_one_node(act, attrs):
    x = _rand(2, 5, 40)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["a"]),
             helper.make_node(act, ["a"], ["y"], **attrs)]
    model = _model(nodes, {"x": x}, {"w": _rand(40, 30, scale=0.3), "bias": _rand(30)})
    compiled = compile_model(model, CompileOptions())
    fused = [n for n in compiled.graph.nodes if n.op_type == "MatMul"]
    assert len(compiled.graph.nodes) == 1 and fused[0].attrs["fused_activation"]["name"] == act
    assert_matches_ort(model, {"x": x})


def test_gemm_with_clip_and_gelu_epilogues():
    x = _rand(5, 40)
    clip = _model([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, alpha=0.7),
                   helper.make_node("Clip", ["g", "lo"], ["y"])], {"x": x},
                  {"w": _rand(30, 40), "b": _rand(30), "lo": np.array(-0.5, np.float32)})
    assert_matches_ort(clip, {"x": x})
    gelu = _model([helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Gelu", ["g"], ["y"])],
                  {"x": x}, {"w": _rand(40, 30, scale=0.2), "b": _rand(30)}, opset=20)
    gelu.ir_version = 9
    assert_matches_ort(gelu, {"x": x})


# ---- reduced precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("a_shape,b_shape", [((2, 130, 300), (300, 600)), ((4, 32, 48), (4, 48, 32))])
def test_bf16_matmul_is_close_and_feeds_the_pe_bf16(a_shape, b_shape):
    a, b = _rand(*a_shape), _rand(*b_shape)
    model = one_node_model("MatMul", {"a": a, "b": b}, ["y"])
    got, prog, _ = device_run(model, {"a": a, "b": b}, "bf16")
    assert _cosine(got["y"], ort_run(model, {"a": a, "b": b})["y"]) >= 0.999
    for mm in _ops(prog, "matmul"):
        assert mm.operands["stat"].dtype == mm.operands["mov"].dtype == "bf16"


def test_bf16_gemm_weights_are_stored_in_bf16():
    x = _rand(8, 64)
    model = one_node_model("Gemm", {"x": x}, ["y"], {"w": _rand(64, 48), "b": _rand(48)})
    got, prog, _ = device_run(model, {"x": x}, "bf16")
    assert _cosine(got["y"], ort_run(model, {"x": x})["y"]) >= 0.999
    assert any(t.kind == "const" and t.dtype == "bf16" and tuple(t.shape) == (64, 48) for t in prog.tensors)


def test_int8_compute_dtype_runs_unquantized_matmul_in_bf16():
    a = _rand(16, 64)
    model = one_node_model("MatMul", {"a": a}, ["y"], {"b": _rand(64, 24)})
    got, prog, _ = device_run(model, {"a": a}, "fp32", keep=[("matmul0", "int8")])
    assert _cosine(got["y"], ort_run(model, {"a": a})["y"]) >= 0.999
    assert {mm.operands["mov"].dtype for mm in _ops(prog, "matmul")} == {"bf16"}
