"""Rewrites of ONNX ops the device has no kernel for into ops it runs (a graph pass).

Each rewrite replaces one node by a few nodes the device already lowers (Gather, Where, compares,
reductions, Slice/Pad, elementwise arithmetic) or by a constant, computing the same result:

- GatherElements: Gather from the flattened data at flat indices = sum of each position's strides
  plus the (wrapped) index times the axis stride; constant indices give a constant flat index;
- GatherND: the same with one flat row index per index tuple;
- Trilu (constant k): Where with a constant triangle mask;
- ArgMax/ArgMin: Where(x == max(x), position, sentinel) reduced with Min (first index) or Max
  (select_last_index); Hardmax compares that index with every position;
- CumSum/CumProd (constant axis): a log-step scan (Hillis-Steele), shifted copies by Slice + Pad
  with the identity, exact for integers;
- TopK (constant k <= 16): k rounds of selecting the best element not taken yet;
- ScatterElements/ScatterND (none/add/max/min): each update's flat target compared with every row
  (quadratic: capped at SCATTER_MAX_PAIRS; the ISA has no scatter);
- Clip with run-time bounds: Max then Min; a constant Pad with a run-time value: Pad, then Where;
- Dropout in inference (or ratio 0): Identity, with an all-true mask constant;
- EyeLike: a constant (the output depends only on the static shape); Mean: Sum then Div;
- CastLike: Cast to the other input's dtype; LpNormalization (p 1 or 2): x over its norm;
- DFT/STFT: one MatMul with a constant DFT matrix (STFT frames by a constant-index Gather);
- IsInf: Equal with +-inf (of |x| when both signs are detected).

A rewrite that cannot apply (a run-time k or axis, a dtype the device does not store) leaves the node
alone and `rewrite_problem` says why; support.py reports that reason and the node runs on the host.
Inner values and nodes are named after the node they replace (`<node>/<what>`), and keep its
`origin`, so `xpu check` and the debugger show where they came from.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from .graph import Graph, Node, Value

# Inputs whose value decides how the device computes a node (not its output shape): a compile with
# these frozen (--const-inputs) runs the node on the device, otherwise on the host.
STRUCTURAL_INPUTS: dict[str, tuple[int, ...]] = {"Trilu": (1,), "CumSum": (1,), "CumProd": (1,), "DFT": (1, 2),
                                                  "STFT": (1, 3)}

STORED_DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")
REDUCE_AXES_INPUT_OPSET = 18  # ReduceMax/ReduceMin take axes as an input from this opset on
INDEX = np.dtype(np.int64)


class _Builder:
    """Nodes and values replacing one node: names derived from it, its origin kept."""

    def __init__(self, g: Graph, node: Node):
        self.g, self.node = g, node
        self.nodes: list[Node] = []

    def const(self, what: str, array) -> str:
        return self.g.add_const(f"{self.node.name}/{what}", np.asarray(array))

    def op(self, op_type: str, inputs: list[str], shape, dtype, what: str = "", out: str = "", **attrs) -> str:
        """Append `op_type(inputs)`; its output is `out` (an existing value) or a new value `<node>/<what>`."""
        if not out:
            out = self.g.unique_name(f"{self.node.name}/{what or op_type.lower()}")
            self.g.values[out] = Value(out, tuple(int(d) for d in shape), np.dtype(dtype))
        name = self.g.unique_node_name(f"{self.node.name}/{op_type}")
        while any(n.name == name for n in self.nodes):
            name += "_"
        self.nodes.append(Node(name, op_type, list(inputs), [out], attrs, origin=list(self.node.origin)))
        return out

    def reduce(self, op_type: str, x: str, axis: int, keepdims: bool, shape, dtype, what: str = "",
               out: str = "") -> str:
        """ReduceMax/ReduceMin/ReduceSum over one axis, spelled for the graph's opset."""
        axes_input = 13 if op_type == "ReduceSum" else REDUCE_AXES_INPUT_OPSET
        if self.g.opset.get("", 13) >= axes_input:
            axes = self.const("axes", np.array([axis], np.int64))
            return self.op(op_type, [x, axes], shape, dtype, what, out, keepdims=int(keepdims))
        return self.op(op_type, [x], shape, dtype, what, out, axes=[axis], keepdims=int(keepdims))


def _shape(g: Graph, name: str) -> tuple[int, ...]:
    return tuple(g.values[name].shape)


def _dtype(g: Graph, name: str) -> np.dtype:
    return np.dtype(g.values[name].dtype)


def _axis(value: int, rank: int) -> int | None:
    return value + rank if -rank <= value < 0 else (value if 0 <= value < rank else None)


def _stored(g: Graph, names: list[str]) -> str | None:
    for name in names:
        if name and np.dtype(g.values[name].dtype).name not in STORED_DTYPES:
            return f"dtype {np.dtype(g.values[name].dtype).name} of {name!r} is not stored on the device"
    return None


def _scalar_input(g: Graph, node: Node, i: int, what: str) -> tuple[int | None, str | None]:
    """The constant integer input `i` (None if omitted), or the reason it cannot be used."""
    name = node.input(i)
    if not name:
        return None, None
    c = g.const(name)
    if c is None:
        return None, (f"{what} {name!r} is computed at run time; freeze it with --const-inputs to run "
                      f"{node.op_type} on the device")
    return int(np.asarray(c).reshape(-1)[0]), None


# ---- GatherElements / GatherND ----------------------------------------------------------------------
def _wrap(b: _Builder, idx: str, dims, shape) -> str:
    """idx + dims where idx < 0 (ONNX counts negative indices from the end of each axis)."""
    g = b.g
    dt = _dtype(g, idx)
    dims_c = b.const("dims", np.asarray(dims, dt))
    neg = b.op("Less", [idx, b.const("zero", np.zeros((), dt))], shape, np.bool_, "negative")
    moved = b.op("Add", [idx, dims_c], shape, dt, "from_end")
    return b.op("Where", [neg, moved, idx], shape, dt, "wrapped")


def _gather_elements_problem(node: Node, g: Graph) -> str | None:
    data, idx = _shape(g, node.input(0)), _shape(g, node.input(1))
    if len(idx) != len(data) or _axis(int(node.attrs.get("axis", 0)), len(data)) is None:
        return "GatherElements: indices rank or axis does not match the data"
    c = g.const(node.input(1))
    if c is not None:
        axis = _axis(int(node.attrs.get("axis", 0)), len(data))
        if c.size and (c.min() < -data[axis] or c.max() >= data[axis]):
            return "GatherElements: a constant index is out of range"
    return None


def _element_offsets(dshape: tuple[int, ...], ishape: tuple[int, ...], axis: int) -> tuple[np.ndarray, int]:
    """For GatherElements/ScatterElements: each index position's flat offset in the data without its
    axis term, and the axis stride."""
    strides = [int(np.prod(dshape[i + 1:], dtype=np.int64)) for i in range(len(dshape))]
    grid = np.indices(ishape, dtype=np.int64)
    base = sum((grid[i] * strides[i] for i in range(len(ishape)) if i != axis), np.zeros(ishape, np.int64))
    return base, strides[axis]


def _element_targets(b: _Builder, idx: str, dshape: tuple[int, ...], axis: int) -> str:
    """The flat data position each element of the run-time `idx` names along `axis`."""
    g = b.g
    ishape, dt = _shape(g, idx), _dtype(g, idx)
    base, stride = _element_offsets(dshape, ishape, axis)
    wrapped = _wrap(b, idx, dshape[axis], ishape)
    scaled = b.op("Mul", [wrapped, b.const("axis_stride", np.array(stride, dt))], ishape, dt, "scaled")
    return b.op("Add", [scaled, b.const("base", base.astype(dt))], ishape, dt, "flat_indices")


