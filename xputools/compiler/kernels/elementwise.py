"""Elementwise ONNX ops: unary functions on ACT, binary/ternary ops on DVE, with numpy
broadcasting done by the DMA access patterns (stride 0)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..context import DeviceValue, LoweringContext
from ..errors import CompileError
from ..graph import Node
from .lib.ap import MAX_FREE, hbm_ap, is_float, load, new_tile, store
from .lib.dims import broadcast_strides, row_major_strides
from .lib.registry import kernel
from .lib.tiling import Tile, elementwise_tiles

# ONNX op -> (ACT function, extra attrs from the node)
ACT_UNARY = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log", "Erf": "erf",
    "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Neg": "neg", "Abs": "abs", "Softplus": "softplus",
    "HardSwish": "hardswish", "IsNaN": "isnan", "Not": "not", "LeakyRelu": "leaky_relu",
    "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign",
}
BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min",
    "Sum": "add", "Equal": "eq", "Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge",
    "LessOrEqual": "le", "And": "and", "Or": "or", "Xor": "xor",
}


def _tiles(ctx: LoweringContext, out: DeviceValue, inputs: list[DeviceValue]) -> Iterator[Tile]:
    strides = [row_major_strides(out.shape)] + [broadcast_strides(v.shape, out.shape) for v in inputs]
    return elementwise_tiles(out.shape, strides, ctx.arch.partitions, MAX_FREE)


Stage = tuple[str, str, dict, str]  # engine, opcode, attributes, dtype of the result tile


def _map_tiles(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, load_dtype: str, stages: list[Stage]) -> None:
    """out = x through `stages` tile by tile: each tile of x is loaded as `load_dtype`, every stage
    writes a new tile from the previous one, and the last is stored."""
    for t in _tiles(ctx, out, [x]):
        (o_off, o_dims), (x_off, x_dims) = t.patterns
        cur = load(ctx, hbm_ap(x, x_off, x_dims), t.partitions, t.free, load_dtype)
        for engine, op, attrs, dtype in stages:
            dst = new_tile(ctx, t.partitions, t.free, dtype)
            ctx.em.emit(engine, op, {"dst": dst, "src": cur}, **attrs)
            cur = dst
        store(ctx, cur, hbm_ap(out, o_off, o_dims))


def _work_dtype(v: DeviceValue) -> str:
    return "f32" if is_float(v.dtype) else ("i32" if v.dtype in ("i8", "u8", "i16", "i32") else v.dtype)


@kernel(*ACT_UNARY)
def unary(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    func = ACT_UNARY[node.op_type]
    attrs = {"func": func, "mode": ctx.act_mode(node)}
    if node.op_type == "LeakyRelu":
        attrs["alpha"] = float(node.attrs.get("alpha", 0.01))
    _map_tiles(ctx, x, out, "f32", [("act", "activate", attrs, _work_dtype(out) if not is_float(out.dtype) else "f32")])


def _scalar_const(ctx: LoweringContext, name: str) -> float | None:
    """A float constant with a single element, as a Python float (immediate operand), or None."""
    c = ctx.const(name)
    if c is None or c.size != 1 or not np.issubdtype(c.dtype, np.floating):
        return None
    return float(c.reshape(-1)[0])


def _free_is_broadcast(dims: tuple[tuple[int, int], ...], row_count: int) -> bool:
    """True when an operand's tile pattern repeats one value along the free axis (stride 0)."""
    return all(s == 0 for s, _ in dims[row_count:])


@kernel(*BINARY)
def binary(ctx: LoweringContext, node: Node) -> None:
    names = [n for n in node.inputs if n]
    out = ctx.output(node.outputs[0])
    op = BINARY[node.op_type]
    if len(names) != 2:  # variadic Sum/Max/Min: fold pairwise through HBM
        _variadic(ctx, node, names, out, op)
        return
    _binary_into(ctx, names[0], names[1], out, op, node)


