"""decompose.py: ops the device lacks, rewritten into ops it runs, equal to ONNX's reference evaluator
and with no host op left in the program."""
from __future__ import annotations

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, one_node_model
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from xputools.compiler.decompose import decompose
from xputools.compiler.driver import check_model, compile_model
from xputools.compiler.frontend import import_model


def _on_device(op, inputs, initializers=None, outputs=("y",), opset=17, rtol=0.0, atol=0.0, **attrs):
    """Compile a one-node model, run it on the emulator, compare with the reference evaluator (exactly
    unless told) and check nothing ran on the host."""
    model = one_node_model(op, inputs, list(outputs), initializers, opset=opset, **attrs)
    got, prog, _ = device_run(model, inputs)
    assert not prog.host_ops, f"ran on the host: {[h.op_type for h in prog.host_ops]}"
    with np.errstate(all="ignore"):  # the reference's own 0/0 (LpNormalization) warns
        want = ReferenceEvaluator(model).run(None, inputs)
    for name, ref in zip(outputs, want):
        assert got[name].shape == ref.shape, name
        assert got[name].dtype == ref.dtype, name
        if rtol or atol:
            np.testing.assert_allclose(got[name], ref, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], ref, err_msg=name)
    return prog


# ---- GatherElements -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_gather_elements_run_time_indices_every_axis(axis, idx_dtype):
    rng = np.random.default_rng(11)
    data = rng.standard_normal((3, 4, 5)).astype(np.float32)
    shape = list(data.shape)
    n = data.shape[axis]
    # the gathered axis may be longer than the data's (the reference evaluator checks the other dims
    # against a negative axis as given, so there keep the data's shape)
    shape[axis] = 6 if axis >= 0 else n
    idx = rng.integers(-n, n, size=shape).astype(idx_dtype)  # negative indices count from the end
    _on_device("GatherElements", {"data": data, "indices": idx}, axis=axis)


def test_gather_elements_constant_indices_and_int_data():
    rng = np.random.default_rng(12)
    data = rng.integers(-100, 100, size=(4, 6)).astype(np.int32)
    idx = np.array([[0, -1, 3], [5, 2, -6], [1, 1, 1], [4, 0, -2]], np.int64)
    _on_device("GatherElements", {"data": data}, {"indices": idx}, axis=1)


def test_gather_elements_rewrite_names_its_values_after_the_node():
    rng = np.random.default_rng(13)
    data = rng.standard_normal((3, 3)).astype(np.float32)
    idx = np.array([[1, 2, 0], [2, 0, 0]], np.int64)
    model = one_node_model("GatherElements", {"data": data, "indices": idx}, ["y"], axis=0)
    g = decompose(import_model(model, {}))
    assert {n.op_type for n in g.nodes} >= {"Gather", "Where", "Reshape"}
    assert all(n.name.startswith("gatherelements0/") and n.origin == ["gatherelements0"] for n in g.nodes)
    report = check_model(model)
    assert report["all_on_device"]
    assert all(row["expanded_from"] == "GatherElements" for row in report["nodes"])  # `xpu check`: "(from ...)"
    assert report["expanded"] == [{"name": "gatherelements0", "op_type": "GatherElements", "nodes": len(g.nodes)}]


# ---- GatherND -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gather_nd_run_time_indices(batch_dims):
    rng = np.random.default_rng(14)
    data = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    k = 2
    idx = np.stack([rng.integers(-d, d, size=(2, 3)) for d in data.shape[batch_dims:batch_dims + k]], -1)
    _on_device("GatherND", {"data": data, "indices": idx.astype(np.int64)}, batch_dims=batch_dims)


def test_gather_nd_constant_indices_whole_rows():
    rng = np.random.default_rng(15)
    data = rng.integers(0, 50, size=(4, 3, 2)).astype(np.int32)
    _on_device("GatherND", {"data": data}, {"indices": np.array([[3], [-4], [1]], np.int64)})


# ---- Trilu --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [-7, -1, 0, 2, 9])
def test_trilu_constant_k(upper, k):
    rng = np.random.default_rng(16)
    x = rng.integers(-9, 9, size=(2, 4, 6)).astype(np.int64)
    _on_device("Trilu", {"x": x}, {"k": np.array(k, np.int64)}, upper=upper)


