"""decompose/conv_split: a Conv whose weights no plan fits (issue 11 §2) runs on the device as partial
Convs over blocks of kernel taps, summed; `xpu check` says supported; a conv that fits is untouched."""
from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner
from device_util import assert_matches_ort
from model_builders import F32, const, make_model, rand
from onnx import helper

from xputools.cli import cli
from xputools.compiler.context import CompileOptions
from xputools.compiler.decompose import decompose
from xputools.compiler.decompose.conv_split import tap_blocks
from xputools.compiler.driver import check_model
from xputools.compiler.frontend import import_model
from xputools.compiler.passes import run_passes
from xputools.compiler.support import check_report, plan_problem


def _conv_model(x_shape, w, bias=None, **attrs):
    names = ["x", "w"] + (["b"] if bias is not None else [])
    inits = [const("w", w)] + ([const("b", bias)] if bias is not None else [])
    return make_model([helper.make_node("Conv", names, ["y"], name="big", **attrs)],
                      [("x", F32, list(x_shape))], [("y", F32, None)], inits)


def _split_on_device(x_shape, w_shape, seed, bias=True, **attrs):
    rng = np.random.default_rng(seed)
    model = _conv_model(x_shape, rand(rng, *w_shape) * 0.01, rand(rng, w_shape[0]) if bias else None, **attrs)
    g = import_model(model)
    assert plan_problem(g.nodes[0], g) is not None, "this conv must be one the planner refuses as it is"
    report = check_report(run_passes(g))
    assert report["all_on_device"], report["host_nodes"]
    ops = [r["op_type"] for r in report["nodes"]]
    assert ops.count("Conv") >= 2 and "Add" in ops
    assert all(r["origin"] == ["big"] for r in report["nodes"])  # every piece names the node it replaces
    _, prog = assert_matches_ort(model, {"x": rand(rng, *x_shape)}, rtol=1e-4, atol=1e-5)
    return prog


def test_1d_kernel_20000_stride_1_with_bias():
    _split_on_device((1, 1, 20040), (1, 1, 20000), 11_001)


def test_2d_large_kernel_with_padding_stride_dilation_and_bias():
    _split_on_device((1, 1, 170, 160), (1, 1, 80, 80), 11_002, strides=[2, 3], dilations=[2, 1],
                     pads=[3, 1, 2, 4])


def test_grouped_1d_with_same_padding_stride_and_dilation_no_bias():
    _split_on_device((1, 2, 9000), (2, 1, 7000), 11_003, bias=False, group=2, strides=[20], dilations=[1],
                     auto_pad="SAME_UPPER")


def test_a_kernel_row_too_long_splits_within_rows():
    """A 1 x 20000 2-D kernel: not even one whole kernel row fits, so taps of the row are blocked."""
    rng = np.random.default_rng(11_004)
    g = import_model(_conv_model((1, 1, 1, 20010), rand(rng, 1, 1, 1, 20000)))
    size = tap_blocks(g.nodes[0], g)
    assert size[0] == 1 and 0 < size[1] < 20000


def test_blocks_are_even_and_each_fits_the_planner():
    rng = np.random.default_rng(11_005)
    g = import_model(_conv_model((1, 1, 170, 160), rand(rng, 1, 1, 80, 80), strides=[2, 3]))
    rows, cols = tap_blocks(g.nodes[0], g)
    assert cols == 80 and 0 < rows < 80
    assert rows == -(-80 // -(-80 // rows))  # evened out: no block is much smaller than the others
    split = decompose(g)
    for node in (n for n in split.nodes if n.op_type == "Conv"):
        assert plan_problem(node, split) is None, node.name


def test_a_conv_that_fits_is_left_alone():
    rng = np.random.default_rng(11_006)
    g = import_model(_conv_model((1, 1, 640), rand(rng, 258, 1, 256), strides=[128]))
    assert [n.op_type for n in decompose(g).nodes] == ["Conv"]


def test_xpu_check_strict_says_the_split_conv_runs_on_the_device(tmp_path):
    rng = np.random.default_rng(11_007)
    path = tmp_path / "big.onnx"
    onnx.save(_conv_model((1, 1, 200, 200), rand(rng, 4, 1, 128, 128), strides=[64, 64]), path)
    result = CliRunner().invoke(cli, ["check", str(path), "--strict"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 on the host" in result.output and "big (Conv, " in result.output


def _conv_transpose_model(x_shape, w, bias=None, **attrs):
    names = ["x", "w"] + (["b"] if bias is not None else [])
    inits = [const("w", w)] + ([const("b", bias)] if bias is not None else [])
    return make_model([helper.make_node("ConvTranspose", names, ["y"], name="up", **attrs)],
                      [("x", F32, list(x_shape))], [("y", F32, None)], inits)


def test_conv_transpose_1d_large_kernel_with_stride_pads_output_padding_and_bias():
    rng = np.random.default_rng(11_008)
    model = _conv_transpose_model((1, 1, 3), rand(rng, 1, 1, 8000) * 0.01, rand(rng, 1), strides=[2],
                                  pads=[3900, 3950], output_padding=[1])
    g = import_model(model)
    assert plan_problem(g.nodes[0], g) is not None
    report = check_report(run_passes(g))
    assert report["all_on_device"], report["host_nodes"]
    assert [r["op_type"] for r in report["nodes"]].count("ConvTranspose") == 2
    assert_matches_ort(model, {"x": rand(rng, 1, 1, 3)}, rtol=1e-4, atol=1e-5)


def test_conv_transpose_block_the_pads_crop_away_is_dropped():
    """Pads crop the output to taps of the first block only: the second block's partial is not emitted."""
    rng = np.random.default_rng(11_009)
    model = _conv_transpose_model((1, 1, 40), rand(rng, 1, 1, 13000), strides=[3], pads=[5000, 7000],
                                  output_padding=[2])
    report = check_report(run_passes(import_model(model)))
    assert report["all_on_device"], report["host_nodes"]
    assert [r["op_type"] for r in report["nodes"]] == ["ConvTranspose", "Slice"]


def test_the_planner_is_asked_for_the_compile_target():
    """A kernel of 7000 taps: refused in fp32 (split), fits in bf16 (left alone, as before the split
    existed); 6000 taps fit xpu1 but not xpu1-edge, and `check --arch` splits it there."""
    rng = np.random.default_rng(11_010)
    g = import_model(_conv_model((1, 1, 7040), rand(rng, 1, 1, 7000)))
    assert [n.op_type for n in decompose(g, CompileOptions(precision="bf16")).nodes] == ["Conv"]
    assert [n.op_type for n in decompose(g).nodes].count("Conv") == 2
    model = _conv_model((1, 1, 6040), rand(rng, 1, 1, 6000))
    g = import_model(model)
    assert [n.op_type for n in decompose(g).nodes] == ["Conv"]
    assert [n.op_type for n in decompose(g, CompileOptions(arch="xpu1-edge")).nodes].count("Conv") >= 2
    assert check_model(model, arch="xpu1-edge")["all_on_device"]
