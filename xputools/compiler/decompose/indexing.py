"""Gathers and scatters by index as flat-index arithmetic and a device Gather; Trilu, Tile and Pad
mode wrap as masks and index tables."""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from .builder import (
    INDEX,
    Builder,
    Rewrite,
    dtype_of,
    lowest,
    norm_axis,
    scalar_input,
    shape_of,
    wrap_negative,
)


def _gather_elements_problem(node: Node, g: Graph) -> str | None:
    data, idx = shape_of(g, node.input(0)), shape_of(g, node.input(1))
    if len(idx) != len(data) or norm_axis(int(node.attrs.get("axis", 0)), len(data)) is None:
        return "GatherElements: indices rank or axis does not match the data"
    c = g.const(node.input(1))
    if c is not None:
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(data))
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


def _element_targets(b: Builder, idx: str, dshape: tuple[int, ...], axis: int) -> str:
    """The flat data position each element of the run-time `idx` names along `axis`."""
    g = b.g
    ishape, dt = shape_of(g, idx), dtype_of(g, idx)
    base, stride = _element_offsets(dshape, ishape, axis)
    wrapped = wrap_negative(b, idx, dshape[axis], ishape)
    scaled = b.op("Mul", [wrapped, b.const("axis_stride", np.array(stride, dt))], ishape, dt, "scaled")
    return b.op("Add", [scaled, b.const("base", base.astype(dt))], ishape, dt, "flat_indices")


def _row_targets(b: Builder, idx: str, dshape: tuple[int, ...]) -> str:
    """For GatherND/ScatterND: the flat row of the data's first k dims that each k-tuple of the
    run-time `idx` [..., k] names."""
    g = b.g
    ishape, dt = shape_of(g, idx), dtype_of(g, idx)
    k = ishape[-1]
    strides = np.array([int(np.prod(dshape[j + 1:k], dtype=np.int64)) for j in range(k)], dt)
    wrapped = wrap_negative(b, idx, np.array(dshape[:k], dt), ishape)
    scaled = b.op("Mul", [wrapped, b.const("strides", strides)], ishape, dt, "scaled")
    return b.reduce("ReduceSum", scaled, len(ishape) - 1, False, ishape[:-1], dt, "flat_rows")


def _gather_elements(b: Builder, node: Node) -> None:
    g = b.g
    data, idx = node.input(0), node.input(1)
    dshape = shape_of(g, data)
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(dshape))
    flat_data = b.op("Reshape", [data, b.const("flat_shape", np.array([-1], np.int64))],
                     (int(np.prod(dshape)),), dtype_of(g, data), "flat_data")
    c = g.const(idx)
    if c is not None:
        base, stride = _element_offsets(dshape, shape_of(g, idx), axis)
        k = np.asarray(c, np.int64)
        flat = b.const("flat_indices", base + np.where(k < 0, k + dshape[axis], k) * stride)
    else:
        flat = _element_targets(b, idx, dshape, axis)
    b.op("Gather", [flat_data, flat], (), None, out=node.outputs[0], axis=0)


def _gather_nd_problem(node: Node, g: Graph) -> str | None:
    dshape, ishape = shape_of(g, node.input(0)), shape_of(g, node.input(1))
    bd = int(node.attrs.get("batch_dims", 0))
    if not ishape or bd >= len(ishape) or bd + ishape[-1] > len(dshape) or dshape[:bd] != ishape[:bd]:
        return "GatherND: indices do not match the data"
    return None


