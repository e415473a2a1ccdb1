"""MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool on the emulated XPU against ONNX
Runtime."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run

from xputools.compiler.graph import Graph, Node, Value
from xputools.compiler.kernels.pool import Axis
from xputools.compiler.support import placement


def _rand(shape, dtype=np.float32):
    return np.random.default_rng(zlib.crc32(repr(shape).encode())).standard_normal(shape).astype(dtype)


POOLS = [  # (input shape, attributes)
    ((2, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((2, 3, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 4, 8, 10), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 0], ceil_mode=1)),
    ((1, 2, 9, 9), dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 5, 6, 7), dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")),
    ((1, 5, 6, 7), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 3, 11, 11), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ((2, 3, 20), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),          # 1-D
    ((2, 3, 21), dict(kernel_shape=[4], strides=[3], ceil_mode=1)),
    ((2, 2, 15), dict(kernel_shape=[3], dilations=[3], pads=[2, 1])),
    ((1, 130, 5, 5), dict(kernel_shape=[3, 3])),                              # >128 images
    ((1, 2, 6, 6), dict(kernel_shape=[1, 1], strides=[2, 2])),
]


@pytest.mark.parametrize("shape,attrs", POOLS)
def test_maxpool_matches_ort(shape, attrs):
    x = _rand(shape)
    assert_matches_ort(one_node_model("MaxPool", {"x": x}, ["y"], opset=19, **attrs), {"x": x})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape,attrs", POOLS)
def test_averagepool_matches_ort(shape, attrs, count_include_pad):
    x = _rand(shape)
    m = one_node_model("AveragePool", {"x": x}, ["y"], opset=19, count_include_pad=count_include_pad, **attrs)
    assert_matches_ort(m, {"x": x})


def test_large_image_is_pooled_in_bands_of_rows():
    x = _rand((1, 3, 150, 150))
    m = one_node_model("MaxPool", {"x": x}, ["y"], opset=17, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _, prog = assert_matches_ort(m, {"x": x})
    bands = [i for i in prog.instrs if i.op == "dma_copy" and i.operands["src"].space == "hbm"]
    assert len(bands) > 1
    assert all(i.operands["dst"].free_size <= 8192 for i in bands)


def test_a_window_is_one_reduce_instruction():
    x = _rand((4, 16, 12, 12))
    m = one_node_model("MaxPool", {"x": x}, ["y"], opset=17, kernel_shape=[3, 3], strides=[3, 3])
    _, prog = assert_matches_ort(m, {"x": x})
    assert [i.op for i in prog.instrs if i.engine == "dve"] == ["reduce"]


def test_average_divisors_follow_count_include_pad():
    axis = Axis(size=6, out=4, k=3, s=2, d=1, begin=1, end=1)  # ceil_mode: last window leaves the padding
    assert axis.counts(include_pad=True).tolist() == [3, 3, 3, 2]
    assert axis.counts(include_pad=False).tolist() == [2, 3, 3, 1]


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 200, 7, 7), (2, 3, 17), (1, 4, 1, 1), (1, 3, 100, 100)])
def test_global_pools_match_ort(op, shape):
    x = _rand(shape)
    assert_matches_ort(one_node_model(op, {"x": x}, ["y"], opset=17), {"x": x})


def test_pool_bf16_and_float16():
    x = _rand((1, 8, 10, 10))
    m = one_node_model("AveragePool", {"x": x}, ["y"], opset=17, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    got, _, _ = device_run(m, {"x": x}, precision="bf16")
    np.testing.assert_allclose(got["y"], ort_run(m, {"x": x})["y"], rtol=1e-2, atol=1e-3)
    x16 = x.astype(np.float16)
    m = one_node_model("MaxPool", {"x": x16}, ["y"], opset=17, kernel_shape=[2, 2], strides=[2, 2])
    got, _ = assert_matches_ort(m, {"x": x16}, rtol=0, atol=0)


def test_maxpool_indices_output_runs_on_the_host():
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    values = {"x": Value("x", (1, 2, 4, 4), f32), "y": Value("y", (1, 2, 2, 2), f32),
              "i": Value("i", (1, 2, 2, 2), i64)}
    node = Node("p", "MaxPool", ["x"], ["y", "i"], {"kernel_shape": [2, 2], "strides": [2, 2]})
    where, why = placement(node, Graph("t", ["x"], ["y", "i"], [node], values, {"": 17}))
    assert where == "host" and "Indices" in why


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_of_8_bit_integers_is_exact(dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(9).integers(info.min, info.max, (1, 3, 9, 9)).astype(dtype)
    m = one_node_model("MaxPool", {"x": x}, ["y"], opset=12, kernel_shape=[3, 3], strides=[2, 2],
                       pads=[1, 1, 1, 1])
    got, _ = assert_matches_ort(m, {"x": x}, rtol=0, atol=0)
    assert got["y"].dtype == dtype
