"""Softmax, LogSoftmax, LayerNormalization and standalone BatchNormalization on the emulated XPU
against ONNX Runtime."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run

from device_model.arch import load_arch
from xputools.compiler.kernels.lib.rows import BUDGET
from xputools.compiler.kernels.normalize import LAYERNORM_MAX_ROW


def _rand(shape, scale=1.0, shift=0.0, dtype=np.float32):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


# ---- Softmax / LogSoftmax ------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [
    ((4, 300), -1), ((4, 300), 0), ((3, 5, 7), 1), ((2, 3, 200), 1), ((300, 20), -1),
    ((1000,), 0), ((5, 1), 1), ((130, 9, 3), 0), ((2, 12, 16, 16), -1),
])
def test_softmax_matches_ort(op, shape, axis):
    x = _rand(shape, scale=4.0)
    assert_matches_ort(one_node_model(op, {"x": x}, ["y"], opset=17, axis=axis), {"x": x})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_rows_longer_than_a_tile_take_two_passes(op):
    x = _rand((3, 2 * BUDGET + 100), scale=5.0)
    x[1, -3] = 60.0  # the max shows up in the last chunk: the running sum is rescaled
    _, prog = assert_matches_ort(one_node_model(op, {"x": x}, ["y"], opset=17, axis=-1), {"x": x})
    loads = [i for i in prog.instrs if i.op == "dma_copy" and i.operands["src"].space == "hbm"]
    assert len(loads) == 6  # three chunks, read twice


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_two_pass_softmax_keeps_its_running_statistics_on_a_small_sbuf(op):
    x = _rand((40, 3 * BUDGET - 7), scale=3.0)  # xpu1-edge: 32 partitions, 128 KiB each
    m = one_node_model(op, {"x": x}, ["y"], opset=17, axis=-1)
    assert_matches_ort(m, {"x": x}, arch=load_arch("xpu1-edge"))


def test_layernorm_on_a_small_sbuf_reloads_scale_and_bias():
    x = _rand((70, LAYERNORM_MAX_ROW), scale=2.0)
    assert_matches_ort(_layernorm(x, -1), {"x": x}, arch=load_arch("xpu1-edge"))


def test_softmax_of_large_values_does_not_overflow():
    x = np.array([[1000.0, 999.0, -1000.0], [88.0, 89.0, 90.0]], np.float32)
    got, _ = assert_matches_ort(one_node_model("Softmax", {"x": x}, ["y"], opset=17), {"x": x})
    assert np.isfinite(got["y"]).all()


def test_long_rows_on_an_outer_axis_run_as_the_function_body():
    # too long for the Softmax kernel: ONNX's function body (ReduceMax, Exp, ReduceSum, Div) runs instead
    x = _rand((BUDGET + 10, 2))
    m = one_node_model("Softmax", {"x": x}, ["y"], opset=17, axis=0)
    _, prog = assert_matches_ort(m, {"x": x})
    assert not any(o.op_type == "Softmax" for o in prog.origins)


def test_softmax_bf16_precision_uses_tables():
    x = _rand((16, 100), scale=3.0)
    m = one_node_model("Softmax", {"x": x}, ["y"], opset=17)
    got, prog, _ = device_run(m, {"x": x}, precision="bf16")
    assert {i.attrs.get("mode") for i in prog.instrs if i.op == "activate"} == {"table"}
    np.testing.assert_allclose(got["y"], ort_run(m, {"x": x})["y"], rtol=2e-2, atol=1e-4)


# ---- LayerNormalization --------------------------------------------------------------------------
def _layernorm(x, axis, outputs=1, bias=True, **attrs):
    tail = x.shape[axis % x.ndim:]
    init = {"scale": _rand(tail, shift=1.0)}
    if bias:
        init["bias"] = _rand(tail + (1,)).reshape(tail)
    return one_node_model("LayerNormalization", {"x": x}, ["y", "mean", "inv_std"][:outputs],
                          initializers=init, opset=17, axis=axis, **attrs)


@pytest.mark.parametrize("shape,axis", [((4, 300), -1), ((2, 5, 64), -2), ((300, 20), -1), ((1000, 48), -1),
                                        ((3, 7000), -1), ((6, 1), -1), ((1, 8, 33), 1)])
def test_layernorm_matches_ort(shape, axis):
    x = _rand(shape, scale=3.0, shift=2.0)
    assert_matches_ort(_layernorm(x, axis, epsilon=1e-3), {"x": x})


@pytest.mark.parametrize("shape", [(7, 64), (600, 16)])  # one row, and many short rows, per partition
def test_layernorm_mean_and_inv_std_outputs(shape):
    x = _rand(shape, scale=2.0, shift=-1.0)
    got, _ = assert_matches_ort(_layernorm(x, -1, outputs=3), {"x": x})
    np.testing.assert_allclose(got["mean"].reshape(-1), x.mean(axis=-1), rtol=1e-4, atol=1e-5)


def test_layernorm_without_bias_and_with_run_time_scale():
    x = _rand((40, 64))
    scale = _rand((64,), shift=1.0)
    m = one_node_model("LayerNormalization", {"x": x, "scale": scale}, ["y"], opset=17)
    assert_matches_ort(m, {"x": x, "scale": scale})


def test_layernorm_rows_too_long_run_as_the_function_body():
    # too long for the LayerNormalization kernel: ONNX's function body runs instead
    x = _rand((2, LAYERNORM_MAX_ROW + 1))
    _, prog = assert_matches_ort(_layernorm(x, -1), {"x": x})
    assert not any(o.op_type == "LayerNormalization" for o in prog.origins)


def test_layernorm_bf16_precision():
    x = _rand((32, 96), scale=2.0)
    m = _layernorm(x, -1)
    got, _, _ = device_run(m, {"x": x}, precision="bf16")
    want = ort_run(m, {"x": x})["y"]
    np.testing.assert_allclose(got["y"], want, rtol=2e-2, atol=2e-2 * np.abs(want).max())


# ---- BatchNormalization ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 200, 7, 7), (64, 10), (2, 3, 50), (3, 40, 2, 2)])
def test_standalone_batchnorm_matches_ort(shape):
    c = shape[1]
    x = _rand(shape, scale=2.0)
    init = {"scale": _rand((c,)), "bias": _rand((c, 1)).reshape(c), "mean": _rand((c, 2))[:, 0].copy(),
            "var": np.abs(_rand((c, 3))[:, 0]) + 0.1}
    m = one_node_model("BatchNormalization", {"x": x}, ["y"], initializers=init, opset=15, epsilon=1e-3)
    _, prog = assert_matches_ort(m, {"x": x})
    assert not any(i.op == "matmul" for i in prog.instrs)


def test_batchnorm_float16():
    x = _rand((2, 8, 6, 6), dtype=np.float16)
    init = {k: np.linspace(0.5, 1.5, 8).astype(np.float16) for k in ("scale", "bias", "mean", "var")}
    m = one_node_model("BatchNormalization", {"x": x}, ["y"], initializers=init, opset=15)
    assert_matches_ort(m, {"x": x}, rtol=2e-3, atol=2e-3)


def test_batchnorm_run_time_parameters_are_folded_on_the_device():
    c = 6
    params = {"scale": _rand((c,)), "bias": _rand((c, 1)).reshape(c), "mean": _rand((c, 2))[:, 0].copy(),
              "var": np.abs(_rand((c, 3))[:, 0]) + 0.1}
    for shape in [(2, c, 5, 5), (7, c)]:
        x = _rand(shape)
        m = one_node_model("BatchNormalization", {"x": x, **params}, ["y"], opset=15, epsilon=1e-3)
        assert_matches_ort(m, {"x": x, **params})