def test_trilu_without_k_and_run_time_k_falls_back_with_a_reason():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    _on_device("Trilu", {"x": x}, upper=0)
    model = one_node_model("Trilu", {"x": x, "k": np.array(1, np.int64)}, ["y"])
    host = check_model(model)["host_nodes"]
    assert host and "--const-inputs" in host[0]["why"]


# ---- ArgMax / ArgMin / Hardmax ------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_argmin_with_ties(op, axis, keepdims, last):
    rng = np.random.default_rng(18)
    x = rng.integers(0, 3, size=(3, 4, 5)).astype(np.float32)  # many ties: first vs last index matters
    _on_device(op, {"x": x}, axis=axis, keepdims=keepdims, select_last_index=last)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float16])
def test_argmax_other_dtypes(dtype):
    rng = np.random.default_rng(19)
    x = rng.integers(0, 100, size=(6, 7)).astype(dtype)
    _on_device("ArgMax", {"x": x}, axis=1)
    _on_device("ArgMin", {"x": x}, axis=0, keepdims=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_hardmax(axis):
    rng = np.random.default_rng(20)
    x = rng.integers(0, 4, size=(3, 4, 5)).astype(np.float32)
    _on_device("Hardmax", {"x": x}, opset=13, axis=axis)


# ---- CumSum / CumProd ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumulative_int_exact(op, exclusive, reverse, axis):
    rng = np.random.default_rng(21)
    x = rng.integers(-3, 4, size=(5, 9)).astype(np.int32)
    _on_device(op, {"x": x}, {"axis": np.array(axis, np.int64)}, opset=26, exclusive=exclusive, reverse=reverse)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 129])
def test_cumsum_float_lengths(n):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, n)).astype(np.float32)
    _on_device("CumSum", {"x": x}, {"axis": np.array(1, np.int32)}, rtol=1e-5, atol=1e-5)
    _on_device("CumSum", {"x": x}, {"axis": np.array(1, np.int32)}, rtol=1e-5, atol=1e-5, exclusive=1, reverse=1)


def test_cumprod_float():
    rng = np.random.default_rng(23)
    x = rng.uniform(0.5, 1.5, size=(4, 10)).astype(np.float32)
    _on_device("CumProd", {"x": x}, {"axis": np.array(-1, np.int64)}, opset=26, rtol=1e-5)


# ---- Dropout, EyeLike, Mean ---------------------------------------------------------------------------
def test_dropout_inference_with_mask_output():
    rng = np.random.default_rng(24)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    _on_device("Dropout", {"x": x}, {"ratio": np.array(0.7, np.float32)}, outputs=("y", "mask"), opset=13)


def test_dropout_training_stays_on_the_host():
    rng = np.random.default_rng(25)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model = one_node_model("Dropout", {"x": x}, ["y"], {"r": np.array(0.5, np.float32), "t": np.array(True)},
                           opset=13)
    host = check_model(model)["host_nodes"]
    assert [h["op_type"] for h in host] == ["Dropout"] and "training" in host[0]["why"]


@pytest.mark.parametrize("k", [-1, 0, 2])
def test_eyelike(k):
    x = np.zeros((3, 5), np.int32)
    _on_device("EyeLike", {"x": x}, k=k)


def test_mean():
    rng = np.random.default_rng(26)
    xs = {f"x{i}": rng.standard_normal((2, 5)).astype(np.float32) for i in range(3)}
    _on_device("Mean", xs)


def test_rewrites_leave_supported_graphs_unchanged():
    rng = np.random.default_rng(27)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    model = one_node_model("Relu", {"x": x}, ["y"])
    g = import_model(model, {})
    assert [n.op_type for n in decompose(g).nodes] == ["Relu"]
    assert compile_model(model).program.host_ops == []


# ---- TopK, Clip with run-time bounds, Pad with a run-time value, Xor -----------------------------------
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("k", [1, 3])
def test_topk_with_ties_both_outputs(largest, axis, k):
    rng = np.random.default_rng(28)
    x = rng.integers(0, 4, size=(4, 5)).astype(np.float32)  # ties: ONNX wants the lower index first
    _on_device("TopK", {"x": x}, {"k": np.array([k], np.int64)}, outputs=("values", "indices"), axis=axis,
               largest=largest)


