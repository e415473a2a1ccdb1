"""Reductions: ReduceSum/Mean/Max/Min/L2, planned and tiled by lib/rows.py (whose docstring says how)."""
from __future__ import annotations

import math

import numpy as np

from ..context import LoweringContext
from ..errors import CompileError
from ..graph import Node
from .lib.registry import kernel
from .lib.rows import canonical_dims, elementwise_act, reduce_into

REDUCE_OPS = {  # op -> (reduce op, elementwise pre-transform, finish)
    "ReduceSum": ("sum", None, None),
    "ReduceMean": ("sum", None, "mean"),
    "ReduceMax": ("max", None, None),
    "ReduceMin": ("min", None, None),
    "ReduceL2": ("sum", "square", "sqrt"),
}


def reduce_axes(ctx: LoweringContext, node: Node, rank: int) -> list[int] | None:
    """Normalised axes to reduce, or None for a no-op (empty axes with noop_with_empty_axes=1)."""
    axes = None
    if node.input(1):
        c = ctx.const(node.input(1))
        if c is None:
            raise CompileError(f"{node.name}: {node.op_type} axes input {node.input(1)!r} must be a constant")
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    elif "axes" in node.attrs:
        axes = [int(a) for a in node.attrs["axes"]]
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise CompileError(f"{node.name}: {node.op_type} axis {a} is out of range for rank {rank}")
        a %= rank
        if a in out:
            raise CompileError(f"{node.name}: {node.op_type} axis {a} is repeated in axes {axes}")
        out.append(a)
    return sorted(out)


@kernel(*REDUCE_OPS)
def reduce(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    op, pre, finish = REDUCE_OPS[node.op_type]
    axes = reduce_axes(ctx, node, len(x.shape))
    dims = canonical_dims(x.shape, axes if axes is not None else ())
    if not any(d.red for d in dims):  # nothing (or only size-1 dims) reduced: each element alone
        if pre == "square":
            out = ctx.output(node.outputs[0])
            elementwise_act(ctx, x, out, "abs")
        else:
            ctx.alias(node.outputs[0], node.inputs[0])
        return
    out = ctx.output(node.outputs[0])
    reduce_into(ctx, x, out, dims, op, pre=pre, finish=finish,
                count=math.prod(d.n for d in dims if d.red), act_mode=ctx.act_mode(node))


