"""Resize on the emulated XPU against ONNX Runtime: nearest (every coordinate and rounding mode, as
strided copies) and linear (NCHW, as interpolation matmuls), fp32 and bf16."""
from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run

from xputools.compiler.kernels.resize import axis_pieces, linear_matrix, nearest_map

COORDS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _x(shape, dtype=np.float32):
    rng = np.random.default_rng(zlib.crc32(repr((shape, np.dtype(dtype).name)).encode()))
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _model(x, scales=None, sizes=None, **attrs):
    inits = {"roi": np.array([], np.float32),
             "scales": np.array(scales if scales is not None else [], np.float32)}
    if sizes is not None:
        inits["sizes"] = np.array(sizes, np.int64)
    return one_node_model("Resize", {"x": x}, ["y"], inits, opset=attrs.pop("opset", 17), **attrs)


def _ops(prog) -> Counter:
    return Counter(i.op for i in prog.instrs)


def check(x, rtol=1e-5, atol=1e-6, precision="fp32", **kw):
    model = _model(x, **kw)
    got, prog = assert_matches_ort(model, {"x": x}, rtol=rtol, atol=atol, precision=precision)
    assert got["y"].dtype == x.dtype
    return prog


# ---- nearest -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("nearest", NEAREST)
def test_nearest_modes(coord, nearest):
    for scales in ([1, 1, 2, 2], [1, 1, 1.7, 0.6], [1, 1, 0.5, 3]):
        check(_x((1, 2, 6, 8)), scales=scales, mode="nearest", coordinate_transformation_mode=coord,
              nearest_mode=nearest, rtol=0, atol=0)


def test_nearest_x2_is_one_strided_copy():
    prog = check(_x((1, 3, 8, 8)), scales=[1, 1, 2, 2], mode="nearest", rtol=0, atol=0)
    assert _ops(prog) == {"dma_copy": 1}  # small: one DMA with stride-0 repeats


def test_nearest_x2_large_is_staged_through_sbuf():
    prog = check(_x((1, 16, 32, 32)), scales=[1, 1, 2, 2], mode="nearest", rtol=0, atol=0)
    ops = _ops(prog)
    assert ops["copy"] >= 1 and ops["dma_copy"] <= 4


def test_nearest_sizes_and_other_ranks_and_dtypes():
    check(_x((2, 3, 10)), sizes=[2, 3, 25], mode="nearest", rtol=0, atol=0)
    check(_x((1, 2, 5, 7), np.uint8), sizes=[1, 2, 9, 3], mode="nearest",
          coordinate_transformation_mode="asymmetric")
    check(_x((2, 4, 6, 6), np.int32), scales=[1, 0.5, 2, 1.5], mode="nearest")
    check(_x((1, 2, 3, 4, 5)), scales=[1, 1, 2, 1, 3], mode="nearest", nearest_mode="floor")


def test_nearest_axes_attribute_opset18():
    check(_x((1, 2, 4, 6)), scales=[3, 2], mode="nearest", axes=[3, 2], opset=18, rtol=0, atol=0)


def test_nearest_downscale_ties():
    # half_pixel with scale 1/2 lands exactly on .5: the nearest mode decides
    assert nearest_map("half_pixel", "round_prefer_floor", 8, 4, np.float32(0.5)) == [0, 2, 4, 6]
    assert nearest_map("half_pixel", "round_prefer_ceil", 8, 4, np.float32(0.5)) == [1, 3, 5, 7]
    assert nearest_map("asymmetric", "floor", 4, 8, np.float32(2)) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_axis_pieces():
    assert axis_pieces([0, 0, 1, 1, 2, 2]) == [(0, 0, [(3, 2, 1), (2, 1, 0)])]
    assert axis_pieces([0, 0, 1, 1, 2]) == [(0, 0, [(2, 2, 1), (2, 1, 0)]), (4, 2, [(1, 1, 0)])]
    assert axis_pieces([0, 2, 4]) == [(0, 0, [(3, 1, 2), (1, 1, 0)])]
    # period 3 -> 2: three phases
    assert axis_pieces([0, 0, 1, 2, 2, 3]) == [(0, 0, [(2, 3, 2)]), (1, 0, [(2, 3, 2)]), (2, 1, [(2, 3, 2)])]


# ---- linear ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("scales", [[1, 1, 2, 1.5], [1, 1, 0.6, 0.5], [1, 1, 3, 0.8]])
def test_linear_coordinate_modes(coord, scales):
    prog = check(_x((1, 3, 7, 9)), scales=scales, mode="linear", coordinate_transformation_mode=coord)
    assert _ops(prog)["matmul"] >= 2


def test_linear_sizes_and_many_images():
    prog = check(_x((2, 5, 6, 10)), sizes=[2, 5, 12, 20], mode="linear")
    assert _ops(prog)["matmul"] == 2  # all 10 images in one group: 10*10 partitions, 10*20 columns


@pytest.mark.parametrize("shape,sizes", [
    ((1, 2, 4, 300), (1, 2, 5, 600)),   # W > 128 and Wo > 512: chunks, accumulation over W
    ((1, 1, 150, 8), (1, 1, 300, 16)),  # H > 128 (K chunks) and Ho > 128 (M chunks)
    ((1, 1, 400, 400), (1, 1, 800, 800)),  # matrices too big to stay in SBUF: loaded per use
])
def test_linear_large_images(shape, sizes):
    check(_x(shape), sizes=list(sizes), mode="linear", coordinate_transformation_mode="align_corners")


def test_linear_bf16_precision():
    x = _x((1, 4, 12, 10))
    check(x, scales=[1, 1, 2, 2], mode="linear", precision="bf16", rtol=2e-2, atol=2e-2)


def test_linear_weights_sum_to_one():
    for coord in COORDS:
        w = linear_matrix(coord, 7, 12, np.float32(12 / 7))
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
        assert (w >= 0).all() and ((w > 0).sum(axis=1) <= 2).all()


# ---- routing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,attrs", [
    ((1, 2, 4, 4), {"mode": "cubic"}),
    ((2, 6, 8), {"mode": "linear"}),                          # linear only on NCHW
    ((1, 2, 4, 4), {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
])
def test_unsupported_resize_runs_on_the_host(shape, attrs):
    x = _x(shape)
    scales = [1] * (len(shape) - 1) + [2]
    model = _model(x, scales=scales, **attrs)
    got, prog, _ = device_run(model, {"x": x})
    assert [h.op_type for h in prog.host_ops] == ["Resize"]
    np.testing.assert_allclose(got["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
