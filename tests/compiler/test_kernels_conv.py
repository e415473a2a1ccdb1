"""Conv and ConvTranspose on the emulated XPU against ONNX Runtime, and how they use the device."""
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
from xputools.compiler.frontend import import_model
from xputools.compiler.support import placement


def _model(nodes, x: np.ndarray, inits: dict) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", 1, x.shape)],
                          [helper.make_tensor_value_info("y", 1, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _conv_model(op, x, w_shape, bias: bool, **attrs):
    inits = {"w": _rand(*w_shape, scale=0.5)}
    if bias:
        out_channels = w_shape[0] if op == "Conv" else w_shape[1] * attrs.get("group", 1)
        inits["b"] = _rand(out_channels)
    return one_node_model(op, {"x": x}, ["y"], inits, **attrs)


def _ops(prog, op):
    return [i for i in prog.instrs if i.op == op]


# ---- Conv ----------------------------------------------------------------------------------------

CONVS = [  # (input shape, weight shape, bias, attributes)
    ((1, 3, 8, 8), (4, 3, 3, 3), False, {}),
    ((2, 3, 9, 7), (5, 3, 3, 3), True, dict(pads=[1, 1, 1, 1])),                       # batch 2, odd sizes
    ((1, 16, 16, 16), (32, 16, 3, 3), True, dict(pads=[2, 2, 2, 2], strides=[2, 2], dilations=[2, 2])),
    ((1, 8, 10, 10), (6, 4, 3, 3), False, dict(group=2, pads=[0, 1, 2, 1])),             # groups, uneven pads
    ((2, 16, 12, 12), (16, 1, 3, 3), True, dict(group=16, pads=[1, 1, 1, 1])),            # depthwise
    ((1, 160, 6, 6), (160, 1, 3, 3), True, dict(group=160, strides=[2, 2])),             # depthwise > 128
    ((1, 6, 7, 7), (12, 2, 3, 3), True, dict(group=3, pads=[1, 1, 1, 1], strides=[2, 1])),
    ((2, 200, 5, 5), (140, 200, 1, 1), True, {}),                                       # 1x1, >128 channels
    ((1, 3, 40, 40), (8, 3, 3, 3), True, dict(pads=[1, 1, 1, 1])),                        # several row blocks
    ((1, 3, 11, 11), (4, 3, 3, 3), False, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 11, 11), (4, 3, 4, 4), False, dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    ((1, 3, 11, 11), (4, 3, 3, 2), True, dict(auto_pad="VALID", strides=[3, 2])),
    ((1, 3, 2, 600), (4, 3, 1, 3), False, dict(pads=[0, 1, 0, 1])),                      # rows > one tile
    ((1, 3, 23, 23), (8, 3, 7, 7), True, dict(pads=[3, 3, 3, 3], strides=[2, 2])),        # strided stem
    ((2, 300, 4, 4), (2, 150, 3, 3), False, dict(group=2, pads=[1, 1, 1, 1])),            # groups > 128 ch
]


@pytest.mark.parametrize("x_shape,w_shape,bias,attrs", CONVS)
def test_conv2d_matches_ort(x_shape, w_shape, bias, attrs):
    x = _rand(*x_shape)
    assert_matches_ort(_conv_model("Conv", x, w_shape, bias, **attrs), {"x": x})


@pytest.mark.parametrize("x_shape,w_shape,bias,attrs", [
    ((2, 4, 30), (6, 4, 5), True, dict(pads=[2, 1], strides=[2])),
    ((1, 6, 50), (6, 2, 3), False, dict(group=3, dilations=[3])),
    ((1, 8, 17), (8, 1, 4), True, dict(group=8, auto_pad="SAME_UPPER")),
])
def test_conv1d_matches_ort(x_shape, w_shape, bias, attrs):
    x = _rand(*x_shape)
    assert_matches_ort(_conv_model("Conv", x, w_shape, bias, **attrs), {"x": x})


def test_few_input_channels_contract_over_taps_in_one_matmul():
    x = _rand(1, 3, 32, 32)
    _, prog = assert_matches_ort(_conv_model("Conv", x, (16, 3, 3, 3), True, pads=[1, 1, 1, 1]), {"x": x})
    matmuls = _ops(prog, "matmul")
    assert len(matmuls) == 2  # two PSUM tiles of 512 pixels, all 27 (channel, tap) pairs each
    assert all(mm.operands["stat"].pcount == 27 for mm in matmuls)


def test_depthwise_groups_share_a_block_diagonal_matmul():
    x = _rand(1, 64, 8, 8)
    _, prog = assert_matches_ort(_conv_model("Conv", x, (64, 1, 3, 3), False, group=64, pads=[1, 1, 1, 1]),
                                 {"x": x})
    matmuls = _ops(prog, "matmul")
    assert len(matmuls) == 9 and all(mm.operands["stat"].free_size == 64 for mm in matmuls)


def test_large_image_is_tiled_in_bands_of_rows():
    x = _rand(1, 8, 64, 64)
    _, prog = assert_matches_ort(_conv_model("Conv", x, (8, 8, 3, 3), True, pads=[1, 1, 1, 1]), {"x": x})
    loads = [i for i in _ops(prog, "dma_copy")
             if i.operands["src"].space == "hbm" and i.operands["dst"].pcount == 8]
    assert len(loads) > 1
    assert all(mm.operands["mov"].free_size <= 512 for mm in _ops(prog, "matmul"))


def test_conv_tiles_follow_a_smaller_arch():
    x = _rand(2, 40, 9, 9)
    _, prog = assert_matches_ort(_conv_model("Conv", x, (36, 40, 3, 3), True, pads=[1, 1, 1, 1]), {"x": x},
                                 arch=load_arch("xpu1-edge"))
    assert all(mm.operands["stat"].pcount <= 32 for mm in _ops(prog, "matmul"))


@pytest.mark.parametrize("op,w_shape,attrs", [
    ("Conv", (4, 6, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("Conv", (6, 2, 3, 3), dict(group=3, strides=[2, 2])),
    ("ConvTranspose", (6, 2, 2, 2), dict(strides=[2, 2], group=3)),
    ("ConvTranspose", (6, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
])
def test_weight_computed_at_run_time_by_dequantize(op, w_shape, attrs):
    rng = np.random.default_rng(7)
    x = _rand(2, 6, 7, 7)
    wq = rng.integers(-127, 128, w_shape).astype(np.int8)
    cout = w_shape[0] if op == "Conv" else w_shape[1] * attrs.get("group", 1)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),
             helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)]
    model = _model(nodes, x, {"wq": wq, "s": np.array(0.02, np.float32), "b": _rand(cout)})
    _, prog = assert_matches_ort(model, {"x": x}, on_device=False)
    assert not {"Conv", "ConvTranspose"} & {h.op_type for h in prog.host_ops}


@pytest.mark.parametrize("op,w_shape,attrs", [("Conv", (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
                                              ("ConvTranspose", (3, 4, 3, 3), dict(strides=[2, 2]))])
def test_weight_and_bias_given_as_graph_inputs_run_on_the_device(op, w_shape, attrs):
    feeds = {"x": _rand(2, 3, 6, 6), "w": _rand(*w_shape), "b": _rand(4)}
    assert_matches_ort(one_node_model(op, feeds, ["y"], **attrs), feeds)


# ---- ConvTranspose -------------------------------------------------------------------------------

CONV_TRANSPOSES = [
    ((1, 32, 8, 8), (32, 16, 2, 2), True, dict(strides=[2, 2])),
    ((2, 4, 5, 6), (4, 3, 3, 3), True, dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ((1, 4, 5, 6), (4, 3, 3, 3), False, dict(strides=[3, 2], pads=[0, 1, 2, 0], dilations=[2, 1])),
    ((1, 4, 5, 6), (4, 2, 3, 3), True, dict(strides=[2, 2], group=2)),
    ((1, 4, 5, 5), (4, 2, 3, 3), False, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 4, 5, 5), (4, 2, 3, 3), False, dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 4, 5, 5), (4, 2, 3, 3), False, dict(strides=[2, 2], output_shape=[8, 8])),
    ((1, 4, 5, 5), (4, 2, 1, 1), True, dict(strides=[3, 3])),                            # phases without taps
    ((1, 3, 6, 6), (3, 5, 3, 3), True, dict(pads=[1, 1, 1, 1])),                         # stride 1
    ((1, 140, 3, 3), (140, 130, 2, 2), False, dict(strides=[2, 2])),                     # > 128 channels
    ((2, 4, 9), (4, 3, 4), True, dict(strides=[2], pads=[1, 1])),                         # 1-D
]


@pytest.mark.parametrize("x_shape,w_shape,bias,attrs", CONV_TRANSPOSES)
def test_conv_transpose_matches_ort(x_shape, w_shape, bias, attrs):
    x = _rand(*x_shape)
    assert_matches_ort(_conv_model("ConvTranspose", x, w_shape, bias, **attrs), {"x": x})


def test_conv_transpose_spends_no_multiply_on_inserted_zeros():
    x = _rand(1, 32, 16, 16)
    model = _conv_model("ConvTranspose", x, (32, 16, 2, 2), True, strides=[2, 2])
    _, prog = assert_matches_ort(model, {"x": x})
    columns = sum(mm.operands["mov"].free_size for mm in _ops(prog, "matmul"))
    assert columns == 4 * 16 * 16  # one tap per output pixel (stride = kernel)


# ---- fused epilogues -----------------------------------------------------------------------------

def _relu_chain(op, w, b, **attrs):
    return [helper.make_node(op, ["x", w, b], ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])]


@pytest.mark.parametrize("nodes,inits", [
    (_relu_chain("Conv", "w", "b", pads=[1, 1, 1, 1]), {"w": _rand(6, 8, 3, 3), "b": _rand(6)}),
    ([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
      helper.make_node("BatchNormalization", ["c", "s", "bi", "mu", "var"], ["d"]),
      helper.make_node("Clip", ["d", "lo", "hi"], ["y"])],
     {"w": _rand(6, 8, 3, 3), "s": _rand(6), "bi": _rand(6), "mu": _rand(6), "var": np.abs(_rand(6)) + 0.5,
      "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}),
    ([helper.make_node("Conv", ["x", "w"], ["c"], group=2), helper.make_node("Add", ["c", "bb"], ["d"]),
      helper.make_node("HardSigmoid", ["d"], ["y"], alpha=0.3, beta=0.4)],
     {"w": _rand(6, 4, 1, 1), "bb": _rand(1, 6, 1, 1)}),
    ([helper.make_node("Conv", ["x", "w", "b"], ["c"], group=8), helper.make_node("HardSwish", ["c"], ["y"])],
     {"w": _rand(8, 1, 1, 1), "b": _rand(8)}),
    ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2]),
      helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2)], {"w": _rand(8, 3, 2, 2), "b": _rand(3)}),
    ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2]),
      helper.make_node("Sigmoid", ["c"], ["y"])],
     {"w": _rand(8, 3, 3, 3), "b": _rand(3)}),
])
def test_fused_bias_and_activation(nodes, inits):
    x = _rand(2, 8, 9, 9)
    model = _model(nodes, x, inits)
    compiled = compile_model(model, CompileOptions())
    assert len(compiled.graph.nodes) == 1 and "fused_activation" in compiled.graph.nodes[0].attrs
    assert_matches_ort(model, {"x": x})