def _row_targets(b: _Builder, idx: str, dshape: tuple[int, ...]) -> str:
    """For GatherND/ScatterND: the flat row of the data's first k dims that each k-tuple of the
    run-time `idx` [..., k] names."""
    g = b.g
    ishape, dt = _shape(g, idx), _dtype(g, idx)
    k = ishape[-1]
    strides = np.array([int(np.prod(dshape[j + 1:k], dtype=np.int64)) for j in range(k)], dt)
    wrapped = _wrap(b, idx, np.array(dshape[:k], dt), ishape)
    scaled = b.op("Mul", [wrapped, b.const("strides", strides)], ishape, dt, "scaled")
    return b.reduce("ReduceSum", scaled, len(ishape) - 1, False, ishape[:-1], dt, "flat_rows")


def _gather_elements(b: _Builder, node: Node) -> None:
    g = b.g
    data, idx = node.input(0), node.input(1)
    dshape = _shape(g, data)
    axis = _axis(int(node.attrs.get("axis", 0)), len(dshape))
    flat_data = b.op("Reshape", [data, b.const("flat_shape", np.array([-1], np.int64))],
                     (int(np.prod(dshape)),), _dtype(g, data), "flat_data")
    c = g.const(idx)
    if c is not None:
        base, stride = _element_offsets(dshape, _shape(g, idx), axis)
        k = np.asarray(c, np.int64)
        flat = b.const("flat_indices", base + np.where(k < 0, k + dshape[axis], k) * stride)
    else:
        flat = _element_targets(b, idx, dshape, axis)
    b.op("Gather", [flat_data, flat], (), None, out=node.outputs[0], axis=0)


def _gather_nd_problem(node: Node, g: Graph) -> str | None:
    dshape, ishape = _shape(g, node.input(0)), _shape(g, node.input(1))
    bd = int(node.attrs.get("batch_dims", 0))
    if not ishape or bd >= len(ishape) or bd + ishape[-1] > len(dshape) or dshape[:bd] != ishape[:bd]:
        return "GatherND: indices do not match the data"
    return None


def _gather_nd(b: _Builder, node: Node) -> None:
    """Batches are folded into the row index: batch b's rows start at b x rows per batch."""
    g = b.g
    data, idx = node.input(0), node.input(1)
    dshape, ishape = _shape(g, data), _shape(g, idx)
    bd, k = int(node.attrs.get("batch_dims", 0)), ishape[-1]
    rows_per_batch = int(np.prod(dshape[bd:bd + k], dtype=np.int64))
    batches = int(np.prod(dshape[:bd], dtype=np.int64))
    rest = dshape[bd + k:]
    tuples = ishape[:-1]
    batch_base = (np.arange(batches, dtype=np.int64) * rows_per_batch).reshape(
        dshape[:bd] + (1,) * (len(tuples) - bd))
    rows = b.op("Reshape", [data, b.const("rows_shape", np.array((batches * rows_per_batch,) + rest, np.int64))],
                (batches * rows_per_batch,) + rest, _dtype(g, data), "rows")
    c = g.const(idx)
    if c is not None:
        kk = np.asarray(c, np.int64)
        dims = np.array(dshape[bd:bd + k], np.int64)
        strides = np.array([int(np.prod(dshape[bd + j + 1:bd + k], dtype=np.int64)) for j in range(k)], np.int64)
        flat = b.const("flat_indices", (np.where(kk < 0, kk + dims, kk) * strides).sum(-1) + batch_base)
    else:
        in_batch = _row_targets(b, idx, dshape[bd:])
        dt = _dtype(g, idx)
        flat = b.op("Add", [in_batch, b.const("batch_base", batch_base.astype(dt))], tuples, dt, "flat_indices")
    b.op("Gather", [rows, flat], (), None, out=node.outputs[0], axis=0)


# ---- ScatterElements / ScatterND -----------------------------------------------------------------------
SCATTER_MAX_PAIRS = 1 << 20  # updates x targets compared: the rewrite is quadratic, a scatter kernel is not
SCATTER_REDUCTIONS = ("none", "add", "max", "min")


def _scatter_problem(node: Node, g: Graph) -> str | None:
    reduction = node.attrs.get("reduction", "none")
    if reduction not in SCATTER_REDUCTIONS:
        return f"{node.op_type} reduction {reduction!r} is not supported on the device"
    dshape, ishape, ushape = (_shape(g, node.input(i)) for i in range(3))
    if node.op_type == "ScatterElements":
        if len(ishape) != len(dshape) or ishape != ushape or _axis(int(node.attrs.get("axis", 0)), len(dshape)) is None:
            return "ScatterElements: indices, updates and data do not match"
        pairs = int(np.prod(ishape)) * int(np.prod(dshape))
    else:
        if not ishape or ishape[-1] > len(dshape) or ushape != ishape[:-1] + dshape[ishape[-1]:]:
            return "ScatterND: indices, updates and data do not match"
        pairs = int(np.prod(ishape[:-1])) * int(np.prod(dshape))
    if pairs > SCATTER_MAX_PAIRS:
        return f"{node.op_type} with {pairs} update/target pairs is too large for the device rewrite"
    return None


def _scatter_rows(b: _Builder, data: str, rows: str, updates: str, reduction: str, out: str) -> None:
    """out = data [R, W] with row rows[q] written from (or combined with) updates [Q, W]; where two
    updates hit one row the last wins (as the reference does)."""
    g = b.g
    (r, w), q, dt = _shape(g, data), _shape(g, rows)[0], _dtype(g, data)
    col = b.op("Reshape", [rows, b.const("column", np.array([q, 1], np.int64))], (q, 1), _dtype(g, rows), "targets")
    hit = b.op("Equal", [col, b.const("row", np.arange(r, dtype=_dtype(g, rows)).reshape(1, r))], (q, r), np.bool_,
               "hits")
    order = b.const("order", np.arange(q, dtype=np.int64).reshape(q, 1))
    latest = b.op("Where", [hit, order, b.const("none", np.array(-1, np.int64))], (q, r), INDEX, "writers")
    last = b.reduce("ReduceMax", latest, 0, False, (r,), INDEX, "last_writer")
    written = b.op("Less", [b.const("minus_one", np.array(-1, np.int64)), last], (r,), np.bool_, "written")
    written = b.op("Reshape", [written, b.const("row_shape", np.array([r, 1], np.int64))], (r, 1), np.bool_,
                   "written_rows")
    if reduction == "none":
        source = b.op("Max", [last, b.const("zero", np.array(0, np.int64))], (r,), INDEX, "source")
        new = b.op("Gather", [updates, source], (r, w), dt, "gathered", axis=0)
    else:
        hit3 = b.op("Reshape", [hit, b.const("hit_shape", np.array([q, r, 1], np.int64))], (q, r, 1), np.bool_,
                    "hits3")
        upd3 = b.op("Reshape", [updates, b.const("upd_shape", np.array([q, 1, w], np.int64))], (q, 1, w), dt,
                    "updates3")
        fill = 0 if reduction == "add" else _lowest(dt, reduction == "max")
        spread = b.op("Where", [hit3, upd3, b.const("fill", np.array(fill, dt))], (q, r, w), dt, "spread")
        combined = b.reduce({"add": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}[reduction], spread, 0,
                            False, (r, w), dt, "combined")
        op = {"add": "Add", "max": "Max", "min": "Min"}[reduction]
        new = b.op(op, [data, combined], (r, w), dt, "updated")
    b.op("Where", [written, new, data], (), None, out=out)