def test_topk_int_values_only_and_large_k_on_host():
    rng = np.random.default_rng(29)
    x = rng.integers(-50, 50, size=(3, 40)).astype(np.int32)
    _on_device("TopK", {"x": x}, {"k": np.array([5], np.int64)}, outputs=("values", "indices"))
    model = one_node_model("TopK", {"x": x}, ["v", "i"], {"k": np.array([30], np.int64)})
    assert [h["op_type"] for h in check_model(model)["host_nodes"]] == ["TopK"]


@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_clip_run_time_bounds(dtype):
    rng = np.random.default_rng(30)
    x = rng.integers(-100, 100, size=(3, 7)).astype(dtype)
    _on_device("Clip", {"x": x, "lo": np.array(-20, dtype), "hi": np.array(30, dtype)}, opset=13)
    _on_device("Clip", {"x": x, "lo": np.array(5, dtype), "hi": np.array(-5, dtype)}, opset=13)  # min > max


def test_clip_one_run_time_bound():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    model = one_node_model("Clip", {"x": x, "lo": np.array(0.1, np.float32)}, ["y"], opset=13)
    got, prog, _ = device_run(model, {"x": x, "lo": np.array(0.1, np.float32)})
    assert not prog.host_ops
    np.testing.assert_array_equal(got["y"], np.maximum(x, np.float32(0.1)))


def test_pad_run_time_value_with_axes():
    rng = np.random.default_rng(32)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    feeds = {"x": x, "value": np.array(1.5, np.float32)}
    node = helper.make_node("Pad", ["x", "pads", "value", "axes"], ["y"], name="pad0", mode="constant")
    graph = helper.make_graph(
        [node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                      helper.make_tensor_value_info("value", TensorProto.FLOAT, ())],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 0, 2, 3], np.int64), "pads"),
         numpy_helper.from_array(np.array([0, -1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    got, prog, _ = device_run(model, feeds)
    assert not prog.host_ops
    np.testing.assert_array_equal(got["y"], ReferenceEvaluator(model).run(None, feeds)[0])


def test_xor():
    rng = np.random.default_rng(33)
    a, c = rng.integers(0, 2, size=(2, 3, 4)).astype(bool), rng.integers(0, 2, size=(3, 4)).astype(bool)
    _on_device("Xor", {"a": a, "c": c})


# ---- ScatterElements / ScatterND ---------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "add", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements_duplicates_and_negative_indices(reduction, axis):
    rng = np.random.default_rng(34)
    data = rng.integers(-9, 9, size=(3, 5)).astype(np.float32)
    shape = [2, 2]
    n = data.shape[axis]
    idx = rng.integers(-n, n, size=shape).astype(np.int64)  # duplicates are likely in 4 draws
    upd = rng.integers(-9, 9, size=shape).astype(np.float32)
    _on_device("ScatterElements", {"data": data, "indices": idx, "updates": upd}, opset=18, axis=axis,
               reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_nd_rows_and_elements(reduction):
    rng = np.random.default_rng(35)
    data = rng.integers(0, 20, size=(4, 3, 2)).astype(np.int32)
    rows = np.array([[1], [-1], [1]], np.int64)
    _on_device("ScatterND", {"data": data, "indices": rows, "updates": rng.integers(0, 20, (3, 3, 2)).astype(np.int32)},
               opset=18, reduction=reduction)
    cells = np.array([[0, 2], [3, -3], [0, 2]], np.int64)
    _on_device("ScatterND", {"data": data, "indices": cells, "updates": rng.integers(0, 20, (3, 2)).astype(np.int32)},
               opset=18, reduction=reduction)


def test_scatter_mul_stays_on_the_host():
    data = np.ones((3, 3), np.float32)
    model = one_node_model("ScatterElements", {"data": data, "indices": np.zeros((1, 3), np.int64),
                                               "updates": np.ones((1, 3), np.float32)}, ["y"], opset=18,
                           reduction="mul")
    assert [h["op_type"] for h in check_model(model)["host_nodes"]] == ["ScatterElements"]


# ---- CastLike, LpNormalization, Pow with a run-time exponent -----------------------------------------
@pytest.mark.parametrize("to", [np.float16, np.int32])
def test_castlike(to):
    rng = np.random.default_rng(36)
    x = (rng.standard_normal((3, 4)) * 10).astype(np.float32)
    _on_device("CastLike", {"x": x}, {"like": np.zeros((1,), to)}, opset=19)


@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization(axis):
    rng = np.random.default_rng(37)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    x[1, :, 2] = 0.0  # a zero slice: 0, not NaN
    x[:, 1, 1] = 0.0
    _on_device("LpNormalization", {"x": x}, rtol=1e-6, atol=1e-7, axis=axis, p=2)
    # the reference evaluator sums signed values for p=1; ONNX Runtime takes |x| as the spec says
    assert_matches_ort(one_node_model("LpNormalization", {"x": x}, ["y"], axis=axis, p=1), {"x": x}, rtol=1e-6)


@pytest.mark.parametrize("exp_dtype", [np.float32, np.int64])
def test_pow_run_time_exponent_float_base(exp_dtype):
    rng = np.random.default_rng(38)
    x = rng.uniform(0.5, 2.0, size=(3, 4)).astype(np.float32)
    e = rng.integers(-2, 4, size=(4,)).astype(exp_dtype)
    _on_device("Pow", {"x": x, "e": e}, rtol=1e-6)


# ---- DFT / STFT --------------------------------------------------------------------------------------
@pytest.mark.parametrize("inverse,onesided,channels", [(0, 0, 1), (0, 1, 1), (0, 0, 2), (1, 0, 2), (1, 1, 2)])
@pytest.mark.parametrize("axis", [1, 2])
def test_dft_against_numpy_fft(inverse, onesided, channels, axis):
    rng = np.random.default_rng(39)
    x = rng.standard_normal((2, 6, 5, channels)).astype(np.float32)
    _on_device("DFT", {"x": x}, opset=19, rtol=1e-4, atol=1e-5, axis=axis, inverse=inverse, onesided=onesided)


@pytest.mark.parametrize("length", [4, 9])
def test_dft_length_cuts_or_pads(length):
    rng = np.random.default_rng(40)
    x = rng.standard_normal((1, 6, 3, 1)).astype(np.float32)
    _on_device("DFT", {"x": x}, {"n": np.array(length, np.int64)}, opset=19, rtol=1e-4, atol=1e-5, axis=1)


def test_stft_constant_window_and_run_time_window():
    rng = np.random.default_rng(41)
    signal = rng.standard_normal((2, 64, 1)).astype(np.float32)
    window = np.hanning(16).astype(np.float32)
    step = np.array(8, np.int64)
    _on_device("STFT", {"signal": signal}, {"step": step, "window": window}, opset=17, rtol=1e-4, atol=1e-5)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("STFT", ["signal", "step", "window"], ["y"], name="stft0")], "t",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, signal.shape),
         helper.make_tensor_value_info("window", TensorProto.FLOAT, window.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(step, "step")]), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"signal": signal, "window": window}
    got, prog, _ = device_run(model, feeds)
    assert not prog.host_ops
    np.testing.assert_allclose(got["y"], ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-4, atol=1e-5)


