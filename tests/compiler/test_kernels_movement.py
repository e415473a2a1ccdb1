"""Data-movement kernels (Reshape-likes, Transpose, Concat, Split, Slice, Gather, Expand, Pad) on the
emulated XPU against ONNX Runtime: exact for every dtype, which stays the ONNX one."""
from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import onnx
import pytest
from device_util import assert_matches_ort, device_run, one_node_model, ort_run
from onnx import TensorProto, helper

from xputools.compiler.errors import CompileError
from xputools.compiler.kernels.lib.dims import merge_dims
from xputools.compiler.kernels.movement import index_pieces, slice_axis


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _data(shape, dtype=np.float32, key=()):
    rng = _rng(shape, np.dtype(dtype).name, key)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -2**50), min(info.max, 2**50)
        return rng.integers(lo, hi, shape, dtype=np.int64).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _ops(prog) -> Counter:
    return Counter(i.op for i in prog.instrs)


def check(op, inputs, initializers=None, outputs=("y",), opset=17, precision="fp32", rtol=1e-6, atol=0.0,
          **attrs):
    """Device == ORT (exact for data movement), dtypes preserved, nothing on the host."""
    model = one_node_model(op, inputs, list(outputs), initializers, opset=opset, **attrs)
    got, prog = assert_matches_ort(model, inputs, rtol=rtol, atol=atol, precision=precision)
    want = ort_run(model, inputs)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype, name
        assert got[name].shape == ref.shape, name
        if ref.dtype.kind in "biu":
            np.testing.assert_array_equal(got[name], ref)
    return prog


