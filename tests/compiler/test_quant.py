"""QuantizeLinear / DequantizeLinear on the emulated XPU against ONNX Runtime, and int8 compilation:
QDQ models and calibrated float models run int8 x int8 -> int32 matmuls on the PE."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run
from device_util import cosine as _cosine
from onnx import TensorProto, helper, numpy_helper

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.errors import CompileError
from xputools.compiler.host import run_graph_reference
from xputools.compiler.quantize import activation_scale, quantize_weight
from xputools.compiler.support import placement
from xputools.runtime import read_npz

ROOT = Path(__file__).resolve().parents[2]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _int8_matmuls(prog):
    mm = [i for i in prog.instrs if i.op == "matmul"]
    return [i for i in mm if i.operands["stat"].dtype == i.operands["mov"].dtype == "i8"]


# ---- QuantizeLinear / DequantizeLinear ----------------------------------------------------------------

# (shape, scale, zero point, axis or None, dtype)
QDQ_CASES = [
    ((4, 300), 0.037, 3, None, np.int8),                 # odd zero point: rounding before adding it
    ((4, 300), 0.037, 0, None, np.int8),                 # one instruction
    ((3, 257), 0.05, 128, None, np.uint8),
    ((2, 5, 7, 3), [0.1, 0.2, 0.03, 0.4, 0.05], [1, -2, 0, 3, 5], 1, np.int8),   # axis on partitions
    ((6, 40), np.linspace(0.01, 0.1, 40), np.arange(40) - 20, 1, np.int8),       # axis along the free dim
    ((6, 40), np.linspace(0.01, 0.1, 6), np.arange(6) * 40, 0, np.uint8),
    ((2, 3, 4), [0.5, 0.25, 0.125, 1.0], [0, 0, 0, 0], -1, np.int8),             # negative axis
    ((), 0.1, -3, None, np.int8),                        # a scalar
]


def _q_input(shape, scale):
    x = np.asarray(_rng(shape).standard_normal(shape) * 40 * float(np.max(scale)), np.float32)
    if x.size >= 40:  # exact ties x / scale = k + 0.5 and values far beyond the int8 range
        s = np.float32(np.asarray(scale).reshape(-1)[0])
        flat = x.reshape(-1)
        flat[:20] = (np.arange(20, dtype=np.float32) - 10 + np.float32(0.5)) * s
        flat[20:22] = [1e6, -1e6]
    return x


@pytest.mark.parametrize("shape,scale,zero,axis,dtype", QDQ_CASES)
def test_quantize_and_dequantize_match_onnxruntime_exactly(shape, scale, zero, axis, dtype):
    x = _q_input(shape, scale)
    params = {"s": np.asarray(scale, np.float32), "z": np.asarray(zero, dtype)}
    attrs = {} if axis is None else {"axis": axis}
    q_model = one_node_model("QuantizeLinear", {"x": x}, ["y"], params, **attrs)
    got, prog, _ = device_run(q_model, {"x": x})
    want = ort_run(q_model, {"x": x})["y"]
    assert not prog.host_ops
    assert got["y"].dtype == want.dtype == dtype
    np.testing.assert_array_equal(got["y"], want)
    dq_model = one_node_model("DequantizeLinear", {"q": want}, ["y"], params, **attrs)
    got, prog, _ = device_run(dq_model, {"q": want})
    assert not prog.host_ops
    np.testing.assert_array_equal(got["y"], ort_run(dq_model, {"q": want})["y"])


def test_quantize_without_zero_point_gives_uint8():
    x = _q_input((5, 64), 0.02)
    model = one_node_model("QuantizeLinear", {"x": x}, ["y"], {"s": np.array(0.02, np.float32)})
    got, _, _ = device_run(model, {"x": x})
    assert got["y"].dtype == np.uint8
    np.testing.assert_array_equal(got["y"], ort_run(model, {"x": x})["y"])


def test_dequantize_int32_bias():
    q = _rng("i32").integers(-(2**20), 2**20, (3, 50)).astype(np.int32)
    model = one_node_model("DequantizeLinear", {"q": q}, ["y"], {"s": np.array(1e-4, np.float32)})
    assert_matches_ort(model, {"q": q}, rtol=0, atol=0)


def test_blocked_quantization_runs_on_the_host():
    x = _q_input((4, 8), 0.1)
    model = one_node_model("QuantizeLinear", {"x": x}, ["y"],
                           {"s": np.full((4, 2), 0.1, np.float32), "z": np.zeros((4, 2), np.int8)},
                           opset=21, axis=1, block_size=4)
    compiled = compile_model(model)
    where, why = placement(compiled.graph.nodes[0], compiled.graph)
    assert where == "host" and "block" in why


# ---- QDQ models -------------------------------------------------------------------------------------

def _qparams(values, dtype):
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if dtype == np.uint8:
        scale = (hi - lo) / 255.0
        return np.float32(scale), np.uint8(np.clip(np.round(-lo / scale), 0, 255))
    scale = (hi - lo) / 255.0
    return np.float32(scale), np.int8(np.clip(np.round(-128 - lo / scale), -128, 127))


def _qdq_conv_model(x, w, b, act_dtype, relu=True, out_q=True, **conv_attrs):
    """x -> Q -> DQ -> Conv(DQ(w int8 per channel), DQ(b int32)) [-> Relu] [-> Q -> DQ]."""
    xs, xz = _qparams(x, act_dtype)
    w_scale = (np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / w_scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    b_scale = (w_scale * xs).astype(np.float32)
    bq = np.round(b / b_scale).astype(np.int32)
    ref = _conv_float(x, w, b, conv_attrs, relu)
    ys, yz = _qparams(ref, act_dtype)
    inits = {"xs": np.array(xs), "xz": np.array(xz), "wq": wq, "ws": w_scale,
             "wz": np.zeros(w.shape[0], np.int8),
             "bq": bq, "bs": b_scale, "ys": np.array(ys), "yz": np.array(yz)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="conv", **conv_attrs)]
    last = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        last = "r"
    if out_q:
        nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, ys


def _conv_float(x, w, b, attrs, relu):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    g = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    y = ort_run(m, {"x": x})["y"]
    return np.maximum(y, 0) if relu else y


CONV_CASES = [
    # x shape, w shape, act dtype, relu, attrs
    ((1, 3, 10, 12), (8, 3, 3, 3), np.int8, True, dict(pads=[1, 1, 1, 1])),             # packed taps
    ((2, 6, 9, 9), (10, 3, 3, 3), np.uint8, False, dict(group=2, strides=[2, 2], pads=[1, 0, 1, 2])),
    ((1, 16, 8, 8), (16, 1, 3, 3), np.int8, True, dict(group=16, pads=[1, 1, 1, 1], dilations=[2, 2])),
    ((1, 40, 30, 20), (12, 40, 1, 1), np.uint8, True, {}),                                 # > 512 pixels
    ((1, 130, 5, 5), (7, 130, 3, 3), np.int8, True, dict(pads=[1, 1, 1, 1])),             # 2 channel tiles
]


@pytest.mark.parametrize("x_shape,w_shape,act_dtype,relu,attrs", CONV_CASES)
def test_qdq_conv_runs_int8_on_the_pe(x_shape, w_shape, act_dtype, relu, attrs):
    rng = _rng(x_shape, w_shape)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = (rng.standard_normal(w_shape[0]) * 0.1).astype(np.float32)
    model, out_scale = _qdq_conv_model(x, w, b, act_dtype, relu, **attrs)
    got, prog, _ = device_run(model, {"x": x}, "int8")
    assert not prog.host_ops and _int8_matmuls(prog)
    assert all(i.operands["dst"].dtype == "i32" for i in _int8_matmuls(prog))
    # the device accumulates exactly in int32; ORT requantizes its own way: one output quantum apart
    want = ort_run(model, {"x": x})["y"]
    assert np.max(np.abs(got["y"] - want)) <= out_scale * 1.01
    assert np.mean(got["y"] != want) < 0.02


def test_qdq_conv_with_float_output_matches_the_dequantized_computation():
    rng = _rng("float out")
    x = rng.standard_normal((1, 4, 7, 7)).astype(np.float32)
    w = (rng.standard_normal((6, 4, 3, 3)) * 0.2).astype(np.float32)
    model, _ = _qdq_conv_model(x, w, np.zeros(6, np.float32), np.int8, relu=False, out_q=False,
                               strides=[2, 2])
    assert_matches_ort(model, {"x": x}, precision="int8")


def _qdq_gemm_model(x, w, b, op, trans_b=False, alpha=1.0, beta=1.0, per_channel=True, out_q=None):
    """x -> Q -> DQ -> Gemm(DQ(w)) or MatMul(DQ(w)) + b -> Sigmoid; with `out_q` (zero point) the
    MatMul is followed by Relu -> Q -> DQ instead of the Sigmoid."""
    xs, xz = _qparams(x, np.int8)
    wt = w.T if trans_b else w  # [N, K] or [K, N] as stored
    axis = 0 if trans_b else 1
    amax = np.abs(wt).max(axis=1 - axis) if per_channel else np.abs(wt).max()
    w_scale = np.asarray(amax / 127, np.float32)
    shaped = w_scale.reshape((-1, 1) if trans_b else (1, -1)) if per_channel else w_scale
    wq = np.clip(np.round(wt / shaped), -127, 127).astype(np.int8)
    inits = {"xs": np.array(xs), "xz": np.array(xz), "wq": wq, "ws": w_scale,
             "wz": np.zeros(w_scale.shape, np.int8), "b": b}
    dq_attrs = {"axis": axis} if per_channel else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], **dq_attrs)]
    if op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["xd", "wd", "b"], ["y"], name="fc", transB=int(trans_b),
                                      alpha=alpha, beta=beta))
    elif out_q is None:
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["m"], name="fc"),
                  helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])]
    else:
        inits.update(ys=np.array(0.02, np.float32), yz=np.array(out_q, np.int8))
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["m"], name="fc"),
                  helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
                  helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("op,m,k,n,kwargs", [
    ("MatMul", 3, 40, 24, {}),                                    # channels on partitions
    ("MatMul", 150, 200, 40, dict(per_channel=False)),            # rows on partitions, 2 K tiles
    ("Gemm", 6, 33, 20, dict(trans_b=True, alpha=0.5, beta=2.0)),
    ("Gemm", 2, 64, 130, {}),
])
def test_qdq_matmul_and_gemm(op, m, k, n, kwargs):
    rng = _rng(op, m, k, n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    model = _qdq_gemm_model(x, w, b, op, **kwargs)
    got, prog, _ = device_run(model, {"x": x}, "int8")
    assert not prog.host_ops and _int8_matmuls(prog)
    compiled = compile_model(model, CompileOptions(precision="int8"))
    assert [n.op_type for n in compiled.graph.nodes] == ["XpuQLinearMatMul"]  # Q, DQs, bias, act fused
    want = ort_run(model, {"x": x})["y"]
    # int8 layers evaluate the sigmoid through the device's table (error ~5e-5)
    np.testing.assert_allclose(got["y"], want, rtol=1e-4, atol=2e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("m,zero", [(4, -128), (4, 0), (150, -128), (150, 0)])
def test_qdq_matmul_with_quantized_output(m, zero):
    """The output QuantizeLinear folds into the epilogue: rows or channels on partitions, with and
    without a zero point (a zero point 0 is written by the rounding, saturating epilogue itself)."""
    rng = _rng("out q", m, zero)
    x = rng.standard_normal((m, 64)).astype(np.float32)
    w = (rng.standard_normal((64, 40)) / 8).astype(np.float32)
    model = _qdq_gemm_model(x, w, (rng.standard_normal(40) * 0.1).astype(np.float32), "MatMul", out_q=zero)
    compiled = compile_model(model, CompileOptions(precision="int8"))
    assert [n.op_type for n in compiled.graph.nodes] == ["XpuQLinearMatMul", "DequantizeLinear"]
    fused = compiled.graph.nodes[0].attrs["fused_quantize"]
    assert fused == {"scale": pytest.approx(0.02), "zero_point": zero}
    got, prog, _ = device_run(model, {"x": x}, "int8")
    assert not prog.host_ops
    want = ort_run(model, {"x": x})["y"]
    assert np.max(np.abs(got["y"] - want)) <= 0.0201 and np.mean(got["y"] != want) < 0.02


def test_few_input_channels_stack_the_taps_on_partitions():
    rng = _rng("packed")
    x = rng.standard_normal((1, 3, 10, 12)).astype(np.float32)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    model, _ = _qdq_conv_model(x, w, np.zeros(8, np.float32), np.int8, pads=[1, 1, 1, 1])
    _, prog, _ = device_run(model, {"x": x}, "int8")
    (mm,) = _int8_matmuls(prog)  # 120 output pixels, 27 (channel, tap) rows: one matmul
    assert mm.operands["stat"].pcount == 27


def test_int8_qdq_sample_runs_int8_matmuls_on_the_device():
    model = onnx.load(ROOT / "samples/int8_qdq.onnx")
    feeds = read_npz(ROOT / "samples/int8_qdq.inputs.npz")
    got, prog, _ = device_run(model, feeds, "int8")
    assert not prog.host_ops
    assert len({i.dbg for i in _int8_matmuls(prog)}) == 3  # conv1, conv2, fc
    want = ort_run(model, feeds)["logits"]
    assert _cosine(got["logits"], want) >= 0.99
    # the host form of the int8 nodes (their QDQ spelling) computes the same
    compiled = compile_model(model, CompileOptions(precision="int8"))
    assert {n.op_type for n in compiled.graph.nodes} >= {"XpuQLinearConv", "XpuQLinearMatMul"}
    host = run_graph_reference(compiled.graph, feeds)["logits"]
    np.testing.assert_allclose(host, want, rtol=1e-3, atol=1e-3)
    # the quantized activations between int8 layers never exist in float: taps say where they went
    fused = {t.name: t.fused_into for t in prog.taps if t.fused_into}
    assert fused.get("conv1/dequantize") == "conv2/quantize"


def test_keep_leaves_a_layer_in_float():
    model = onnx.load(ROOT / "samples/int8_qdq.onnx")
    compiled = compile_model(model, CompileOptions(precision="int8", keep=[("conv2", "fp32")]))
    types = {n.name: n.op_type for n in compiled.graph.nodes}
    assert types["conv1"] == "XpuQLinearConv" and types["conv2"] == "Conv"


# ---- calibration ----------------------------------------------------------------------------------

def test_cnn_calibrated_to_int8_stays_close_to_fp32():
    model = onnx.load(ROOT / "samples/cnn.onnx")
    feeds = read_npz(ROOT / "samples/cnn.inputs.npz")
    calib = read_npz(ROOT / "samples/cnn.calib.npz")
    assert calib["x"].shape == (8, 1, 3, 32, 32)
    want = ort_run(model, feeds)["logits"]
    for method in ("minmax", "percentile"):
        got, prog, _ = device_run(model, feeds, "int8", calibration=calib, calibration_method=method)
        assert not prog.host_ops
        assert _cosine(got["logits"], want) >= 0.99, method
        int8_nodes = {prog.origins[i.dbg].name for i in _int8_matmuls(prog)}
        assert {"stem/conv", "branch_a/dwconv", "head/conv", "head/fc"} <= int8_nodes
        # ConvTranspose is not quantized: it runs in bf16
        assert {i.operands["mov"].dtype for i in prog.instrs if i.op == "matmul"
                and prog.origins[i.dbg].name == "up/convtranspose"} == {"bf16"}


def test_int8_without_calibration_or_qdq_is_an_error():
    model = onnx.load(ROOT / "samples/cnn.onnx")
    with pytest.raises(CompileError, match="--calibration"):
        compile_model(model, CompileOptions(precision="int8"))


def test_bad_calibration_data_is_reported():
    model = onnx.load(ROOT / "samples/cnn.onnx")
    x = read_npz(ROOT / "samples/cnn.calib.npz")["x"]
    with pytest.raises(CompileError, match="no array for input x"):
        compile_model(model, CompileOptions(precision="int8", calibration={"y": x}))
    with pytest.raises(CompileError, match="leading samples axis"):
        compile_model(model, CompileOptions(precision="int8", calibration={"x": x[0]}))


def test_scales_from_calibration_values():
    values = [np.array([0.5, -2.0, 1.0]), np.array([[0.25, 1.5]])]
    assert activation_scale(values, "minmax") == pytest.approx(2.0 / 127)
    outlier = [np.concatenate([np.ones(100000), [1000.0]])]
    assert activation_scale(outlier, "percentile") < 2.0 / 127 < activation_scale(outlier, "minmax")
    assert activation_scale([np.zeros(4)], "minmax") == 1.0
    w = np.array([[127.0, -63.5, 0.0], [0.0, 0.0, 0.0]], np.float32)
    q, s = quantize_weight(w, 0)
    np.testing.assert_array_equal(q, [[127, -64, 0], [0, 0, 0]])  # -63.5 rounds half to even
    np.testing.assert_array_equal(s, [1.0, 1.0])  # an all-zero channel gets scale 1
    q, s = quantize_weight(w.T, 1)
    np.testing.assert_array_equal(q, [[127, 0], [-64, 0], [0, 0]])


def test_int8_nodes_fall_back_to_the_host_in_their_qdq_form(monkeypatch):
    from xputools.compiler import support

    monkeypatch.setitem(support.SUPPORT_RULES, "XpuQLinearConv", lambda node, graph: "forced by the test")
    model = onnx.load(ROOT / "samples/int8_qdq.onnx")
    feeds = read_npz(ROOT / "samples/int8_qdq.inputs.npz")
    got, prog, _ = device_run(model, feeds, "int8")
    assert [h.op_type for h in prog.host_ops] == ["XpuQLinearConv", "XpuQLinearConv"]
    want = ort_run(model, feeds)["logits"]
    assert _cosine(got["logits"], want) >= 0.999


def test_float_layers_next_to_qdq_layers_run_in_bf16_with_a_warning():
    rng = _rng("mixed")
    x = rng.standard_normal((4, 32)).astype(np.float32)
    model = _qdq_gemm_model(x, (rng.standard_normal((32, 16)) / 6).astype(np.float32),
                            np.zeros(16, np.float32), "MatMul")
    extra = helper.make_node("MatMul", ["y", "w2"], ["z"], name="float_fc")
    model.graph.node.append(extra)
    model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w2"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    compiled = compile_model(model, CompileOptions(precision="int8"))
    assert [n.op_type for n in compiled.graph.nodes] == ["XpuQLinearMatMul", "MatMul"]
    assert any("float_fc" in w and "bf16" in w for w in compiled.graph.warnings)
    got, prog, _ = device_run(model, {"x": x}, "int8")
    assert _cosine(got["z"], ort_run(model, {"x": x})["z"]) >= 0.999


@pytest.mark.parametrize("act_dtype", [np.uint8, np.int8])
def test_int8_layers_read_quantized_tensors_from_hbm(act_dtype):
    """When the quantized activation is needed elsewhere (here: a graph output), QuantizeLinear runs
    as its own node and the int8 layer loads its 8-bit output (uint8 shifted to int8 on the DVE)."""
    rng = _rng("hbm", act_dtype)
    x = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    w = (rng.standard_normal((4, 5, 3, 3)) * 0.2).astype(np.float32)
    model, out_scale = _qdq_conv_model(x, w, np.zeros(4, np.float32), act_dtype, pads=[1, 1, 1, 1])
    model.graph.output.append(helper.make_tensor_value_info("xq", TensorProto.UINT8 if act_dtype == np.uint8
                                                            else TensorProto.INT8, None))
    compiled = compile_model(model, CompileOptions(precision="int8"))
    assert [n.op_type for n in compiled.graph.nodes][:2] == ["QuantizeLinear", "XpuQLinearConv"]
    got, prog, _ = device_run(model, {"x": x}, "int8")
    assert not prog.host_ops
    want = ort_run(model, {"x": x})
    np.testing.assert_array_equal(got["xq"], want["xq"])
    assert np.max(np.abs(got["y"] - want["y"])) <= out_scale * 1.01