# ---- IsInf; Floor, Ceil, Round, Sign (kernels that lacked a support rule) ------------------------------
@pytest.mark.parametrize("positive,negative", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_isinf(positive, negative):
    x = np.array([[1.0, np.inf, -np.inf, np.nan], [0.0, -3.5, np.inf, 1e38]], np.float32)
    _on_device("IsInf", {"x": x}, opset=20, detect_positive=positive, detect_negative=negative)


@pytest.mark.parametrize("op", ["Floor", "Ceil", "Round", "Sign"])
def test_rounding_ops_halves_and_signs(op):
    rng = np.random.default_rng(42)
    x = np.concatenate([np.array([-2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, -0.0], np.float32),
                        (rng.standard_normal(16) * 4).astype(np.float32)])
    _on_device(op, {"x": x})


# ---- GridSample --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d_points_inside_and_far_outside(mode, padding, align):
    rng = np.random.default_rng(43)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = rng.uniform(-3.2, 3.2, size=(2, 4, 7, 2)).astype(np.float32)  # reflections fold several times
    _on_device("GridSample", {"x": x, "grid": grid}, opset=20, rtol=1e-5, atol=1e-6, mode=mode,
               padding_mode=padding, align_corners=align)


def test_grid_sample_3d_linear_opset16_spelling():
    rng = np.random.default_rng(44)
    x = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, size=(1, 2, 3, 4, 3)).astype(np.float32)
    _on_device("GridSample", {"x": x, "grid": grid}, opset=20, rtol=1e-5, atol=1e-6, mode="linear")
    feeds = {"x": x[:, :, 0], "grid": grid[:, 0, :, :, :2]}
    got, prog, _ = device_run(one_node_model("GridSample", feeds, ["y"], opset=16, mode="bilinear"), feeds)
    assert not prog.host_ops  # opset 16 spells linear "bilinear" (the reference evaluator knows only 20's words)
    want = ReferenceEvaluator(one_node_model("GridSample", feeds, ["y"], opset=20, mode="linear")).run(None, feeds)
    np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-6)