# ---- Reshape-likes: aliases, no instructions ---------------------------------------------------------
def _chain(first, attrs, x, extra_inits):
    """`first` then Relu, so the alias is read by another device node."""
    nodes = [helper.make_node(first, ["x"] + list(extra_inits), ["t"], name="mv", **attrs),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [onnx.numpy_helper.from_array(v, k) for k, v in extra_inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


@pytest.mark.parametrize("op,attrs,inits", [
    ("Reshape", {}, {"s": np.array([0, -1, 5], np.int64)}),
    ("Flatten", {"axis": -2}, {}),
    ("Squeeze", {}, {"a": np.array([-3], np.int64)}),
    ("Unsqueeze", {}, {"a": np.array([0, -1], np.int64)}),
])
def test_reshape_likes_alias_without_instructions(op, attrs, inits):
    x = _data((2, 1, 3, 5))
    model = _chain(op, attrs, x, inits)
    got, prog = assert_matches_ort(model, {"x": x}, rtol=0, atol=0)
    origin_ops = {prog.origins[i.dbg].op_type for i in prog.instrs if i.dbg >= 0}
    assert op not in origin_ops and "Relu" in origin_ops


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_identity_and_reshape_of_graph_input_to_output(dtype):
    x = _data((3, 4), dtype)
    check("Identity", {"x": x})
    check("Reshape", {"x": x}, {"s": np.array([4, 3], np.int64)})


# ---- Transpose ---------------------------------------------------------------------------------------
TRANSPOSES = [
    ((2, 3, 4), (2, 0, 1)),                 # small: direct DMA
    ((2, 3, 4, 5), (1, 0, 2, 3)),           # innermost axis stays: contiguous runs
    ((160, 200), None),                     # default perm (reverse), PE tiles with PSUM bank groups
    ((3, 130, 70), (0, 2, 1)),              # batched, >128 rows, odd sizes
    ((2, 3, 4, 5, 6), (4, 2, 0, 3, 1)),     # rank 5
    ((2, 3, 40, 50, 6), (0, 4, 2, 1, 3)),   # rank 5, short innermost folded with another axis
    ((2, 3, 4, 5, 2, 3), (5, 3, 1, 0, 4, 2)),  # rank 6, looped beyond 4 dims
    ((2, 3, 4, 5, 6, 7), (5, 4, 3, 2, 1, 0)),  # rank 6 reversed: tiny tiles gathered into one store
    ((1, 12, 64, 40), (0, 1, 3, 2)),        # attention-style K^T
]


@pytest.mark.parametrize("shape,perm", TRANSPOSES)
def test_transpose_matches_ort(shape, perm):
    attrs = {} if perm is None else {"perm": list(perm)}
    check("Transpose", {"x": _data(shape)}, **attrs)


@pytest.mark.parametrize("dtype,shape", [
    (np.int64, (200, 300)), (np.bool_, (256, 300)), (np.float16, (160, 200)),
    (np.int32, (150, 140)), (np.int8, (3, 100, 120)), (np.int64, (3, 4, 5)),
])
def test_transpose_dtypes_exact(dtype, shape):
    perm = list(range(len(shape)))[::-1]
    prog = check("Transpose", {"x": _data(shape, dtype)}, perm=perm)
    if np.prod(shape) > 10000:  # big enough for PE transposes to beat element-wise DMA
        assert _ops(prog)["transpose"] >= 1


def test_transpose_picks_pe_only_when_cheaper():
    small = check("Transpose", {"x": _data((8, 12))}, perm=[1, 0])
    big = check("Transpose", {"x": _data((512, 384))}, perm=[1, 0])
    assert _ops(small) == {"dma_copy": 1}
    assert _ops(big)["transpose"] == 12  # 4 x 3 tiles of 128 x 128
    assert _ops(big)["dma_copy"] < 12 + 12  # loads, and stores shared by PSUM bank groups


def test_transpose_bf16_precision_is_still_exact():
    check("Transpose", {"x": _data((130, 140))}, precision="bf16", perm=[1, 0])


# ---- Concat / Split --------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,shapes", [
    (0, [(2, 3, 4), (1, 3, 4), (3, 3, 4)]),
    (1, [(2, 3, 4), (2, 1, 4), (2, 5, 4)]),
    (-1, [(2, 3, 4), (2, 3, 1), (2, 3, 7)]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_concat_three_inputs(axis, shapes, dtype):
    inputs = {f"x{i}": _data(s, dtype, (i,)) for i, s in enumerate(shapes)}
    check("Concat", inputs, axis=axis)


def test_concat_with_a_constant_input():
    x = _data((2, 3, 4))
    prog = check("Concat", {"x": x}, {"c": _data((2, 2, 4), key=("c",))}, axis=1)
    assert _ops(prog) == {"dma_copy": 2}


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_split_uneven_by_input(dtype):
    check("Split", {"x": _data((2, 9, 4), dtype)}, {"s": np.array([2, 3, 4], np.int64)},
          outputs=("a", "b", "c"), axis=1)


def test_split_num_outputs_opset18_negative_axis():
    check("Split", {"x": _data((3, 8))}, outputs=("a", "b", "c"), opset=18, axis=-1, num_outputs=3)


def test_split_equal_default_axis():
    check("Split", {"x": _data((6, 5))}, outputs=("a", "b"))


# ---- Slice ------------------------------------------------------------------------------------------
def _slice_inits(starts, ends, axes=None, steps=None):
    d = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    if axes is not None:
        d["axes"] = np.array(axes, np.int64)
    if steps is not None:
        d["steps"] = np.array(steps, np.int64)
    return d


SLICES = [
    ((5, 6, 7), ([1, 2], [4, -1], [0, 2], None)),            # plain box
    ((5, 6, 7), ([0, 1], [100, 6], [-1, -2], [2, 3])),        # negative axes, steps > 1, clamped end
    ((5, 6, 7), ([4, -1], [-100, 0], [0, 2], [-1, -2])),     # negative steps (short: separate copies)
    ((300, 20), ([-1], [-1000], [0], [-1])),                 # reversed axis 0: gathers with iota rows
    ((4, 200), ([-1], [-1000], [1], [-3])),                  # reversed innermost axis, step -3
    ((6, 8, 10), ([5, 7], [-7, -9], [0, 1], [-1, -1])),      # two reversed axes
    ((256, 256), ([0, 0], [256, 256], [0, 1], [2, 2])),      # strided: staged through SBUF
]


@pytest.mark.parametrize("shape,spec", SLICES)
def test_slice_matches_ort(shape, spec):
    check("Slice", {"x": _data(shape)}, _slice_inits(*spec))


def test_slice_short_reversed_axes_are_separate_copies():
    prog = check("Slice", {"x": _data((5, 6, 7))}, _slice_inits([2, -1], [-100, 3], [1, 2], [-1, -2]))
    assert set(_ops(prog)) == {"dma_copy"}


def test_slice_reversed_rows_longer_than_a_staging_buffer():
    prog = check("Slice", {"x": _data((6, 9000))}, _slice_inits([-1], [-100], [0], [-1]))
    assert _ops(prog)["gather"] == 2  # each row split in two pieces


def test_empty_outputs_emit_nothing():
    prog = check("Slice", {"x": _data((4, 5))}, _slice_inits([3], [3], [0]))
    assert not [i for i in prog.instrs if i.op != "nop"]


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_slice_dtypes(dtype):
    check("Slice", {"x": _data((40, 6), dtype)}, _slice_inits([-2, 1], [-40, 6], [0, 1], [-2, 2]))


def test_slice_axis_semantics():
    assert slice_axis(10, -100, 100, 1) == (0, 10)
    assert slice_axis(10, 100, -100, -1) == (9, 10)
    assert slice_axis(10, -100, -200, -1) == (0, 1)  # ONNX clamps start to 0, end to -1
    assert slice_axis(10, 3, 3, 1) == (3, 0)
    assert slice_axis(10, 1, 8, 3) == (1, 3)


# ---- Gather -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,shape,idx", [
    (0, (50, 16), [[0, -1, 7], [49, -50, 3]]),    # embedding rows, negative indices wrap
    (1, (3, 10, 6), [0, -1, 5, 9]),
    (-1, (4, 5, 9), [[8, 0], [-2, 4]]),
    (0, (300, 8), list(range(299, -1, -2)) + [0, 5, -3]),  # > 128 indices: several gathers
])
def test_gather_runtime_int64_indices(axis, shape, idx):
    inputs = {"data": _data(shape), "idx": np.array(idx, np.int64)}
    prog = check("Gather", inputs, axis=axis)
    assert _ops(prog)["gather"] >= 1


def test_gather_embedding_from_constant_table_int32_indices():
    """Token ids at run time pick rows of a constant table (an initializer placed in HBM)."""
    table = _data((64, 32), key=("emb",))
    node = helper.make_node("Gather", ["table", "ids"], ["y"], name="g", axis=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [onnx.numpy_helper.from_array(table, "table")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"ids": np.array([[3, 63, 0, -64]], np.int32)}
    got, prog = assert_matches_ort(onnx.shape_inference.infer_shapes(model), feeds, rtol=0, atol=0)
    assert _ops(prog)["gather"] == 1
    np.testing.assert_array_equal(got["y"][0], table[[3, 63, 0, 0]])


@pytest.mark.parametrize("axis,idx", [(0, [2, -1, 0]), (1, [5, 6, 7, -1]), (1, 4), (2, [[0, 2], [4, 4]])])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_gather_constant_indices_are_dma_copies(axis, idx, dtype):
    """Up to two arithmetic runs of indices: one strided DMA each."""
    prog = check("Gather", {"data": _data((3, 10, 5), dtype)}, {"idx": np.array(idx, np.int64)}, axis=axis)
    assert set(_ops(prog)) == {"dma_copy"}


def test_gather_many_constant_indices_gather_at_run_time():
    """Copies into one output are serialized: beyond a few runs the POOL gather is cheaper."""
    idx = _rng("many").integers(-40, 40, 60)
    prog = check("Gather", {"data": _data((40, 7))}, {"idx": idx.astype(np.int64)}, axis=0)
    assert _ops(prog)["gather"] == 1


def test_gather_rows_longer_than_a_staging_buffer():
    prog = check("Gather", {"data": _data((5, 9000)), "idx": np.array([4, 0, -2], np.int64)}, axis=0)
    assert _ops(prog)["gather"] == 2


def test_gather_long_rows_keep_their_index_tile():
    """Eight row pieces of 32 KiB per index chunk: more than the SBUF ring holds, so the pieces must
    not be allocated past the index tile they all read."""
    prog = check("Gather", {"data": _data((5, 60000)), "idx": np.array([4, -1, 0, 2], np.int64)}, axis=0)
    assert _ops(prog)["gather"] == 8


def test_gather_runtime_bool_and_int64_data():
    for dtype in (np.bool_, np.int64):
        check("Gather", {"data": _data((20, 3), dtype), "idx": np.array([19, -20, 4], np.int64)}, axis=0)


def test_gather_constant_index_out_of_range_is_a_compile_error():
    model = one_node_model("Gather", {"data": _data((4, 3))}, ["y"], {"idx": np.array([4], np.int64)}, axis=0)
    with pytest.raises(CompileError, match="out of range"):
        device_run(model, {"data": _data((4, 3))})


# ---- Expand -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,target,dtype", [
    ((3, 1, 5), (2, 3, 4, 5), np.float32),
    ((64, 1), (64, 512), np.float32),          # innermost broadcast: staged through SBUF
    ((1, 6), (5, 1, 6), np.int64),
    ((2, 1, 1), (2, 3, 4), np.bool_),
    ((4, 1), (1,), np.float32),                # target smaller than the input: no-op broadcast
    ((200, 1), (200, 300), np.float32),        # 128 rows + a group of 72
])
def test_expand_matches_ort(shape, target, dtype):
    prog = check("Expand", {"x": _data(shape, dtype)}, {"shape": np.array(target, np.int64)})
    if target == (64, 512):
        assert _ops(prog)["copy"] == 1