def _scatter(b: _Builder, node: Node) -> None:
    """Both scatters as rows: ScatterElements writes rows of one element of the flattened data."""
    g = b.g
    data, idx, upd, out = node.input(0), node.input(1), node.input(2), node.outputs[0]
    dshape, ishape, dt = _shape(g, data), _shape(g, idx), _dtype(g, data)
    if node.op_type == "ScatterElements":
        targets = _element_targets(b, idx, dshape, _axis(int(node.attrs.get("axis", 0)), len(dshape)))
        q, r, w = int(np.prod(ishape)), int(np.prod(dshape)), 1
    else:
        targets = _row_targets(b, idx, dshape)
        k = ishape[-1]
        q, r, w = int(np.prod(ishape[:-1])), int(np.prod(dshape[:k])), int(np.prod(dshape[k:]))
    flat = b.op("Reshape", [targets, b.const("flat", np.array([q], np.int64))], (q,), _dtype(g, idx), "targets_flat")
    data2 = b.op("Reshape", [data, b.const("data_rows", np.array([r, w], np.int64))], (r, w), dt, "data_rows")
    upd2 = b.op("Reshape", [upd, b.const("update_rows", np.array([q, w], np.int64))], (q, w), dt, "update_rows")
    result = g.unique_name(f"{node.name}/result_rows")
    g.values[result] = Value(result, (r, w), dt)
    _scatter_rows(b, data2, flat, upd2, node.attrs.get("reduction", "none"), result)
    b.op("Reshape", [result, b.const("shape", np.array(dshape, np.int64))], (), None, out=out)


# ---- Trilu ------------------------------------------------------------------------------------------
def _trilu_problem(node: Node, g: Graph) -> str | None:
    if len(_shape(g, node.input(0))) < 2:
        return "Trilu needs a tensor of rank 2 or more"
    return _scalar_input(g, node, 1, "k")[1]