# ---- ReduceProd --------------------------------------------------------------------------------------
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, 2], 0), (None, 1), ([-1], 0)])
def test_reduce_prod_int_exact_and_float(axes, keepdims):
    rng = np.random.default_rng(45)
    xi = rng.integers(-3, 4, size=(3, 5, 7)).astype(np.int64)
    xf = rng.uniform(0.5, 1.5, size=(3, 5, 7)).astype(np.float32)
    inits = {} if axes is None else {"axes": np.array(axes, np.int64)}
    _on_device("ReduceProd", {"x": xi}, inits, opset=18, keepdims=keepdims)
    _on_device("ReduceProd", {"x": xf}, inits, opset=18, rtol=1e-5, keepdims=keepdims)


def test_reduce_prod_of_an_empty_axis_is_one():
    x = np.zeros((2, 0, 4), np.float32)
    _on_device("ReduceProd", {"x": x}, {"axes": np.array([1], np.int64)}, opset=18)


# ---- LpPool ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool_2d(p):
    rng = np.random.default_rng(46)
    x = rng.standard_normal((1, 2, 6, 7)).astype(np.float32)
    _on_device("LpPool", {"x": x}, opset=18, rtol=1e-5, kernel_shape=[3, 2], strides=[2, 1], p=p)


def test_lp_pool_padded_windows_sum_the_zeros():
    rng = np.random.default_rng(47)
    x = rng.standard_normal((1, 2, 9)).astype(np.float32)
    model = one_node_model("LpPool", {"x": x}, ["y"], opset=18, kernel_shape=[4], pads=[2, 1], p=2)
    assert_matches_ort(model, {"x": x}, rtol=1e-5)


# ---- Tile, Pad wrap, empty reductions, InstanceNormalization, LRN --------------------------------------
def test_tile_int_and_float():
    rng = np.random.default_rng(48)
    _on_device("Tile", {"x": rng.integers(0, 9, (2, 3)).astype(np.int32)}, {"r": np.array([3, 2], np.int64)})
    _on_device("Tile", {"x": rng.standard_normal((2, 1, 3)).astype(np.float32)}, {"r": np.array([1, 4, 2], np.int64)})


def test_pad_wrap():
    rng = np.random.default_rng(49)
    x = rng.integers(0, 50, (3, 4, 5)).astype(np.int32)
    _on_device("Pad", {"x": x}, {"pads": np.array([0, 3, 2, 1, 1, 7], np.int64)}, opset=19, mode="wrap")


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2"])
def test_reductions_of_nothing_are_constants(op):
    x = np.zeros((2, 0, 3), np.float32)
    _on_device(op, {"x": x}, {"axes": np.array([1], np.int64)}, opset=18, keepdims=1)


def test_instance_normalization():
    rng = np.random.default_rng(50)
    feeds = {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 3 + 1,
             "s": rng.standard_normal(3).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    _on_device("InstanceNormalization", feeds, rtol=1e-4, atol=1e-5, epsilon=1e-3)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn(size):
    rng = np.random.default_rng(51)
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    # the reference evaluator loops over the batch dim where it means channels: ONNX Runtime is the oracle
    assert_matches_ort(one_node_model("LRN", {"x": x}, ["y"], size=size, alpha=0.01, beta=0.6, bias=1.5), {"x": x},
                       rtol=1e-5)


def test_dft_too_long_for_a_matrix_stays_on_the_host():
    x = np.zeros((1, 2048, 2), np.float32)
    model = one_node_model("DFT", {"x": x}, ["y"], opset=19, axis=1)
    host = check_model(model)["host_nodes"]
    assert [h["op_type"] for h in host] == ["DFT"] and "FFT" in host[0]["why"]
