"""Lowering a graph to a Program: inputs and outputs in HBM, one kernel per device node, host ops
for the rest, and a tap for every value so tools can read it without changing the program."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from device_model.arch import load_arch
from device_model.dtypes import np_dtype
from device_model.program import HostOp, Program, TapPiece, Tensor

from .context import CompileOptions, DeviceValue, LoweringContext, free_tensor_name, storage_dtype
from .emitter import Emitter
from .errors import CompileError
from .graph import Graph
from .host import host_node_model
from .kernels import kernels
from .outputs import onnx_dtypes_meta
from .support import placement


def lower_graph(graph: Graph, options: CompileOptions,
                progress: Callable[[int, int], None] | None = None) -> Program:
    """The Program for `graph` on `options.arch`; `progress(done, total)` is called per node."""
    em = Emitter(options.arch or load_arch())
    ctx = LoweringContext(graph, options, em)
    for v in graph.inputs:
        dt = storage_dtype(v.dtype)
        dv = ctx._alloc(v.name, tuple(v.shape), dt)
        em.hbm.declare(Tensor(v.name, "input", dv.offset, dv.shape, dt))
    table = kernels()
    for i, node in enumerate(graph.nodes):
        ctx.node = node
        em.set_origin(node.name, node.op_type)
        where, _why = placement(node, graph, options)
        fn = table.get(node.op_type)
        if all(ctx.graph.values[o].size == 0 for o in node.outputs if o):
            for o in node.outputs:  # empty results: nothing to compute
                if o:
                    ctx.output(o)
        elif where == "device" and fn is not None:
            fn(ctx, node)
        else:
            _lower_host(ctx, node)
        _tap_outputs(ctx, node)
        if progress is not None:
            progress(i + 1, len(graph.nodes))
    ctx.node = None
    _tap_aliases(ctx, graph)
    em.set_origin("outputs", "")
    _declare_outputs(ctx, graph)
    return em.program(onnx_dtypes_meta(graph.outputs))


def _tap_outputs(ctx: LoweringContext, node) -> None:
    for name in node.outputs:
        if not name or name not in ctx.values:
            continue
        dv = ctx.values[name]
        if dv.size == 0:  # nothing to read
            ctx.em.add_tap(name, dv.shape, dv.dtype, [], None)
            continue
        ap = dv.flat()
        after = ctx.em.barrier_after([ap])
        ctx.em.add_tap(name, dv.shape, dv.dtype, [TapPiece(ap, 0, (1,))], after)
    for fused in getattr(node, "fused", []) or []:
        v = ctx.graph.values.get(fused)
        if v is not None:
            ctx.em.add_fused_tap(fused, v.shape, storage_dtype(v.dtype), node.outputs[0])


def _tap_aliases(ctx: LoweringContext, graph) -> None:
    """ONNX tensors that passes removed as copies read the same bytes as the value they alias."""
    by_name = {t.name: t for t in ctx.em.taps}
    for name, target in graph.aliases.items():
        tap = by_name.get(target)
        if tap is not None and name not in by_name:
            ctx.em.taps.append(replace(tap, name=name))


def _declare_outputs(ctx: LoweringContext, graph) -> None:
    """Graph outputs become `output` tensors. A host op's scratch tensor for the value is promoted;
    an output that is an input, a constant or shares bytes with another output is copied first."""
    for v in graph.outputs:
        dv = ctx.value(v.name)  # may place a constant (an output that folded) and declare it
        by_offset = {t.offset: t for t in ctx.em.hbm.tensors}
        existing = by_offset.get(dv.offset)
        if existing is not None and existing.kind == "scratch" and existing.name == v.name:
            existing.kind = "output"
            continue
        if existing is not None:
            copy = ctx._alloc(v.name, dv.shape, dv.dtype)
            if dv.size:
                ctx.em.emit("dma", "dma_copy", {"dst": copy.flat(), "src": dv.flat()})
            dv = copy
        tensor = Tensor(v.name, "output", dv.offset, dv.shape, dv.dtype)
        ctx.em.hbm.declare(tensor)


def _lower_host(ctx: LoweringContext, node) -> None:
    """Run `node` on the host: its inputs and outputs are HBM tensors the host reads and writes."""
    em = ctx.em
    ins, outs, in_aps = [], [], []
    for name in node.all_inputs():  # subgraphs (If/Loop bodies) read outer values too
        dv = _host_operand(ctx, ctx.value(name))
        ins.append(_declare_scratch(em, dv))
        in_aps.append(dv.flat())
    for name in node.outputs:
        if not name:
            outs.append("")
            continue
        dv = ctx.output(name)
        outs.append(_declare_scratch(em, dv))
    payload = host_node_model(node, ctx.graph).SerializeToString()
    em.host_ops.append(HostOp(node.name, node.op_type, ins, outs, payload))
    em.emit_host_call(len(em.host_ops) - 1, in_aps,
                      [ctx.values[n].flat() for n in node.outputs if n])


def _host_operand(ctx: LoweringContext, dv: DeviceValue) -> DeviceValue:
    """`dv`, or a copy of it when its bytes are already declared as a tensor of another shape or dtype
    (an alias such as an Unsqueeze of an input): program tensors must not overlap."""
    start, end = dv.offset, dv.offset + dv.nbytes
    for t in ctx.em.hbm.tensors:
        if t.offset == dv.offset and tuple(t.shape) == tuple(dv.shape) and t.dtype == dv.dtype:
            return dv
        t_end = t.offset + max(1, int(np.prod(t.shape)) if t.shape else 1) * np_dtype(t.dtype).itemsize
        if t.offset < end and start < t_end and dv.size:
            copy = ctx.scratch(dv.name, dv.shape, dv.dtype)
            ctx.em.emit("dma", "dma_copy", {"dst": copy.flat(), "src": dv.flat()})
            return copy
    return dv


def _declare_scratch(em: Emitter, dv: DeviceValue) -> str:
    for t in em.hbm.tensors:
        if t.offset == dv.offset and tuple(t.shape) == tuple(dv.shape) and t.dtype == dv.dtype:
            return t.name
    name = free_tensor_name(dv.name, em)
    em.hbm.declare(Tensor(name, "scratch", dv.offset, dv.shape, dv.dtype))
    return name


__all__ = ["CompileError", "lower_graph"]