def _gather_nd(b: Builder, node: Node) -> None:
    """Batches are folded into the row index: batch b's rows start at b x rows per batch."""
    g = b.g
    data, idx = node.input(0), node.input(1)
    dshape, ishape = shape_of(g, data), shape_of(g, idx)
    bd, k = int(node.attrs.get("batch_dims", 0)), ishape[-1]
    rows_per_batch = int(np.prod(dshape[bd:bd + k], dtype=np.int64))
    batches = int(np.prod(dshape[:bd], dtype=np.int64))
    rest = dshape[bd + k:]
    tuples = ishape[:-1]
    batch_base = (np.arange(batches, dtype=np.int64) * rows_per_batch).reshape(
        dshape[:bd] + (1,) * (len(tuples) - bd))
    rows = b.op("Reshape", [data, b.const("rows_shape", np.array((batches * rows_per_batch,) + rest, np.int64))],
                (batches * rows_per_batch,) + rest, dtype_of(g, data), "rows")
    c = g.const(idx)
    if c is not None:
        kk = np.asarray(c, np.int64)
        dims = np.array(dshape[bd:bd + k], np.int64)
        strides = np.array([int(np.prod(dshape[bd + j + 1:bd + k], dtype=np.int64)) for j in range(k)], np.int64)
        flat = b.const("flat_indices", (np.where(kk < 0, kk + dims, kk) * strides).sum(-1) + batch_base)
    else:
        in_batch = _row_targets(b, idx, dshape[bd:])
        dt = dtype_of(g, idx)
        flat = b.op("Add", [in_batch, b.const("batch_base", batch_base.astype(dt))], tuples, dt, "flat_indices")
    b.op("Gather", [rows, flat], (), None, out=node.outputs[0], axis=0)

# ---- ScatterElements / ScatterND -----------------------------------------------------------------------
SCATTER_MAX_PAIRS = 1 << 20  # updates x targets compared: the rewrite is quadratic, a scatter kernel is not
SCATTER_REDUCTIONS = ("none", "add", "max", "min")


def _scatter_problem(node: Node, g: Graph) -> str | None:
    reduction = node.attrs.get("reduction", "none")
    if reduction not in SCATTER_REDUCTIONS:
        return f"{node.op_type} reduction {reduction!r} is not supported on the device"
    dshape, ishape, ushape = (shape_of(g, node.input(i)) for i in range(3))
    if node.op_type == "ScatterElements":
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(dshape))
        if len(ishape) != len(dshape) or ishape != ushape or axis is None:
            return "ScatterElements: indices, updates and data do not match"
        pairs = int(np.prod(ishape)) * int(np.prod(dshape))
    else:
        if not ishape or ishape[-1] > len(dshape) or ushape != ishape[:-1] + dshape[ishape[-1]:]:
            return "ScatterND: indices, updates and data do not match"
        pairs = int(np.prod(ishape[:-1])) * int(np.prod(dshape))
    if pairs > SCATTER_MAX_PAIRS:
        return f"{node.op_type} with {pairs} update/target pairs is too large for the device rewrite"
    return None