# ---- Pad --------------------------------------------------------------------------------------------
PADS = [
    ("constant", (2, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1]),    # H/W: staged in SBUF
    ("edge", (2, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1]),
    ("reflect", (2, 3, 5, 6), [0, 0, 3, 2, 0, 0, 2, 4]),
    ("constant", (3, 4, 5), [1, 0, 2, 2, 1, 0]),           # outer axis padded: strided DMAs
    ("edge", (3, 4, 5), [2, 1, 0, 1, 0, 3]),
    ("reflect", (3, 4, 5), [2, 1, 0, 1, 2, 3]),
    ("reflect", (2, 3, 5, 6), [1, 0, -1, 2, 0, 0, 2, -2]),  # negative pads crop
    ("constant", (1, 2, 100, 100), [0, 0, 1, 1, 0, 0, 1, 1]),  # rows too big for one SBUF block
    ("edge", (200, 5, 6), [0, 1, 1, 0, 2, 0]),              # 128 rows + a group of 72
]


@pytest.mark.parametrize("mode,shape,pads", PADS)
def test_pad_matches_ort(mode, shape, pads):
    inits = {"pads": np.array(pads, np.int64)}
    if mode == "constant":
        inits["value"] = np.array(1.5, np.float32)
    check("Pad", {"x": _data(shape)}, inits, mode=mode)


