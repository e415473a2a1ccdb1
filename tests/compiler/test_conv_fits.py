"""Every conv `xpu check` calls supported compiles on the device: the planner drops tap packing and
narrows output-channel tiles until the working set fits SBUF; what still cannot fit runs on the host,
and check says so with the reason (it asks the same planner). A conv with constant weights that no
plan fits is split over its taps first (decompose/conv_split, tested in test_conv_split.py)."""
from __future__ import annotations

import numpy as np
import pytest
from device_util import assert_matches_ort
from model_builders import F32, const, make_model, rand
from onnx import helper

from xputools.compiler.frontend import import_model
from xputools.compiler.passes import run_passes
from xputools.compiler.support import check_report


def _conv_model(x_shape, w, strides, **attrs):
    return make_model([helper.make_node("Conv", ["x", "w"], ["y"], strides=strides, **attrs)],
                      [("x", F32, list(x_shape))], [("y", F32, None)], [const("w", w)])


def _checked_where(model) -> tuple[str, str]:
    row = check_report(run_passes(import_model(model)))["nodes"][0]
    return row["where"], row["why"]


@pytest.mark.parametrize("kernel", [64, 128, 256])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stft_front_end_conv_fits(kernel, precision):
    """1 input channel, 258 output channels, kernel up to 256, stride 128 on [1,1,640] (issue 11 §2)."""
    rng = np.random.default_rng(9100 + kernel)
    model = _conv_model((1, 1, 640), rand(rng, 258, 1, kernel) * 0.05, [128])
    assert _checked_where(model) == ("device", "supported")
    tol = 2e-2 if precision == "bf16" else 1e-4
    assert_matches_ort(model, {"x": rand(rng, 1, 1, 640)}, precision=precision, rtol=tol, atol=tol)


@pytest.mark.parametrize("x_shape, w_shape, strides", [
    ((1, 3, 64, 64), (16, 3, 31, 31), [8, 8]),     # large 2-D kernel, large stride
    ((1, 4, 40, 300), (8, 4, 9, 97), [1, 50]),     # wide kernel, large column stride
    ((1, 64, 1200), (64, 64, 255), [1]),            # long 1-D kernel over many channels
    ((1, 2, 2048), (300, 2, 512), [256]),           # long kernel, large stride, many output channels
])
def test_large_kernel_and_stride_convs_compile_on_device(x_shape, w_shape, strides):
    rng = np.random.default_rng(sum(w_shape))
    model = _conv_model(x_shape, rand(rng, *w_shape) * 0.02, strides)
    assert _checked_where(model) == ("device", "supported")
    assert_matches_ort(model, {"x": rand(rng, *x_shape)}, rtol=1e-3, atol=1e-4)


def test_a_conv_no_plan_fits_is_placed_on_the_host_by_check_and_compile_alike():
    """A 128x128 kernel whose weights are computed at run time: they exceed SBUF even one output channel
    at a time, and only constant weights are split over taps (test_conv_split.py)."""
    rng = np.random.default_rng(9200)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[64, 64])],
                       [("x", F32, [1, 1, 200, 200]), ("w", F32, [4, 1, 128, 128])], [("y", F32, None)])
    where, why = _checked_where(model)
    assert where == "host" and "bytes of SBUF per partition" in why
    assert "not split over its kernel taps: a Conv with run-time weights" in why
    feeds = {"x": rand(rng, 1, 1, 200, 200), "w": rand(rng, 4, 1, 128, 128) * 0.01}
    _, prog = assert_matches_ort(model, feeds, on_device=False, rtol=1e-3, atol=1e-4)
    assert [h.op_type for h in prog.host_ops] == ["Conv"]