def _binary_into(ctx: LoweringContext, a_name: str, b_name: str, out: DeviceValue, op: str, node: Node) -> None:
    imm = _scalar_const(ctx, b_name) if is_float(out.dtype) or op in ("eq", "gt", "lt", "ge", "le") else None
    rev = 0
    if imm is None:
        imm_a = _scalar_const(ctx, a_name) if is_float(out.dtype) or op in ("eq", "gt", "lt", "ge", "le") else None
        if imm_a is not None:
            imm, rev, a_name = imm_a, 1, b_name
    a = ctx.value(a_name)
    work = "f32" if is_float(a.dtype) or is_float(out.dtype) else _work_dtype(a)
    out_work = "f32" if is_float(out.dtype) else _work_dtype(out)
    if imm is not None:
        for t in _tiles(ctx, out, [a]):
            (o_off, o_dims), (a_off, a_dims) = t.patterns
            src = load(ctx, hbm_ap(a, a_off, a_dims), t.partitions, t.free, work)
            dst = new_tile(ctx, t.partitions, t.free, out_work)
            ctx.em.emit("dve", "tensor_scalar", {"dst": dst, "src": src}, op0=op, s0=imm, rev0=rev)
            store(ctx, dst, hbm_ap(out, o_off, o_dims))
        return
    b = ctx.value(b_name)
    if not is_float(b.dtype) and work != "f32":
        work = _work_dtype(b) if b.dtype == "i64" else work
    for t in _tiles(ctx, out, [a, b]):
        (o_off, o_dims), (a_off, a_dims), (b_off, b_dims) = t.patterns
        rows = t.row_dims
        a_scalar = rows > 0 and t.free > 1 and _free_is_broadcast(a_dims, rows)
        b_scalar = rows > 0 and t.free > 1 and _free_is_broadcast(b_dims, rows)
        dst = new_tile(ctx, t.partitions, t.free, out_work)
        if b_scalar or a_scalar:  # one side is one value per partition: tensor_scalar with s0_ap
            full_off, full_dims, sc_off, sc_dims, sc_val, rev = (
                (a_off, a_dims, b_off, b_dims, b, 0) if b_scalar else (b_off, b_dims, a_off, a_dims, a, 1))
            full_val = a if b_scalar else b
            src = load(ctx, hbm_ap(full_val, full_off, full_dims), t.partitions, t.free, work)
            sc = load(ctx, hbm_ap(sc_val, sc_off, sc_dims[:rows]), t.partitions, 1, work)
            ctx.em.emit("dve", "tensor_scalar", {"dst": dst, "src": src, "s0_ap": sc}, op0=op, rev0=rev)
        else:
            ta = load(ctx, hbm_ap(a, a_off, a_dims), t.partitions, t.free, work)
            tb = load(ctx, hbm_ap(b, b_off, b_dims), t.partitions, t.free, work)
            ctx.em.emit("dve", "tensor_tensor", {"dst": dst, "a": ta, "b": tb}, op=op)
        store(ctx, dst, hbm_ap(out, o_off, o_dims))


def _variadic(ctx: LoweringContext, node: Node, names: list[str], out: DeviceValue, op: str) -> None:
    if len(names) == 1:
        _copy(ctx, ctx.value(names[0]), out)
        return
    acc = names[0]
    for i, name in enumerate(names[1:]):
        last = i == len(names) - 2
        target = out if last else ctx.scratch(f"partial{i}", out.shape, out.dtype)
        _binary_into(ctx, acc, name, target, op, node)
        acc = target.name
        if not last:
            ctx.values[acc] = target


def _copy(ctx: LoweringContext, src: DeviceValue, out: DeviceValue) -> None:
    strides = [row_major_strides(out.shape), broadcast_strides(src.shape, out.shape)]
    for t in elementwise_tiles(out.shape, strides, ctx.arch.partitions, 1 << 20):
        (o_off, o_dims), (s_off, s_dims) = t.patterns
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, o_off, o_dims), "src": hbm_ap(src, s_off, s_dims)})