# ---- reduced precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("op,x_shape,w_shape,attrs", [
    ("Conv", (2, 16, 12, 12), (24, 16, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("Conv", (1, 32, 10, 10), (32, 1, 3, 3), dict(group=32, pads=[1, 1, 1, 1])),
    ("Conv", (1, 3, 30, 30), (8, 3, 5, 5), dict(strides=[2, 2], pads=[2, 2, 2, 2])),
    ("ConvTranspose", (1, 16, 6, 6), (16, 8, 3, 3),
     dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
])
def test_bf16_conv_is_close_and_feeds_the_pe_bf16(op, x_shape, w_shape, attrs):
    x = _rand(*x_shape)
    model = _conv_model(op, x, w_shape, True, **attrs)
    got, prog, _ = device_run(model, {"x": x}, "bf16")
    assert _cosine(got["y"], ort_run(model, {"x": x})["y"]) >= 0.999
    assert {mm.operands["mov"].dtype for mm in _ops(prog, "matmul")} == {"bf16"}


# ---- support rules -------------------------------------------------------------------------------

def test_3d_convolutions_go_to_the_host_with_a_reason():
    x = _rand(1, 2, 4, 4, 4)
    for op in ("Conv", "ConvTranspose"):
        graph = import_model(_conv_model(op, x, (2, 2, 3, 3, 3), False))
        where, why = placement(graph.nodes[0], graph)
        assert where == "host" and "3-D" in why


def test_conv_transpose_with_dilations_runs_on_the_device():
    x = _rand(1, 4, 5, 6)
    graph = import_model(_conv_model("ConvTranspose", x, (4, 3, 3, 3), False, dilations=[2, 2]))
    assert placement(graph.nodes[0], graph)[0] == "device"