def _scatter_rows(b: Builder, data: str, rows: str, updates: str, reduction: str, out: str) -> None:
    """out = data [R, W] with row rows[q] written from (or combined with) updates [Q, W]; where two
    updates hit one row the last wins (as the reference does)."""
    g = b.g
    (r, w), q, dt = shape_of(g, data), shape_of(g, rows)[0], dtype_of(g, data)
    col = b.op("Reshape", [rows, b.const("column", np.array([q, 1], np.int64))], (q, 1), dtype_of(g, rows), "targets")
    hit = b.op("Equal", [col, b.const("row", np.arange(r, dtype=dtype_of(g, rows)).reshape(1, r))], (q, r), np.bool_,
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
        fill = 0 if reduction == "add" else lowest(dt, reduction == "max")
        spread = b.op("Where", [hit3, upd3, b.const("fill", np.array(fill, dt))], (q, r, w), dt, "spread")
        combined = b.reduce({"add": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}[reduction], spread, 0,
                            False, (r, w), dt, "combined")
        op = {"add": "Add", "max": "Max", "min": "Min"}[reduction]
        new = b.op(op, [data, combined], (r, w), dt, "updated")
    b.op("Where", [written, new, data], (), None, out=out)


def _scatter(b: Builder, node: Node) -> None:
    """Both scatters as rows: ScatterElements writes rows of one element of the flattened data."""
    g = b.g
    data, idx, upd, out = node.input(0), node.input(1), node.input(2), node.outputs[0]
    dshape, ishape, dt = shape_of(g, data), shape_of(g, idx), dtype_of(g, data)
    if node.op_type == "ScatterElements":
        targets = _element_targets(b, idx, dshape, norm_axis(int(node.attrs.get("axis", 0)), len(dshape)))
        q, r, w = int(np.prod(ishape)), int(np.prod(dshape)), 1
    else:
        targets = _row_targets(b, idx, dshape)
        k = ishape[-1]
        q, r, w = int(np.prod(ishape[:-1])), int(np.prod(dshape[:k])), int(np.prod(dshape[k:]))
    flat = b.op("Reshape", [targets, b.const("flat", np.array([q], np.int64))], (q,), dtype_of(g, idx), "targets_flat")
    data2 = b.op("Reshape", [data, b.const("data_rows", np.array([r, w], np.int64))], (r, w), dt, "data_rows")
    upd2 = b.op("Reshape", [upd, b.const("update_rows", np.array([q, w], np.int64))], (q, w), dt, "update_rows")
    result = g.unique_name(f"{node.name}/result_rows")
    g.values[result] = Value(result, (r, w), dt)
    _scatter_rows(b, data2, flat, upd2, node.attrs.get("reduction", "none"), result)
    b.op("Reshape", [result, b.const("shape", np.array(dshape, np.int64))], (), None, out=out)

# ---- Trilu ------------------------------------------------------------------------------------------
def _trilu_problem(node: Node, g: Graph) -> str | None:
    if len(shape_of(g, node.input(0))) < 2:
        return "Trilu needs a tensor of rank 2 or more"
    return scalar_input(g, node, 1, "k")[1]


def _trilu(b: Builder, node: Node) -> None:
    g = b.g
    x = node.input(0)
    rows, cols = shape_of(g, x)[-2:]
    k = scalar_input(g, node, 1, "k")[0] or 0
    diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    mask = diff >= k if int(node.attrs.get("upper", 1)) else diff <= k
    zero = b.const("zero", np.zeros((), dtype_of(g, x)))
    b.op("Where", [b.const("mask", mask), x, zero], (), None, out=node.outputs[0])

def _tile_problem(node: Node, g: Graph) -> str | None:
    reps = g.const(node.input(1))
    if reps is None:
        return "Tile repeats computed at run time"
    return None if reps.size == len(shape_of(g, node.input(0))) and reps.min(initial=1) >= 0 else "Tile repeats"


def _tile(b: Builder, node: Node) -> None:
    """x [d0, d1, ...] seen as [1, d0, 1, d1, ...], expanded to [r0, d0, r1, d1, ...], then flattened."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = shape_of(g, x), dtype_of(g, x)
    reps = [int(r) for r in np.asarray(g.const(node.input(1))).reshape(-1)]
    spread = tuple(v for d in shape for v in (1, d))
    wide = tuple(v for r, d in zip(reps, shape) for v in (r, d))
    y = b.op("Reshape", [x, b.const("spread", np.array(spread, np.int64))], spread, dt, "spread")
    y = b.op("Expand", [y, b.const("repeated", np.array(wide, np.int64))], wide, dt, "repeated")
    b.op("Reshape", [y, b.const("shape", np.array(shape_of(g, out), np.int64))], (), None, out=out)


def wrap_pad_problem(node: Node, g: Graph) -> str | None:
    if not all(g.is_const(n) for n in (node.input(1), node.input(3)) if n):
        return "Pad pads/axes computed at run time"
    return None


def wrap_pad(b: Builder, node: Node) -> None:
    """Pad mode 'wrap': per padded axis a Gather of the source positions (i - before) mod n."""
    g = b.g
    y, out = node.input(0), node.outputs[0]
    shape, dt = list(shape_of(g, y)), dtype_of(g, y)
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


REWRITES: dict[str, Rewrite] = {
    "GatherElements": (_gather_elements_problem, _gather_elements), "GatherND": (_gather_nd_problem, _gather_nd),
    "ScatterElements": (_scatter_problem, _scatter), "ScatterND": (_scatter_problem, _scatter),
    "Trilu": (_trilu_problem, _trilu), "Tile": (_tile_problem, _tile),
}