def _trilu(b: _Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    rows, cols = _shape(g, x)[-2:]
    k = _scalar_input(g, node, 1, "k")[0] or 0
    diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    mask = diff >= k if int(node.attrs.get("upper", 1)) else diff <= k
    zero = b.const("zero", np.zeros((), _dtype(g, x)))
    b.op("Where", [b.const("mask", mask), x, zero], (), None, out=node.outputs[0])


# ---- ArgMax / ArgMin / Hardmax ------------------------------------------------------------------------
def _arg_problem(node: Node, g: Graph) -> str | None:
    shape = _shape(g, node.input(0))
    if _axis(int(node.attrs.get("axis", -1 if node.op_type == "Hardmax" else 0)), max(len(shape), 1)) is None:
        return f"{node.op_type}: axis out of range"
    if not shape or not all(shape):
        return f"{node.op_type} of a scalar or empty tensor"
    if node.op_type == "Hardmax" and g.opset.get("", 13) < 13:
        return "Hardmax before opset 13 (2-D coercion semantics) is not supported"
    return None


def _position(b: _Builder, shape: tuple[int, ...], axis: int) -> str:
    """A constant holding each element's position along `axis`, broadcastable to `shape`."""
    iota = np.arange(shape[axis], dtype=np.int64).reshape((shape[axis],) + (1,) * (len(shape) - axis - 1))
    return b.const("position", iota)


def _arg_index(b: _Builder, x: str, axis: int, largest: bool, last: bool, keepdims: bool, out: str = "") -> str:
    """The index along `axis` of the first (or `last`) largest (or smallest) element."""
    g = b.g
    shape = _shape(g, x)
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    best = b.reduce("ReduceMax" if largest else "ReduceMin", x, axis, True, kept, _dtype(g, x), "best")
    hit = b.op("Equal", [x, best], shape, np.bool_, "is_best")
    sentinel = b.const("sentinel", np.array(-1 if last else shape[axis], np.int64))
    where = b.op("Where", [hit, _position(b, shape, axis), sentinel], shape, INDEX, "candidates")
    final = shape[:axis] + shape[axis + 1:] if not keepdims else kept
    return b.reduce("ReduceMax" if last else "ReduceMin", where, axis, keepdims, final, INDEX, "index", out)


def _argmax(b: _Builder, node: Node) -> None:
    x = node.input(0)
    axis = _axis(int(node.attrs.get("axis", 0)), len(_shape(b.g, x)))
    _arg_index(b, x, axis, node.op_type == "ArgMax", bool(node.attrs.get("select_last_index", 0)),
               bool(node.attrs.get("keepdims", 1)), node.outputs[0])


def _hardmax(b: _Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    shape = _shape(g, x)
    axis = _axis(int(node.attrs.get("axis", -1)), len(shape))
    index = _arg_index(b, x, axis, True, False, True)
    hit = b.op("Equal", [_position(b, shape, axis), index], shape, np.bool_, "is_max")
    b.op("Cast", [hit], (), None, out=node.outputs[0], to=onnx.helper.np_dtype_to_tensor_dtype(_dtype(g, x)))


# ---- TopK ---------------------------------------------------------------------------------------------
MAX_TOPK_UNROLL = 16  # one selection round per k: beyond this a sort kernel would be the right tool


def _topk_problem(node: Node, g: Graph) -> str | None:
    shape = _shape(g, node.input(0))
    axis = _axis(int(node.attrs.get("axis", -1)), max(len(shape), 1))
    k = g.const(node.input(1))
    if axis is None or not shape:
        return "TopK: axis out of range"
    if k is None:
        return "TopK k is computed at run time"
    k = int(np.asarray(k).reshape(-1)[0])
    if not 0 < k <= min(shape[axis], MAX_TOPK_UNROLL):
        return f"TopK with k={k} is not supported on the device (1 to {MAX_TOPK_UNROLL}, at most the axis length)"
    return None


def _lowest(dt: np.dtype, largest: bool):
    """The value no element beats when looking for the largest (or smallest) one."""
    if dt.kind == "f" or dt.name == "bfloat16":
        return -np.inf if largest else np.inf
    info = np.iinfo(dt) if dt.kind in "iu" else None
    return (info.min if largest else info.max) if info is not None else (0 if largest else 1)


def _topk(b: _Builder, node: Node) -> None:
    """k rounds of: the best element not taken yet (the first of ties, as ONNX orders them), then
    mark it taken. Values and indices come out sorted."""
    g = b.g
    x = node.input(0)
    shape, dt = _shape(g, x), _dtype(g, x)
    axis = _axis(int(node.attrs.get("axis", -1)), len(shape))
    k = int(np.asarray(g.const(node.input(1))).reshape(-1)[0])
    largest = bool(node.attrs.get("largest", 1))
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    position = _position(b, shape, axis)
    lowest = b.const("lowest", np.array(_lowest(dt, largest), dt))
    sentinel = b.const("sentinel", np.array(shape[axis], np.int64))
    taken, values, indices = "", [], []
    for i in range(k):
        live = b.op("Where", [taken, lowest, x], shape, dt, f"live{i}") if taken else x
        best = b.reduce("ReduceMax" if largest else "ReduceMin", live, axis, True, kept, dt, f"value{i}")
        hit = b.op("Equal", [live, best], shape, np.bool_, f"is_best{i}")
        if taken:
            hit = b.op("And", [hit, b.op("Not", [taken], shape, np.bool_, f"free{i}")], shape, np.bool_,
                       f"free_best{i}")
        where = b.op("Where", [hit, position, sentinel], shape, INDEX, f"candidates{i}")
        index = b.reduce("ReduceMin", where, axis, True, kept, INDEX, f"index{i}")
        values.append(best)
        indices.append(index)
        if i < k - 1:
            chosen = b.op("Equal", [position, index], shape, np.bool_, f"chosen{i}")
            taken = b.op("Or", [taken, chosen], shape, np.bool_, f"taken{i}") if taken else chosen
    outs = list(node.outputs) + ["", ""]
    for parts, out in ((values, outs[0]), (indices, outs[1])):
        if out:
            b.op("Identity" if len(parts) == 1 else "Concat", parts, (), None, out=out,
                 **({} if len(parts) == 1 else {"axis": axis}))


# ---- Clip with run-time bounds, Pad with a run-time value ---------------------------------------------
def _clip_problem(node: Node, g: Graph) -> str | None:
    bounds = [node.input(i) for i in (1, 2) if node.input(i)]
    if all(g.is_const(n) for n in bounds):
        return "Clip with constant bounds runs as it is"
    return None


def _clip(b: _Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = _shape(g, out), _dtype(g, out)
    lo, hi = node.input(1), node.input(2)
    y = b.op("Max", [x, lo], shape, dt, "above_min", "" if hi else out) if lo else x
    if hi:  # min > max gives max, as ONNX (numpy.clip) says
        b.op("Min", [y, hi], (), None, out=out)


def _pad_problem(node: Node, g: Graph) -> str | None:
    if node.attrs.get("mode", "constant") != "constant" or not node.input(2) or g.is_const(node.input(2)):
        return "only a constant Pad with a run-time value is rewritten"
    if not all(g.is_const(n) for n in (node.input(1), node.input(3)) if n):
        return "Pad pads/axes computed at run time"
    if np.asarray(g.const(node.input(1))).min(initial=0) < 0:
        return "Pad with negative pads and a run-time value"
    return None


def _any_pad_problem(node: Node, g: Graph) -> str | None:
    return (_wrap_pad_problem if node.attrs.get("mode") == "wrap" else _pad_problem)(node, g)


def _any_pad(b: _Builder, node: Node) -> None:
    (_wrap_pad if node.attrs.get("mode") == "wrap" else _pad)(b, node)


def _pad(b: _Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    rank = len(_shape(g, x))
    pads = [int(p) for p in np.asarray(g.const(node.input(1))).reshape(-1)]
    axes = ([int(a) % rank for a in np.asarray(g.const(node.input(3))).reshape(-1)] if node.input(3)
            else list(range(rank)))
    width = [(0, 0)] * rank
    for j, a in enumerate(axes):
        width[a] = (pads[j], pads[j + len(axes)])
    inside = np.pad(np.ones(_shape(g, x), np.bool_), width)
    zero_padded = b.op("Pad", [x, node.input(1), "", node.input(3)], _shape(g, out), _dtype(g, out), "zero_padded",
                       mode="constant")
    if not node.input(3):
        b.nodes[-1].inputs = b.nodes[-1].inputs[:2]
    b.op("Where", [b.const("inside", inside), zero_padded, node.input(2)], (), None, out=out)


# ---- DFT / STFT -------------------------------------------------------------------------------------
def _dft_params(node: Node, g: Graph) -> tuple[int, int, bool, bool] | str:
    """(signal axis, transform length, inverse, onesided) of a DFT, or why it cannot be rewritten."""
    shape = _shape(g, node.input(0))
    rank = len(shape)
    if rank < 2 or shape[-1] not in (1, 2):
        return "DFT input must end in a dim of 1 (real) or 2 (complex)"
    if node.input(2) or g.opset.get("", 17) >= 20:
        axis, why = _scalar_input(g, node, 2, "axis")
        axis = -2 if axis is None and not why else axis
    else:
        axis, why = int(node.attrs.get("axis", 1)), None
    length, why_len = _scalar_input(g, node, 1, "dft_length")
    if why or why_len:
        return why or why_len
    if not -rank <= axis < rank or axis % rank == rank - 1:
        return "DFT axis out of range"
    axis %= rank
    inverse, onesided = bool(node.attrs.get("inverse", 0)), bool(node.attrs.get("onesided", 0))
    n = shape[axis]
    length = length if length is not None else (2 * (n - 1) if inverse and onesided else n)
    if length < 1:
        return "DFT length must be positive"
    return axis, length, inverse, onesided


def _dft_matrix(n: int, channels: int, length: int, inverse: bool, onesided: bool,
                window: np.ndarray | None = None) -> np.ndarray:
    """The constant W with y = x W for x = [n inputs x channels (re[, im])] and y = [outputs x (re, im)]
    (only re for an inverse one-sided transform): the DFT as one matrix product, in float64."""
    if inverse and onesided:  # the spectrum's missing half is the conjugate mirror of the given one
        used = np.arange(min(n, length // 2 + 1))
        weight = np.where((used == 0) | ((length % 2 == 0) & (used == length // 2)), 1.0, 2.0) / length
        phase = 2 * np.pi * np.outer(used, np.arange(length)) / length
        w = np.zeros((n, channels, length, 1))
        w[used, 0, :, 0] = weight[:, None] * np.cos(phase)
        if channels == 2:
            w[used, 1, :, 0] = -weight[:, None] * np.sin(phase)
        return w.reshape(n * channels, length)
    outputs = length // 2 + 1 if onesided else length
    sign, scale = (1.0, 1.0 / length) if inverse else (-1.0, 1.0)
    used = np.arange(min(n, length))  # a longer signal is cut, a shorter one padded with zeros
    phase = 2 * np.pi * np.outer(used, np.arange(outputs)) / length
    cos, sin = np.cos(phase) * scale, np.sin(phase) * scale
    if window is not None:
        cos, sin = cos * window[used, None], sin * window[used, None]
    w = np.zeros((n, channels, outputs, 2))
    w[used, 0, :, 0], w[used, 0, :, 1] = cos, sign * sin
    if channels == 2:
        w[used, 1, :, 0], w[used, 1, :, 1] = -sign * sin, cos
    return w.reshape(n * channels, outputs * 2)


def _dft_problem(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.input(0))
    if not (dt.kind == "f" or dt.name == "bfloat16"):
        return f"{node.op_type} of {dt.name}"
    params = _dft_params(node, g) if node.op_type == "DFT" else _stft_params(node, g)
    return params if isinstance(params, str) else None


def _dft(b: _Builder, node: Node) -> None:
    """Signal axis next to the channel dim, rows flattened, one MatMul with the DFT matrix, back."""
    g = b.g
    x = node.input(0)
    shape, dt = _shape(g, x), _dtype(g, x)
    axis, length, inverse, onesided = _dft_params(node, g)
    rank, n, channels = len(shape), shape[axis], shape[-1]
    w = _dft_matrix(n, channels, length, inverse, onesided)
    perm = [i for i in range(rank - 1) if i != axis] + [axis, rank - 1]
    moved = tuple(shape[i] for i in perm)
    if perm != list(range(rank)):
        x = b.op("Transpose", [x], moved, dt, "signal_last", perm=perm)
    rows = int(np.prod(moved[:-2], dtype=np.int64))
    flat = b.op("Reshape", [x, b.const("rows", np.array([rows, n * channels], np.int64))], (rows, n * channels), dt,
                "signal_rows")
    spectrum = b.op("MatMul", [flat, b.const("dft_matrix", w.astype(dt))], (rows, w.shape[1]), dt, "spectrum_rows")
    out_channels = 1 if inverse and onesided else 2
    out_moved = moved[:-2] + (w.shape[1] // out_channels, out_channels)
    back = [perm.index(i) for i in range(rank)]
    if back == list(range(rank)):
        b.op("Reshape", [spectrum, b.const("out_shape", np.array(out_moved, np.int64))], (), None,
             out=node.outputs[0])
        return
    unflat = b.op("Reshape", [spectrum, b.const("out_shape", np.array(out_moved, np.int64))], out_moved, dt,
                  "spectrum")
    b.op("Transpose", [unflat], (), None, out=node.outputs[0], perm=back)


def _stft_params(node: Node, g: Graph) -> tuple[int, int, bool] | str:
    """(frame step, frame length, onesided) of an STFT, or why it cannot be rewritten."""
    shape = _shape(g, node.input(0))
    if len(shape) != 3 or shape[-1] not in (1, 2):
        return "STFT signal must be [batch, length, 1 or 2]"
    step, why = _scalar_input(g, node, 1, "frame_step")
    length, why_len = _scalar_input(g, node, 3, "frame_length")
    if why or why_len or step is None:
        return why or why_len or "STFT needs a frame_step"
    if node.input(2):
        length = _shape(g, node.input(2))[0]
    if length is None or not 0 < length <= shape[1] or step < 1:
        return "STFT frame length/step out of range"
    return step, length, bool(node.attrs.get("onesided", 1))


def _stft(b: _Builder, node: Node) -> None:
    """Frames by a constant-index Gather, the (constant) window folded into the DFT matrix."""
    g = b.g
    x, window = node.input(0), node.input(2)
    (batch, total, channels), dt = _shape(g, x), _dtype(g, x)
    step, length, onesided = _stft_params(node, g)
    frames = (total - length) // step + 1
    starts = np.arange(frames, dtype=np.int64)[:, None] * step + np.arange(length, dtype=np.int64)
    framed_shape = (batch, frames, length, channels)
    framed = b.op("Gather", [x, b.const("frame_positions", starts)], framed_shape, dt, "frames", axis=1)
    const_window = g.const(window) if window else None
    if window and const_window is None:  # a run-time window multiplies the frames
        column = b.op("Reshape", [window, b.const("window_column", np.array([length, 1], np.int64))], (length, 1),
                      dt, "window_column")
        framed = b.op("Mul", [framed, column], framed_shape, dt, "windowed")
    w = _dft_matrix(length, channels, length, False, onesided,
                    None if const_window is None else np.asarray(const_window, np.float64))
    rows = b.op("Reshape", [framed, b.const("rows", np.array([batch * frames, length * channels], np.int64))],
                (batch * frames, length * channels), dt, "frame_rows")
    spectrum = b.op("MatMul", [rows, b.const("dft_matrix", w.astype(dt))], (batch * frames, w.shape[1]), dt,
                    "spectrum_rows")
    b.op("Reshape", [spectrum, b.const("out_shape", np.array([batch, frames, w.shape[1] // 2, 2], np.int64))], (),
         None, out=node.outputs[0])


# ---- GridSample --------------------------------------------------------------------------------------
GRID_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest"}
GRID_PADDING = ("zeros", "border", "reflection")


def _grid_problem(node: Node, g: Graph) -> str | None:
    mode = node.attrs.get("mode", "linear" if g.opset.get("", 16) >= 20 else "bilinear")
    if mode not in GRID_MODES:
        return f"GridSample mode {mode!r} is not supported on the device (nearest, linear)"
    if node.attrs.get("padding_mode", "zeros") not in GRID_PADDING:
        return f"GridSample padding_mode {node.attrs.get('padding_mode')!r} is not supported"
    xs, gs = _shape(g, node.input(0)), _shape(g, node.input(1))
    if len(xs) < 3 or len(gs) != len(xs) or gs[-1] != len(xs) - 2 or gs[0] != xs[0]:
        return "GridSample: grid does not match the input"
    dt = _dtype(g, node.input(0))
    if dt.name != "float32" or _dtype(g, node.input(1)).name != "float32":
        return "GridSample on the device is float32 only"
    return None


class _Coords:
    """Float32 coordinate arithmetic on one grid component, spelled in the reference's operation order."""

    def __init__(self, b: _Builder, shape: tuple[int, ...], tag: str):
        self.b, self.shape, self.tag = b, shape, tag

    def c(self, value: float) -> str:
        return self.b.const(f"{self.tag}_c", np.array(value, np.float32))

    def op(self, op_type: str, a: str, other, what: str, dtype=np.float32) -> str:
        other = self.c(other) if isinstance(other, (int, float)) else other
        return self.b.op(op_type, [a, other], self.shape, dtype, f"{self.tag}_{what}")

    def unary(self, op_type: str, a: str, what: str, dtype=np.float32) -> str:
        return self.b.op(op_type, [a], self.shape, dtype, f"{self.tag}_{what}")

    def outside(self, x: str, lo: float, hi: float) -> str:
        below, above = self.op("Less", x, lo, "below", np.bool_), self.op("Greater", x, hi, "above", np.bool_)
        return self.b.op("Or", [below, above], self.shape, np.bool_, f"{self.tag}_outside")

    def clamp(self, x: str, lo: float, hi: float) -> str:
        return self.op("Min", self.op("Max", x, lo, "at_least"), hi, "clamped")

    def reflect(self, x: str, lo: float, hi: float) -> str:
        """Fold x back into [lo, hi] by reflecting at the borders (the reference's _gs_reflect)."""
        below = self.op("Less", x, lo, "reflect_below", np.bool_)
        dist = self.b.op("Where", [below, self.op("Sub", self.c(lo), x, "under"), self.op("Sub", x, hi, "over")],
                         self.shape, np.float32, f"{self.tag}_distance")
        span = hi - lo
        flips = self.unary("Floor", self.op("Div", dist, span, "spans"), "flips")
        rest = self.op("Sub", dist, self.op("Mul", flips, span, "folded"), "rest")
        half = self.unary("Floor", self.op("Div", flips, 2.0, "half_flips"), "whole_pairs")
        even = self.op("Equal", self.op("Sub", flips, self.op("Mul", half, 2.0, "paired"), "parity"), 0.0, "even",
                       np.bool_)
        from_lo = self.b.op("Equal", [below, even], self.shape, np.bool_, f"{self.tag}_from_low")
        return self.b.op("Where", [from_lo, self.op("Add", self.c(lo), rest, "low_side"),
                                   self.op("Sub", self.c(hi), rest, "high_side")], self.shape, np.float32,
                         f"{self.tag}_reflected")

    def pad(self, x: str, mode: str, lo: float, hi: float, size: int) -> str:
        """The reference's coordinate fix-up: only a coordinate outside [lo, hi] moves."""
        if mode == "zeros":
            return x
        moved = self.clamp(x, 0.0, float(size - 1)) if mode == "border" else self.reflect(x, lo, hi)
        return self.b.op("Where", [self.outside(x, lo, hi), moved, x], self.shape, np.float32, f"{self.tag}_padded")


def _grid_sample(b: _Builder, node: Node) -> None:
    """Per spatial dim: the grid coordinate in pixels, its padding fix-up, the corner(s) and weights;
    then each corner a Gather of channel rows from the input (channels last), combined dim by dim
    from the last, as the reference nests its 1-D interpolations."""
    g = b.g
    x, grid, out = node.input(0), node.input(1), node.outputs[0]
    xs, gs = _shape(g, x), _shape(g, grid)
    batch, channels, spatial = xs[0], xs[1], xs[2:]
    k, o = len(spatial), gs[1:-1]
    mode = GRID_MODES[node.attrs.get("mode", "linear" if g.opset.get("", 16) >= 20 else "bilinear")]
    padding, align = node.attrs.get("padding_mode", "zeros"), bool(node.attrs.get("align_corners", 0))
    cshape = (batch,) + o
    pixels = int(np.prod(spatial))
    rows = b.op("Transpose", [x], (batch,) + spatial + (channels,), np.float32, "channels_last",
                perm=[0] + list(range(2, 2 + k)) + [1])
    rows = b.op("Reshape", [rows, b.const("rows", np.array([batch * pixels, channels], np.int64))],
                (batch * pixels, channels), np.float32, "pixel_rows")
    row_base = b.const("batch_rows", (np.arange(batch, dtype=np.int64) * pixels).reshape((batch,) + (1,) * len(o)))
    corners: list[list[tuple[str, str, str]]] = []  # per dim: (index, weight, valid) of each corner
    for i, size in enumerate(spatial):
        cc = _Coords(b, cshape, f"d{i}")
        comp = b.op("Gather", [grid, b.const(f"d{i}_component", np.array(k - 1 - i, np.int64))], cshape, np.float32,
                    f"d{i}_grid", axis=-1)
        if align:
            pos = cc.op("Mul", cc.op("Div", cc.op("Add", comp, 1.0, "shifted"), 2.0, "unit"), float(size - 1), "pos")
        else:
            pos = cc.op("Div", cc.op("Sub", cc.op("Mul", cc.op("Add", comp, 1.0, "shifted"), float(size), "scaled"),
                                     1.0, "centred"), 2.0, "pos")
        if mode == "nearest":
            pos = cc.unary("Round", pos, "nearest")
        lo, hi = (0.0, float(size - 1)) if align else (-0.5, size - 0.5)
        pos = cc.pad(pos, padding, lo, hi, size)
        if mode == "nearest":
            starts, weights = [pos], [""]
        else:
            first = cc.unary("Floor", pos, "floor")
            w1 = cc.op("Sub", pos, first, "w1")
            starts, weights = [first, cc.op("Add", first, 1.0, "next")], [cc.op("Sub", cc.c(1.0), w1, "w0"), w1]
        dim = []
        for j, (start, weight) in enumerate(zip(starts, weights)):
            if padding == "reflection" and mode != "nearest":
                start = cc.pad(start, padding, lo, hi, size)
            valid = ""
            if padding == "zeros":
                valid = b.op("And", [cc.op("GreaterOrEqual", start, 0.0, f"from0_{j}", np.bool_),
                                     cc.op("LessOrEqual", start, float(size - 1), f"to_end_{j}", np.bool_)],
                             cshape, np.bool_, f"d{i}_valid{j}")
            start = cc.clamp(start, 0.0, float(size - 1))  # a zeros-padded corner reads any row, then 0
            index = b.op("Cast", [start], cshape, INDEX, f"d{i}_index{j}", to=onnx.TensorProto.INT64)
            dim.append((index, weight, valid))
        corners.append(dim)
    strides = [int(np.prod(spatial[i + 1:], dtype=np.int64)) for i in range(k)]
    values: dict[tuple[int, ...], str] = {}
    vshape = cshape + (channels,)
    for combo in np.ndindex(*(len(d) for d in corners)):
        tag = "".join(map(str, combo))
        row = row_base
        valid = ""
        for i, j in enumerate(combo):
            index, _, ok = corners[i][j]
            term = b.op("Mul", [index, b.const("stride", np.array(strides[i], np.int64))], cshape, INDEX,
                        f"c{tag}_term{i}") if strides[i] != 1 else index
            row = b.op("Add", [row, term], cshape, INDEX, f"c{tag}_row{i}")
            if ok:
                valid = b.op("And", [valid, ok], cshape, np.bool_, f"c{tag}_valid{i}") if valid else ok
        v = b.op("Gather", [rows, row], vshape, np.float32, f"c{tag}_value", axis=0)
        if valid:
            mask = b.op("Reshape", [valid, b.const("mask_shape", np.array(cshape + (1,), np.int64))], cshape + (1,),
                        np.bool_, f"c{tag}_mask")
            zero = b.const("zero", np.zeros((), np.float32))
            v = b.op("Where", [mask, v, zero], vshape, np.float32, f"c{tag}_padded")
        values[combo] = v
    for i in reversed(range(k)):  # combine the last dim first, as the reference's nesting does
        if len(corners[i]) == 1:
            values = {c[:i]: v for c, v in values.items()}
            continue
        w = [b.op("Reshape", [corners[i][j][1], b.const("weight_shape", np.array(cshape + (1,), np.int64))],
                  cshape + (1,), np.float32, f"d{i}_weight{j}") for j in (0, 1)]
        merged = {}
        for c in sorted({c[:i] for c in values}):
            t0 = b.op("Mul", [w[0], values[c + (0,)]], vshape, np.float32, "weighted")
            t1 = b.op("Mul", [w[1], values[c + (1,)]], vshape, np.float32, "weighted")
            merged[c] = b.op("Add", [t0, t1], vshape, np.float32, "blend")
        values = merged
    b.op("Transpose", [values[()]], (), None, out=out, perm=[0, len(o) + 1] + list(range(1, len(o) + 1)))


# ---- CumSum / CumProd -------------------------------------------------------------------------------
def _cum_problem(node: Node, g: Graph) -> str | None:
    axis, why = _scalar_input(g, node, 1, "axis")
    if why:
        return why
    shape = _shape(g, node.input(0))
    if _axis(axis or 0, len(shape)) is None:
        return f"{node.op_type}: axis out of range"
    if not all(shape):
        return f"{node.op_type} of an empty tensor"
    return None


def _slice(b: _Builder, y: str, axis: int, start: int, end: int, what: str) -> str:
    """y[start:end] along `axis`."""
    shape = _shape(b.g, y)
    bounds = [b.const(w, np.array([v], np.int64)) for w, v in (("starts", start), ("ends", end), ("axes", axis))]
    return b.op("Slice", [y] + bounds, shape[:axis] + (end - start,) + shape[axis + 1:], _dtype(b.g, y), what)


def _shift(b: _Builder, y: str, axis: int, s: int, reverse: bool, identity: str) -> str:
    """y moved by `s` along `axis` (towards the end, or the start when `reverse`), the gap filled
    with the operation's identity."""
    g = b.g
    shape = _shape(g, y)
    n, rank = shape[axis], len(shape)
    starts, ends = (s, n) if reverse else (0, n - s)
    part = _slice(b, y, axis, starts, ends, f"part{s}")
    pads = np.zeros(2 * rank, np.int64)
    pads[axis + (rank if reverse else 0)] = s
    return b.op("Pad", [part, b.const("pads", pads), identity], shape, _dtype(g, y), f"shifted{s}", mode="constant")


def _cumulative(b: _Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    shape, dt = _shape(g, x), _dtype(g, x)
    axis = _axis(_scalar_input(g, node, 1, "axis")[0] or 0, len(shape))
    reverse, exclusive = bool(node.attrs.get("reverse", 0)), bool(node.attrs.get("exclusive", 0))
    product = node.op_type == "CumProd"
    identity = b.const("identity", np.array(1 if product else 0, dt))
    combine = "Mul" if product else "Add"
    n = shape[axis]
    y = _shift(b, x, axis, 1, reverse, identity) if exclusive and n > 1 else x
    if exclusive and n == 1:  # nothing before the only element
        y = b.op("Expand", [identity, b.const("shape", np.array(shape, np.int64))], shape, dt, "empty_scan")
    steps = []
    s = 1
    while s < n:
        steps.append(s)
        s *= 2
    if not steps:
        b.op("Identity", [y], (), None, out=node.outputs[0])
        return
    for i, s in enumerate(steps):
        shifted = _shift(b, y, axis, s, reverse, identity)
        last = i == len(steps) - 1
        y = b.op(combine, [y, shifted], shape, dt, f"scan{s}", node.outputs[0] if last else "")


# ---- ReduceProd ----------------------------------------------------------------------------------------
def _reduce_axes(node: Node, g: Graph) -> list[int] | str:
    rank = len(_shape(g, node.input(0)))
    if node.input(1):
        c = g.const(node.input(1))
        if c is None:
            return "reduction axes computed at run time are not supported"
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    if any(_axis(a, rank) is None for a in axes):
        return "reduction axis out of range"
    return sorted({_axis(a, rank) for a in axes})


def _reduce_prod_problem(node: Node, g: Graph) -> str | None:
    axes = _reduce_axes(node, g)
    return axes if isinstance(axes, str) else None


def _halve(b: _Builder, y: str, axis: int, one: str) -> str:
    """Multiply the first half of `axis` with the second (a 1 appended to an odd length)."""
    g = b.g
    shape, dt = _shape(g, y), _dtype(g, y)
    n = shape[axis]
    if n % 2:
        pads = np.zeros(2 * len(shape), np.int64)
        pads[len(shape) + axis] = 1
        n += 1
        shape = shape[:axis] + (n,) + shape[axis + 1:]
        y = b.op("Pad", [y, b.const("pads", pads), one], shape, dt, "even", mode="constant")
    half = shape[:axis] + (n // 2,) + shape[axis + 1:]
    parts = [_slice(b, y, axis, 0, n // 2, "low"), _slice(b, y, axis, n // 2, n, "high")]
    return b.op("Mul", parts, half, dt, "products")


def _reduce_prod(b: _Builder, node: Node) -> None:
    """A product tree along each reduced axis (pairwise halving; exact for integers)."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = _shape(g, x), _dtype(g, x)
    axes = _reduce_axes(node, g)
    if not all(shape[a] for a in axes):  # the product of nothing is 1
        v = g.values[out]
        v.const = np.ones(v.shape, v.dtype)
        return
    one = b.const("one", np.ones((), dt))
    y = x
    for a in axes:
        while _shape(g, y)[a] > 1:
            y = _halve(b, y, a, one)
    b.op("Reshape", [y, b.const("out_shape", np.array(_shape(g, out), np.int64))], (), None, out=out)


# ---- LpPool ------------------------------------------------------------------------------------------
POOL_ATTRS = ("auto_pad", "kernel_shape", "pads", "strides", "dilations")


def _lp_pool_problem(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.input(0))
    if dt.name != "float32":
        return f"LpPool of {dt.name}"
    if node.attrs.get("ceil_mode", 0):
        return "LpPool with ceil_mode (windows past the end would be scaled wrongly)"
    if len(_shape(g, node.input(0))) - 2 not in (1, 2):
        return "LpPool on the device is 1-D or 2-D"
    return None


def _lp_pool(b: _Builder, node: Node) -> None:
    """(window sum of |x|^p)^(1/p), the window sum as AveragePool counting pads (zeros) times the
    window size."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = _shape(g, x), _dtype(g, x)
    p = float(node.attrs.get("p", 2))
    powered = (b.op("Mul", [x, x], shape, dt, "squares") if p == 2 else
               b.op("Pow", [b.op("Abs", [x], shape, dt, "magnitude"), b.const("p", np.array(p, dt))], shape, dt,
                    "powers"))
    out_shape = _shape(g, out)
    attrs = {k: v for k, v in node.attrs.items() if k in POOL_ATTRS}
    mean = b.op("AveragePool", [powered], out_shape, dt, "window_mean", count_include_pad=1, **attrs)
    count = int(np.prod(node.attrs["kernel_shape"]))
    total = b.op("Mul", [mean, b.const("window_size", np.array(count, dt))], out_shape, dt, "window_sum")
    b.op("Pow", [total, b.const("inverse_p", np.array(1.0 / p, dt))], (), None, out=out)


# ---- Tile, Pad wrap, empty reductions ---------------------------------------------------------------
def _tile_problem(node: Node, g: Graph) -> str | None:
    reps = g.const(node.input(1))
    if reps is None:
        return "Tile repeats computed at run time"
    return None if reps.size == len(_shape(g, node.input(0))) and reps.min(initial=1) >= 0 else "Tile repeats"


def _tile(b: _Builder, node: Node) -> None:
    """x [d0, d1, ...] seen as [1, d0, 1, d1, ...], expanded to [r0, d0, r1, d1, ...], then flattened."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = _shape(g, x), _dtype(g, x)
    reps = [int(r) for r in np.asarray(g.const(node.input(1))).reshape(-1)]
    spread = tuple(v for d in shape for v in (1, d))
    wide = tuple(v for r, d in zip(reps, shape) for v in (r, d))
    y = b.op("Reshape", [x, b.const("spread", np.array(spread, np.int64))], spread, dt, "spread")
    y = b.op("Expand", [y, b.const("repeated", np.array(wide, np.int64))], wide, dt, "repeated")
    b.op("Reshape", [y, b.const("shape", np.array(_shape(g, out), np.int64))], (), None, out=out)


def _wrap_pad_problem(node: Node, g: Graph) -> str | None:
    if not all(g.is_const(n) for n in (node.input(1), node.input(3)) if n):
        return "Pad pads/axes computed at run time"
    return None


def _wrap_pad(b: _Builder, node: Node) -> None:
    """Pad mode 'wrap': per padded axis a Gather of the source positions (i - before) mod n."""
    g = b.g
    y, out = node.input(0), node.outputs[0]
    shape, dt = list(_shape(g, y)), _dtype(g, y)
    rank = len(shape)
    pads = [int(p) for p in np.asarray(g.const(node.input(1))).reshape(-1)]
    axes = ([int(a) % rank for a in np.asarray(g.const(node.input(3))).reshape(-1)] if node.input(3)
            else list(range(rank)))
    moves = [(a, pads[j], pads[j + len(axes)]) for j, a in enumerate(axes) if pads[j] or pads[j + len(axes)]]
    if not moves:
        b.op("Identity", [y], (), None, out=out)
    for i, (a, before, after) in enumerate(moves):
        n = shape[a]
        shape[a] = n + before + after
        src = (np.arange(shape[a], dtype=np.int64) - before) % n
        last = i == len(moves) - 1
        y = b.op("Gather", [y, b.const(f"wrap{a}", src)], tuple(shape), dt, f"wrapped{a}", out if last else "", axis=a)


EMPTY_REDUCTION = {"ReduceSum": 0, "ReduceL2": 0, "ReduceMax": "lowest", "ReduceMin": "highest"}


def _empty_reduce_problem(node: Node, g: Graph) -> str | None:
    if _shape(g, node.input(0)) and np.prod(_shape(g, node.input(0))) == 0 and np.prod(_shape(g, node.outputs[0])):
        return None
    return "only a reduction of an empty tensor is rewritten (to its constant)"


def _empty_reduce(b: _Builder, node: Node) -> None:
    """The reduction of nothing: 0 for sums, the lowest (highest) value for Max (Min)."""
    v = b.g.values[node.outputs[0]]
    fill = EMPTY_REDUCTION[node.op_type]
    if isinstance(fill, str):
        dt = np.dtype(v.dtype)
        fill = bool(fill == "highest") if dt == np.bool_ else _lowest(dt, fill == "lowest")
    v.const = np.full(v.shape, fill, v.dtype)


# ---- InstanceNormalization, LRN ------------------------------------------------------------------------
def _float32_problem(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.input(0))
    if dt.name != "float32" or len(_shape(g, node.input(0))) < 3:
        return f"{node.op_type} on the device takes float32 with at least one spatial dim"
    return None


def _instance_norm(b: _Builder, node: Node) -> None:
    """(x - mean) / sqrt(var + eps) * scale + bias over each (n, c) slice's spatial dims."""
    g = b.g
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    shape, dt = _shape(g, x), _dtype(g, x)
    axes = list(range(2, len(shape)))
    kept = shape[:2] + (1,) * len(axes)
    per_channel = (shape[1],) + (1,) * len(axes)
    axes_c = b.const("axes", np.array(axes, np.int64))
    if g.opset.get("", 13) >= REDUCE_AXES_INPUT_OPSET:
        mean = b.op("ReduceMean", [x, axes_c], kept, dt, "mean", keepdims=1)
    else:
        mean = b.op("ReduceMean", [x], kept, dt, "mean", axes=axes, keepdims=1)
    centred = b.op("Sub", [x, mean], shape, dt, "centred")
    square = b.op("Mul", [centred, centred], shape, dt, "square")
    if g.opset.get("", 13) >= REDUCE_AXES_INPUT_OPSET:
        var = b.op("ReduceMean", [square, axes_c], kept, dt, "variance", keepdims=1)
    else:
        var = b.op("ReduceMean", [square], kept, dt, "variance", axes=axes, keepdims=1)
    eps = b.const("epsilon", np.array(float(node.attrs.get("epsilon", 1e-5)), dt))
    std = b.op("Sqrt", [b.op("Add", [var, eps], kept, dt, "var_eps")], kept, dt, "std")
    normed = b.op("Div", [centred, std], shape, dt, "normalized")
    column = b.const("channel_shape", np.array(per_channel, np.int64))
    s = b.op("Reshape", [scale, column], per_channel, dt, "scale")
    c = b.op("Reshape", [bias, column], per_channel, dt, "bias")
    b.op("Add", [b.op("Mul", [normed, s], shape, dt, "scaled"), c], (), None, out=node.outputs[0])


def _lrn(b: _Builder, node: Node) -> None:
    """x / (bias + alpha / size * window sum of x^2 over channels)^beta; the channel window sum is an
    AveragePool over a [N, 1, C, rest] view counting the zero pads, times size."""
    g = b.g
    x = node.input(0)
    shape, dt = _shape(g, x), _dtype(g, x)
    size = int(node.attrs["size"])
    alpha, beta = float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    rest = int(np.prod(shape[2:]))
    view = (shape[0], 1, shape[1], rest)
    square = b.op("Mul", [x, x], shape, dt, "square")
    square = b.op("Reshape", [square, b.const("view", np.array(view, np.int64))], view, dt, "channel_view")
    before = (size - 1) // 2
    mean = b.op("AveragePool", [square], view, dt, "window_mean", kernel_shape=[size, 1], count_include_pad=1,
                pads=[before, 0, size - 1 - before, 0])
    mean = b.op("Reshape", [mean, b.const("shape", np.array(shape, np.int64))], shape, dt, "window_mean_back")
    base = b.op("Add", [b.op("Mul", [mean, b.const("alpha", np.array(alpha, dt))], shape, dt, "scaled_sum"),
                        b.const("bias", np.array(bias, dt))], shape, dt, "base")
    denom = b.op("Pow", [base, b.const("beta", np.array(beta, dt))], shape, dt, "denominator")
    b.op("Div", [x, denom], (), None, out=node.outputs[0])


# ---- Dropout, EyeLike, Mean -------------------------------------------------------------------------
def _dropout_problem(node: Node, g: Graph) -> str | None:
    training = node.input(2)
    if not training:
        return None
    t = g.const(training)
    if t is None:
        return "Dropout training_mode is computed at run time"
    if bool(np.asarray(t).reshape(-1)[0]):
        ratio = g.const(node.input(1)) if node.input(1) else np.array(0.5)
        if ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
            return "Dropout in training mode draws random numbers (host only)"
    return None


def _dropout(b: _Builder, node: Node) -> None:
    g = b.g
    b.op("Identity", [node.input(0)], (), None, out=node.outputs[0])
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask:
        v = g.values[mask]
        v.const = np.ones(v.shape, v.dtype)


def _eyelike_problem(node: Node, g: Graph) -> str | None:
    return None if len(_shape(g, node.input(0))) == 2 else "EyeLike needs a 2-D input"


def _eyelike(b: _Builder, node: Node) -> None:
    v = b.g.values[node.outputs[0]]
    rows, cols = _shape(b.g, node.input(0))
    v.const = np.eye(rows, cols, int(node.attrs.get("k", 0)), dtype=v.dtype)


def _mean(b: _Builder, node: Node) -> None:
    g = b.g
    out = node.outputs[0]
    shape, dt = _shape(g, out), _dtype(g, out)
    total = b.op("Sum", node.present_inputs(), shape, dt, "sum")
    b.op("Div", [total, b.const("count", np.array(len(node.present_inputs()), dt))], (), None, out=out)


def _mean_problem(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.outputs[0])
    return None if dt.kind == "f" or dt.name == "bfloat16" else f"Mean of {dt.name}"


def _castlike(b: _Builder, node: Node) -> None:
    attrs = {k: v for k, v in node.attrs.items() if k in ("saturate", "round_mode")}
    to = onnx.helper.np_dtype_to_tensor_dtype(_dtype(b.g, node.input(1)))
    b.op("Cast", [node.input(0)], (), None, out=node.outputs[0], to=to, **attrs)


def _lp_norm_problem(node: Node, g: Graph) -> str | None:
    if int(node.attrs.get("p", 2)) not in (1, 2):
        return "LpNormalization with p other than 1 or 2"
    dt = _dtype(g, node.input(0))
    if not (dt.kind == "f" or dt.name == "bfloat16"):
        return f"LpNormalization of {dt.name}"
    if _axis(int(node.attrs.get("axis", -1)), len(_shape(g, node.input(0)))) is None:
        return "LpNormalization: axis out of range"
    return None


def _lp_norm(b: _Builder, node: Node) -> None:
    """x / ||x||_p along the axis (no epsilon; a zero norm gives 0, as ONNX's reference)."""
    g = b.g
    x = node.input(0)
    shape, dt = _shape(g, x), _dtype(g, x)
    axis = _axis(int(node.attrs.get("axis", -1)), len(shape))
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    if int(node.attrs.get("p", 2)) == 2:
        norm = b.reduce("ReduceL2", x, axis, True, kept, dt, "norm")
    else:
        norm = b.reduce("ReduceSum", b.op("Abs", [x], shape, dt, "magnitude"), axis, True, kept, dt, "norm")
    zero = b.op("Equal", [norm, b.const("zero", np.zeros((), dt))], kept, np.bool_, "zero_norm")
    safe = b.op("Where", [zero, b.const("one", np.ones((), dt)), norm], kept, dt, "safe_norm")
    b.op("Div", [x, safe], (), None, out=node.outputs[0])  # an all-zero slice stays 0, not 0/0


def _isinf_problem(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.input(0))
    return None if dt.kind == "f" or dt.name == "bfloat16" else f"IsInf of {dt.name}"


def _isinf(b: _Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = _shape(g, x), _dtype(g, x)
    positive, negative = int(node.attrs.get("detect_positive", 1)), int(node.attrs.get("detect_negative", 1))
    if positive and negative:
        x = b.op("Abs", [x], shape, dt, "magnitude")
    if not (positive or negative):  # nothing detected: all false
        b.op("Equal", [x, b.const("nan", np.array(np.nan, dt))], (), None, out=out)
        return
    b.op("Equal", [x, b.const("infinity", np.array(-np.inf if not positive else np.inf, dt))], (), None, out=out)


def _always(node: Node, g: Graph) -> None:
    return None


Rewrite = tuple[Callable[[Node, Graph], "str | None"], Callable[[_Builder, Node], None]]
REWRITES: dict[str, Rewrite] = {
    "GatherElements": (_gather_elements_problem, _gather_elements),
    "GatherND": (_gather_nd_problem, _gather_nd),
    "Trilu": (_trilu_problem, _trilu),
    "ArgMax": (_arg_problem, _argmax), "ArgMin": (_arg_problem, _argmax),
    "Hardmax": (_arg_problem, _hardmax),
    "CumSum": (_cum_problem, _cumulative), "CumProd": (_cum_problem, _cumulative),
    "Dropout": (_dropout_problem, _dropout),
    "EyeLike": (_eyelike_problem, _eyelike),
    "Mean": (_mean_problem, _mean),
    "TopK": (_topk_problem, _topk),
    "ScatterElements": (_scatter_problem, _scatter), "ScatterND": (_scatter_problem, _scatter),
    "Clip": (_clip_problem, _clip), "Pad": (_any_pad_problem, _any_pad),
    "DFT": (_dft_problem, _dft), "STFT": (_dft_problem, _stft), "GridSample": (_grid_problem, _grid_sample),
    "CastLike": (_always, _castlike), "IsInf": (_isinf_problem, _isinf),
    "LpNormalization": (_lp_norm_problem, _lp_norm), "ReduceProd": (_reduce_prod_problem, _reduce_prod),
    "LpPool": (_lp_pool_problem, _lp_pool), "Tile": (_tile_problem, _tile),
    "InstanceNormalization": (_float32_problem, _instance_norm), "LRN": (_float32_problem, _lrn),
    **{op: (_empty_reduce_problem, _empty_reduce) for op in EMPTY_REDUCTION},
}
# ops the device runs in some forms already: their own support rule stays, the rewrite covers the rest
PARTLY_SUPPORTED = ("Clip", "Pad", *EMPTY_REDUCTION)


def rewrite_problem(node: Node, g: Graph) -> str | None:
    """Why `node` cannot be rewritten into device ops (None: `decompose` rewrites it)."""
    entry = REWRITES.get(node.op_type)
    if entry is None or node.domain:
        return f"op {node.op_type} is not implemented on the device"
    names = node.present_inputs() + [o for o in node.outputs if o]
    if any(not g.values[n].is_static for n in names if n in g.values):
        return "shapes are not static"
    return _stored(g, names) or entry[0](node, g)


def decompose(graph: Graph) -> Graph:
    """A copy of `graph` where every node REWRITES knows (and `rewrite_problem` accepts) is replaced
    by device ops computing the same values."""
    g = graph.copy()
    nodes: list[Node] = []
    changed = False
    for node in g.nodes:
        if node.op_type not in REWRITES or rewrite_problem(node, g):
            nodes.append(node)
            continue
        b = _Builder(g, node)
        REWRITES[node.op_type][1](b, node)
        nodes += b.nodes
        changed = True
    if changed:
        g.nodes = nodes
        g.changed()
        for n in nodes:  # outputs written through `out=` keep their Value (shape and dtype as imported)
            for o in n.outputs:
                assert o in g.values, o
    return g
