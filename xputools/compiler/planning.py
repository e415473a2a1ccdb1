"""Whether a kernel finds an on-chip plan for a node: the one question `support.placement` (device or
host) and the conv tap split (`decompose/conv_split`) both ask, of the planner the lowering itself uses."""
from __future__ import annotations

from .graph import Graph, Node

PLANNED_OPS = ("Conv", "ConvTranspose")  # kernels whose on-chip plan is checked before they are called device ops


def plan_problem(node: Node, graph: Graph, options=None) -> str | None:
    """Why the device kernel of `node` finds no plan that fits on chip (None: it does), asked of the
    planner the lowering itself uses, on a throwaway emitter (`options`: a CompileOptions, default fp32
    on the default arch)."""
    if node.op_type not in PLANNED_OPS or node.domain:
        return None
    from device_model.arch import load_arch

    from .context import CompileOptions, DeviceValue, LoweringContext, storage_dtype
    from .emitter import Emitter
    from .kernels.conv import conv_plan_problem

    options = options or CompileOptions()
    ctx = LoweringContext(graph, options, Emitter(options.arch or load_arch()))
    ctx.node = node
    for name in node.present_inputs():
        v = graph.values[name]
        if not v.is_const:
            ctx.values[name] = DeviceValue(name, 0, tuple(v.shape), storage_dtype(v.dtype))
    return conv_plan_problem(ctx, node)