def test_pad_axes_input_opset18_and_int64_value():
    x = _data((3, 4, 5), np.int64)
    check("Pad", {"x": x}, {"pads": np.array([1, 2, 3, 0], np.int64), "value": np.array(-7, np.int64),
                           "axes": np.array([-1, 0], np.int64)}, opset=18, mode="constant")


def test_pad_edge_int64():
    check("Pad", {"x": _data((4, 6), np.int64)}, {"pads": np.array([1, 2, 2, 1], np.int64)}, mode="edge")


def test_index_pieces():
    assert index_pieces([-1, -1, 0, 1, 2, 2, 2]) == [(0, 2, -1, 0), (2, 3, 0, 1), (5, 2, 2, 0)]
    assert index_pieces([2, 1, 0, 1, 2]) == [(0, 1, 2, 0), (1, 1, 1, 0), (2, 3, 0, 1)]


def test_merge_dims_merges_contiguous_dims():
    assert merge_dims([(2, 12, 12), (3, 4, 4), (4, 1, 1)]) == [(24, 1, 1)]
    assert merge_dims([(2, 12, 0), (1, 5, 5), (3, 4, 0)]) == [(6, 4, 0)]
    assert merge_dims([(2, 1, 3), (3, 2, 1)]) == [(2, 1, 3), (3, 2, 1)]


# ---- routing ----------------------------------------------------------------------------------------
def test_unsupported_pad_runs_on_the_host():
    # every mode runs on the device now (wrap through decompose); a run-time value with cropping does not
    x, value = _data((3, 4)), np.array(2.5, np.float32)
    model = one_node_model("Pad", {"x": x}, ["y"], {"pads": np.array([1, -1, 1, 1], np.int64), "value": value},
                           opset=19, mode="constant")
    model.graph.initializer.pop()  # the value becomes a graph input, fed at run time
    model.graph.input.append(helper.make_tensor_value_info("value", TensorProto.FLOAT, []))
    got, prog, _ = device_run(model, {"x": x, "value": value})
    assert [h.op_type for h in prog.host_ops] == ["Pad"]
    np.testing.assert_array_equal(got["y"], ort_run(model, {"x": x, "value": value})["y"])
