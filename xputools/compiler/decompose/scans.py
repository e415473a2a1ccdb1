"""Scans and products along an axis with Slice, Pad and elementwise ops (exact for integers), and the
constant result of reducing an empty tensor."""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .builder import Builder, Rewrite, dtype_of, lowest, norm_axis, reduce_axes, scalar_input, shape_of, slice_axis


# ---- CumSum / CumProd -------------------------------------------------------------------------------
def _cum_problem(node: Node, g: Graph) -> str | None:
    axis, why = scalar_input(g, node, 1, "axis")
    if why:
        return why
    shape = shape_of(g, node.input(0))
    if norm_axis(axis or 0, len(shape)) is None:
        return f"{node.op_type}: axis out of range"
    if not all(shape):
        return f"{node.op_type} of an empty tensor"
    return None




def _shift(b: Builder, y: str, axis: int, s: int, reverse: bool, identity: str) -> str:
    """y moved by `s` along `axis` (towards the end, or the start when `reverse`), the gap filled
    with the operation's identity."""
    g = b.g
    shape = shape_of(g, y)
    n, rank = shape[axis], len(shape)
    starts, ends = (s, n) if reverse else (0, n - s)
    part = slice_axis(b, y, axis, starts, ends, f"part{s}")
    pads = np.zeros(2 * rank, np.int64)
    pads[axis + (rank if reverse else 0)] = s
    return b.op("Pad", [part, b.const("pads", pads), identity], shape, dtype_of(g, y), f"shifted{s}", mode="constant")


def _cumulative(b: Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axis = norm_axis(scalar_input(g, node, 1, "axis")[0] or 0, len(shape))
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


def _reduce_prod_problem(node: Node, g: Graph) -> str | None:
    axes = reduce_axes(node, g)
    return axes if isinstance(axes, str) else None


def _halve(b: Builder, y: str, axis: int, one: str) -> str:
    """Multiply the first half of `axis` with the second (a 1 appended to an odd length)."""
    g = b.g
    shape, dt = shape_of(g, y), dtype_of(g, y)
    n = shape[axis]
    if n % 2:
        pads = np.zeros(2 * len(shape), np.int64)
        pads[len(shape) + axis] = 1
        n += 1
        shape = shape[:axis] + (n,) + shape[axis + 1:]
        y = b.op("Pad", [y, b.const("pads", pads), one], shape, dt, "even", mode="constant")
    half = shape[:axis] + (n // 2,) + shape[axis + 1:]
    parts = [slice_axis(b, y, axis, 0, n // 2, "low"), slice_axis(b, y, axis, n // 2, n, "high")]
    return b.op("Mul", parts, half, dt, "products")


def _reduce_prod(b: Builder, node: Node) -> None:
    """A product tree along each reduced axis (pairwise halving; exact for integers)."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axes = reduce_axes(node, g)
    if not all(shape[a] for a in axes):  # the product of nothing is 1
        v = g.values[out]
        v.const = np.ones(v.shape, v.dtype)
        return
    one = b.const("one", np.ones((), dt))
    y = x
    for a in axes:
        while shape_of(g, y)[a] > 1:
            y = _halve(b, y, a, one)
    b.op("Reshape", [y, b.const("out_shape", np.array(shape_of(g, out), np.int64))], (), None, out=out)

EMPTY_REDUCTION = {"ReduceSum": 0, "ReduceL2": 0, "ReduceMax": "lowest", "ReduceMin": "highest"}


def _empty_reduce_problem(node: Node, g: Graph) -> str | None:
    x, out = shape_of(g, node.input(0)), shape_of(g, node.outputs[0])
    if x and np.prod(x) == 0 and np.prod(out):
        return None
    return "only a reduction of an empty tensor is rewritten (to its constant)"


def _empty_reduce(b: Builder, node: Node) -> None:
    """The reduction of nothing: 0 for sums, the lowest (highest) value for Max (Min)."""
    v = b.g.values[node.outputs[0]]
    fill = EMPTY_REDUCTION[node.op_type]
    if isinstance(fill, str):
        dt = np.dtype(v.dtype)
        fill = bool(fill == "highest") if dt == np.bool_ else lowest(dt, fill == "lowest")
    v.const = np.full(v.shape, fill, v.dtype)


REWRITES: dict[str, Rewrite] = {
    "CumSum": (_cum_problem, _cumulative), "CumProd": (_cum_problem, _cumulative),
    "ReduceProd": (_reduce_prod_problem, _reduce_prod),
    **{op: (_empty_reduce_problem, _empty_reduce) for op in EMPTY_REDUCTION},
}