@kernel("Where")
def where(ctx: LoweringContext, node: Node) -> None:
    cond, a, b = (ctx.value(n) for n in node.inputs)
    out = ctx.output(node.outputs[0])
    work = "f32" if is_float(out.dtype) else _work_dtype(out)
    for t in _tiles(ctx, out, [cond, a, b]):
        (o_off, o_dims), (c_off, c_dims), (a_off, a_dims), (b_off, b_dims) = t.patterns
        tc = load(ctx, hbm_ap(cond, c_off, c_dims), t.partitions, t.free, "u8")
        ta = load(ctx, hbm_ap(a, a_off, a_dims), t.partitions, t.free, work)
        tb = load(ctx, hbm_ap(b, b_off, b_dims), t.partitions, t.free, work)
        dst = new_tile(ctx, t.partitions, t.free, work)
        ctx.em.emit("dve", "select", {"dst": dst, "pred": tc, "a": ta, "b": tb})
        store(ctx, dst, hbm_ap(out, o_off, o_dims))


@kernel("Clip")
def clip(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    lo = _bound(ctx, node, 1, "min", -np.inf)
    hi = _bound(ctx, node, 2, "max", np.inf)
    work = "f32" if is_float(x.dtype) else _work_dtype(x)
    _map_tiles(ctx, x, out, work, [("dve", "tensor_scalar", dict(op0="max", s0=lo, op1="min", s1=hi), work)])


def _bound(ctx: LoweringContext, node: Node, index: int, attr: str, default: float) -> float:
    if len(node.inputs) > index and node.inputs[index]:
        c = ctx.const(node.inputs[index])
        if c is None:
            raise CompileError(f"{node.name}: Clip bound {node.inputs[index]} must be a constant on the device")
        return float(np.asarray(c).reshape(-1)[0])
    return float(node.attrs.get(attr, default))


@kernel("HardSigmoid")
def hard_sigmoid(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    _map_tiles(ctx, x, out, "f32", [("dve", "tensor_scalar", dict(op0="mul", s0=alpha, op1="add", s1=beta), "f32"),
                                     ("dve", "tensor_scalar", dict(op0="max", s0=0.0, op1="min", s1=1.0), "f32")])


@kernel("Gelu")
def gelu(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    func = "gelu_tanh" if node.attrs.get("approximate", "none") == "tanh" else "gelu"
    _map_tiles(ctx, x, out, "f32", [("act", "activate", dict(func=func, mode=ctx.act_mode(node)), "f32")])


@kernel("Cast")
def cast(ctx: LoweringContext, node: Node) -> None:
    """A cast is a DMA with an in-flight dtype conversion, HBM to HBM; to bool it is `x != 0`."""
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if ctx.graph.values[node.outputs[0]].dtype == np.bool_:
        work = "f32" if is_float(x.dtype) else _work_dtype(x)
        _map_tiles(ctx, x, out, work, [("dve", "tensor_scalar", dict(op0="ne", s0=0.0), "u8")])
        return
    if is_float(x.dtype) and not is_float(out.dtype):  # ONNX truncates toward zero; a DMA cast rounds
        _truncate_into(ctx, x, out)
        return
    chunk = 1 << 20
    for start in range(0, max(out.size, 1), chunk):
        n = min(chunk, out.size - start)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, start, ((1, n),)), "src": hbm_ap(x, start, ((1, n),))})


def _truncate_into(ctx: LoweringContext, x: DeviceValue, out: DeviceValue) -> None:
    """out (integer) = trunc(x): x - fmod(x, 1) is a whole number in f32, so the storing cast is exact."""
    for t in _tiles(ctx, out, [x]):
        (o_off, o_dims), (x_off, x_dims) = t.patterns
        src = load(ctx, hbm_ap(x, x_off, x_dims), t.partitions, t.free, "f32")
        frac = new_tile(ctx, t.partitions, t.free, "f32")
        ctx.em.emit("dve", "tensor_scalar", {"dst": frac, "src": src}, op0="mod", s0=1.0)
        whole = new_tile(ctx, t.partitions, t.free, "f32")
        ctx.em.emit("dve", "tensor_tensor", {"dst": whole, "a": src, "b": frac}, op="sub")
        store(ctx, whole, hbm_ap(out, o_off, o_dims))
