"""ArgMax/ArgMin, Hardmax and TopK: the best value by a reduction, its first (or last) position by
comparing every element with it."""
from __future__ import annotations

import numpy as np
import onnx

from ..graph import Graph, Node
from .builder import INDEX, Builder, Rewrite, dtype_of, lowest, norm_axis, position, shape_of


# ---- ArgMax / ArgMin / Hardmax ------------------------------------------------------------------------
def _arg_problem(node: Node, g: Graph) -> str | None:
    shape = shape_of(g, node.input(0))
    if norm_axis(int(node.attrs.get("axis", -1 if node.op_type == "Hardmax" else 0)), max(len(shape), 1)) is None:
        return f"{node.op_type}: axis out of range"
    if not shape or not all(shape):
        return f"{node.op_type} of a scalar or empty tensor"
    if node.op_type == "Hardmax" and g.opset.get("", 13) < 13:
        return "Hardmax before opset 13 (2-D coercion semantics) is not supported"
    return None




def _arg_index(b: Builder, x: str, axis: int, largest: bool, last: bool, keepdims: bool, out: str = "") -> str:
    """The index along `axis` of the first (or `last`) largest (or smallest) element."""
    g = b.g
    shape = shape_of(g, x)
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    best = b.reduce("ReduceMax" if largest else "ReduceMin", x, axis, True, kept, dtype_of(g, x), "best")
    hit = b.op("Equal", [x, best], shape, np.bool_, "is_best")
    sentinel = b.const("sentinel", np.array(-1 if last else shape[axis], np.int64))
    where = b.op("Where", [hit, position(b, shape, axis), sentinel], shape, INDEX, "candidates")
    final = shape[:axis] + shape[axis + 1:] if not keepdims else kept
    return b.reduce("ReduceMax" if last else "ReduceMin", where, axis, keepdims, final, INDEX, "index", out)


def _argmax(b: Builder, node: Node) -> None:
    x = node.input(0)
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(shape_of(b.g, x)))
    _arg_index(b, x, axis, node.op_type == "ArgMax", bool(node.attrs.get("select_last_index", 0)),
               bool(node.attrs.get("keepdims", 1)), node.outputs[0])


def _hardmax(b: Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    shape = shape_of(g, x)
    axis = norm_axis(int(node.attrs.get("axis", -1)), len(shape))
    index = _arg_index(b, x, axis, True, False, True)
    hit = b.op("Equal", [position(b, shape, axis), index], shape, np.bool_, "is_max")
    b.op("Cast", [hit], (), None, out=node.outputs[0], to=onnx.helper.np_dtype_to_tensor_dtype(dtype_of(g, x)))


# ---- TopK ---------------------------------------------------------------------------------------------
MAX_TOPK_UNROLL = 16  # one selection round per k: beyond this a sort kernel would be the right tool


def _topk_problem(node: Node, g: Graph) -> str | None:
    shape = shape_of(g, node.input(0))
    axis = norm_axis(int(node.attrs.get("axis", -1)), max(len(shape), 1))
    k = g.const(node.input(1))
    if axis is None or not shape:
        return "TopK: axis out of range"
    if k is None:
        return "TopK k is computed at run time"
    k = int(np.asarray(k).reshape(-1)[0])
    if not 0 < k <= min(shape[axis], MAX_TOPK_UNROLL):
        return f"TopK with k={k} is not supported on the device (1 to {MAX_TOPK_UNROLL}, at most the axis length)"
    return None




def _topk(b: Builder, node: Node) -> None:
    """k rounds of: the best element not taken yet (the first of ties, as ONNX orders them), then
    mark it taken. Values and indices come out sorted."""
    g = b.g
    x = node.input(0)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axis = norm_axis(int(node.attrs.get("axis", -1)), len(shape))
    k = int(np.asarray(g.const(node.input(1))).reshape(-1)[0])
    largest = bool(node.attrs.get("largest", 1))
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    positions = position(b, shape, axis)
    floor = b.const("lowest", np.array(lowest(dt, largest), dt))
    sentinel = b.const("sentinel", np.array(shape[axis], np.int64))
    taken, values, indices = "", [], []
    for i in range(k):
        live = b.op("Where", [taken, floor, x], shape, dt, f"live{i}") if taken else x
        best = b.reduce("ReduceMax" if largest else "ReduceMin", live, axis, True, kept, dt, f"value{i}")
        hit = b.op("Equal", [live, best], shape, np.bool_, f"is_best{i}")
        if taken:
            hit = b.op("And", [hit, b.op("Not", [taken], shape, np.bool_, f"free{i}")], shape, np.bool_,
                       f"free_best{i}")
        where = b.op("Where", [hit, positions, sentinel], shape, INDEX, f"candidates{i}")
        index = b.reduce("ReduceMin", where, axis, True, kept, INDEX, f"index{i}")
        values.append(best)
        indices.append(index)
        if i < k - 1:
            chosen = b.op("Equal", [positions, index], shape, np.bool_, f"chosen{i}")
            taken = b.op("Or", [taken, chosen], shape, np.bool_, f"taken{i}") if taken else chosen
    outs = list(node.outputs) + ["", ""]
    for parts, out in ((values, outs[0]), (indices, outs[1])):
        if out:
            b.op("Identity" if len(parts) == 1 else "Concat", parts, (), None, out=out,
                 **({} if len(parts) == 1 else {"axis": axis}))


REWRITES: dict[str, Rewrite] = {
    "ArgMax": (_arg_problem, _argmax), "ArgMin": (_arg_problem, _argmax), "Hardmax": (_arg_problem, _hardmax),
    "TopK": (_topk_problem, _topk),
}
