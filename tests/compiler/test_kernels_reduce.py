"""ReduceSum/Mean/Max/Min/L2 on the emulated XPU against ONNX Runtime, and the row planner."""
from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run

from device_model.arch import load_arch
from xputools.compiler.graph import Graph, Node, Value
from xputools.compiler.kernels.lib.rows import BUDGET, canonical_dims, plan_layout
from xputools.compiler.support import placement

OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2"]

# (shape, axes or None for all, keepdims)
CASES = [
    ((4, 300), [1], 1),             # rows on partitions, reduced axis contiguous
    ((4, 300), [0], 0),             # leading axis
    ((3, 5, 7), [1], 1),            # middle axis
    ((3, 5, 7), [0, 2], 0),         # two separated axes
    ((2, 3, 50, 5), [-1, 1], 1),    # negative axis, non-adjacent
    ((3, 5, 7), None, 1),           # all axes
    ((1000,), None, 0),             # 1-D full reduction
    ((300, 17), [-1], 0),           # more rows than partitions, odd sizes
    ((2, 200, 33), [1], 1),         # middle axis with >128 elements
    ((3, 1, 4), [1], 0),            # only a size-1 axis: an identity (L2: |x|)
]


def _model(op, x, axes, keepdims, opset=17):
    # ReduceSum takes axes as an input from opset 13, the others from opset 18
    if axes is not None and (op == "ReduceSum" or opset >= 18):
        return one_node_model(op, {"x": x}, ["y"], initializers={"axes": np.array(axes, np.int64)},
                              opset=opset, keepdims=keepdims)
    extra = {} if axes is None else {"axes": axes}
    return one_node_model(op, {"x": x}, ["y"], opset=opset, keepdims=keepdims, **extra)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,axes,keepdims", CASES)
def test_reduce_matches_ort(op, shape, axes, keepdims):
    rng = np.random.default_rng(zlib.crc32(repr((op, shape)).encode()))
    x = rng.standard_normal(shape).astype(np.float32)
    assert_matches_ort(_model(op, x, axes, keepdims), {"x": x})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2"])
def test_axes_as_input_from_opset_18(op):
    x = np.random.default_rng(1).standard_normal((6, 40, 9)).astype(np.float32)
    assert_matches_ort(_model(op, x, [-2], 0, opset=18), {"x": x})


def test_rows_longer_than_a_tile_are_combined_across_tiles():
    x = np.random.default_rng(2).standard_normal((3, 3 * BUDGET + 5)).astype(np.float32)
    for op in ("ReduceSum", "ReduceMax"):
        _, prog = assert_matches_ort(_model(op, x, [1], 1), {"x": x})
        assert any(i.op == "tensor_tensor" for i in prog.instrs)  # partial results combined


def test_partial_results_survive_many_tiles_on_a_small_sbuf():
    x = np.random.default_rng(10).standard_normal((5, 9 * BUDGET + 3)).astype(np.float32)
    assert_matches_ort(_model("ReduceL2", x, [1], 0), {"x": x}, arch=load_arch("xpu1-edge"))


def test_reducing_a_leading_axis_sums_over_partitions():
    x = np.random.default_rng(3).standard_normal((4096, 8)).astype(np.float32)
    _, prog = assert_matches_ort(_model("ReduceSum", x, [0], 1), {"x": x})
    assert any(i.op == "preduce" for i in prog.instrs)
    loads = [i for i in prog.instrs if i.op == "dma_copy" and i.operands["src"].space == "hbm"]
    # the input arrives in contiguous runs (no element-by-element transposing pattern)
    assert all(i.operands["src"].dims[-1][0] == 1 for i in loads)


def test_noop_with_empty_axes():
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    for op in ("ReduceMean", "ReduceL2"):  # identity, and |x| for L2 (as ONNX Runtime does)
        m = one_node_model(op, {"x": x}, ["y"], opset=18, noop_with_empty_axes=1)
        got, _ = assert_matches_ort(m, {"x": x})
        np.testing.assert_array_equal(got["y"], np.abs(x) if op == "ReduceL2" else x)
    # empty axes without noop reduce everything
    m = one_node_model("ReduceSum", {"x": x}, ["y"], initializers={"axes": np.array([], np.int64)}, opset=18)
    assert_matches_ort(m, {"x": x})


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin"])
def test_integer_reductions_are_exact(op, dtype):
    x = np.random.default_rng(5).integers(-1000, 1000, (70, 9)).astype(dtype)
    got, _ = assert_matches_ort(_model(op, x, [0], 0), {"x": x}, rtol=0, atol=0)
    assert got["y"].dtype == dtype


def test_float16_input():
    x = np.random.default_rng(6).standard_normal((10, 30)).astype(np.float16)
    assert_matches_ort(_model("ReduceMean", x, [1], 1), {"x": x}, rtol=2e-3, atol=1e-3)


def test_bf16_precision_uses_activation_tables_within_tolerance():
    x = np.random.default_rng(7).standard_normal((20, 64)).astype(np.float32)
    m = _model("ReduceL2", x, [1], 1)
    got, prog, _ = device_run(m, {"x": x}, precision="bf16")
    assert any(i.attrs.get("mode") == "table" for i in prog.instrs if i.op == "activate")
    np.testing.assert_allclose(got["y"], ort_run(m, {"x": x})["y"], rtol=2e-2)


def test_run_time_axes_fall_back_to_the_host():
    values = {"x": Value("x", (3, 4), np.dtype(np.float32)), "axes": Value("axes", (1,), np.dtype(np.int64)),
              "y": Value("y", (1, 4), np.dtype(np.float32))}
    node = Node("r", "ReduceSum", ["x", "axes"], ["y"])
    where, why = placement(node, Graph("t", ["x", "axes"], ["y"], [node], values, {"": 18}))
    assert where == "host" and "run time" in why


# ---- the planner -------------------------------------------------------------------------------------
def _covered(dims, plan):
    """How often each input element is read, and (input element -> output element) for each read."""
    seen = {}
    for t in plan.tiles:
        ranges = [range(t.q)] + [range(d.n) for d in t.dims]
        for idx in itertools.product(*ranges):
            xo = t.x_off + idx[0] * t.ps + sum(i * d.s for i, d in zip(idx[1:], t.dims))
            yo = t.y_off + idx[0] * t.po + sum(i * d.o for i, d in zip(idx[1:], t.dims))
            seen.setdefault(xo, []).append(yo)
    return seen


@pytest.mark.parametrize("shape,axes", [((5, 7, 3), [1]), ((300, 6), [0]), ((2, 3, 4, 5), [0, 2]),
                                        ((257,), [0]), ((9, 400), [1]), ((130, 2, 3), [2])])
def test_every_layout_reads_each_element_once_into_its_output(shape, axes):
    dims = canonical_dims(shape, axes)
    ref = np.arange(math.prod(shape)).reshape(shape)
    out_index = np.arange(math.prod(n for i, n in enumerate(shape) if i not in axes))
    kept_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
    expected = np.broadcast_to(out_index.reshape(kept_shape), shape).reshape(-1)
    for pdim in range(len(dims)):
        for budget in (7, 64, BUDGET):
            plan = plan_layout(dims, pdim, 16, budget, whole_reduced=False)
            seen = _covered(dims, plan)
            assert sorted(seen) == list(ref.reshape(-1))
            for xo, ys in seen.items():
                assert ys == [expected[xo]]
            for t in plan.tiles:
                assert t.free <= budget and t.q <= 16
                assert len(t.x_dims()) <= 4
