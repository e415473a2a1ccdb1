"""QuantizeLinear / DequantizeLinear on the DVE, and the int8 MatMul/Conv that quantize.py creates.

QuantizeLinear: y = saturate(round_half_even(x / scale) + zero_point). The division runs in f32 and
the write into an i32 tile rounds half to even (the device's float -> int cast); the zero point is
then added on the integer path, whose write into the i8/u8 tile saturates. Adding the zero point
before rounding would differ at ties for odd zero points, so that takes two instructions; with a
zero point of 0 it is one. DequantizeLinear: y = (q - zero_point) * scale, one tensor_scalar on the
f32 datapath (q - zp is exact in f32 for 8-bit q; int32 q is converted like a static_cast).

Scales and zero points are constants. Per-tensor values are immediates; per-axis values are
broadcast along the iteration space like any elementwise operand: when a tile's rows carry the
axis they are per-partition scalars ([P,1] operands), otherwise full tiles (tensor_tensor).

The int8 kernels (XpuQLinearMatMul / XpuQLinearConv, see quantize.py for the node format) live in
qlinear.py and are registered from here.
"""
from __future__ import annotations

import numpy as np

from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..emitter import Emitter
from ..errors import CompileError
from ..graph import Node
from .lib.ap import MAX_FREE, hbm_ap, load, new_tile, store
from .lib.dims import broadcast_strides, row_major_strides
from .lib.registry import kernel
from .lib.tiling import elementwise_tiles


def quant_params(ctx: LoweringContext, node: Node, axis_shape_from: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale f32 array, zero point int64 array, axis) of a Q/DQ node; scalars have shape ()."""
    scale = ctx.const(node.input(1))
    if scale is None:
        raise CompileError(f"{node.name}: {node.op_type} needs a constant scale on the device")
    zp_name = node.input(2)
    zp = ctx.const(zp_name) if zp_name else None
    if zp_name and zp is None:
        raise CompileError(f"{node.name}: {node.op_type} needs a constant zero point on the device")
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, np.int64) if zp is None else np.asarray(zp).astype(np.int64)
    if int(node.attrs.get("block_size", 0) or 0):
        raise CompileError(f"{node.name}: blocked quantization is not lowered on the device")
    rank = len(ctx.graph.values[axis_shape_from].shape)
    axis = int(node.attrs.get("axis", 1))
    if scale.size > 1:
        if not -rank <= axis < rank:
            raise CompileError(f"{node.name}: axis {axis} out of range for rank {rank}")
        axis %= rank
    return scale, zp, axis


def _broadcast_const(ctx: LoweringContext, hint: str, values: np.ndarray, axis: int, rank: int,
                     dtype: np.dtype | type) -> DeviceValue:
    """A per-axis constant placed so that it broadcasts along the other dims of a rank-`rank`
    tensor: shape [C, 1, ..., 1] with the trailing ones after `axis`."""
    shape = (values.size,) + (1,) * (rank - 1 - axis)
    return ctx.new_const(hint, np.ascontiguousarray(values.reshape(shape).astype(dtype)))


def _scalar_or_none(values: np.ndarray) -> np.generic | None:
    flat = values.reshape(-1)
    return flat[0] if flat.size == 1 or np.all(flat == flat[0]) else None


def _elementwise_q(ctx: LoweringContext, node: Node, x: DeviceValue, out: DeviceValue, scale: np.ndarray,
                   zp: np.ndarray, axis: int, quantize: bool) -> None:
    """Shared tiling of Q (quantize=True) and DQ."""
    rank = len(out.shape)
    strides = [row_major_strides(out.shape), broadcast_strides(x.shape, out.shape)]
    s_imm, z_imm = _scalar_or_none(scale), _scalar_or_none(zp)
    per_axis = s_imm is None or z_imm is None
    no_zero = not np.any(zp)
    if per_axis:
        s_val = _broadcast_const(ctx, "scale", scale.reshape(-1), axis, rank, np.float32)
        z_val = _broadcast_const(ctx, "zero_point", zp.reshape(-1), axis, rank, np.int32)
        strides += [broadcast_strides(s_val.shape, out.shape), broadcast_strides(z_val.shape, out.shape)]
    z_dtype = "i32" if quantize else "f32"
    for t in elementwise_tiles(out.shape, strides, ctx.arch.partitions, MAX_FREE):
        (o_off, o_dims), (x_off, x_dims) = t.patterns[:2]
        src = load(ctx, hbm_ap(x, x_off, x_dims), t.partitions, t.free, "f32")
        dst = new_tile(ctx, t.partitions, t.free, out.dtype)
        if not per_axis:
            s, z = float(s_imm), int(z_imm)
        else:
            (s_off, s_dims), (z_off, z_dims) = t.patterns[2:]
            rows = t.row_dims
            per_row = rows > 0 and not any(st for st, _ in s_dims[rows:] + z_dims[rows:])
            if per_row:  # the axis runs along the tile's rows: one scale and zero point per partition
                s_dims, z_dims, free = s_dims[:rows], z_dims[:rows], 1
            else:  # it runs along the free axis: scale and zero point tiles like the data
                free = t.free
            s = load(ctx, hbm_ap(s_val, s_off, s_dims), t.partitions, free, "f32")
            z = load(ctx, hbm_ap(z_val, z_off, z_dims), t.partitions, free, z_dtype)
        tiles = isinstance(s, AP) and s.free_size > 1
        if no_zero:
            _alu(ctx.em, dst, src, "div" if quantize else "mul", s)
        elif quantize:  # round (the write into i32) before adding the zero point
            mid = new_tile(ctx, t.partitions, t.free, "i32")
            _alu(ctx.em, mid, src, "div", s)
            _alu(ctx.em, dst, mid, "add", z)
        elif tiles:
            mid = new_tile(ctx, t.partitions, t.free, "f32")
            _alu(ctx.em, mid, src, "sub", z)
            _alu(ctx.em, dst, mid, "mul", s)
        else:
            _alu(ctx.em, dst, src, "sub", float(z) if isinstance(z, int) else z, "mul", s)
        store(ctx, dst, hbm_ap(out, o_off, o_dims))


def _alu(em: Emitter, dst: AP, src: AP, op0: str, v0: float | int | AP, op1: str | None = None,
         v1: float | int | AP | None = None) -> None:
    """dst = (src op0 v0) [op1 v1]: v a number or a [P,1] AP (tensor_scalar), or a full tile
    (tensor_tensor, one stage)."""
    if isinstance(v0, AP) and v0.free_size > 1:
        em.emit("dve", "tensor_tensor", {"dst": dst, "a": src, "b": v0}, op=op0)
        return
    operands, attrs = {"dst": dst, "src": src}, {}
    for k, (op, v) in enumerate(((op0, v0), (op1, v1))):
        if op is None:
            continue
        attrs[f"op{k}"] = op
        if isinstance(v, AP):
            operands[f"s{k}_ap"] = v
        else:
            attrs[f"s{k}"] = v
    em.emit("dve", "tensor_scalar", operands, **attrs)


@kernel("QuantizeLinear")
def quantize_linear(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if out.dtype not in ("i8", "u8"):
        raise CompileError(f"{node.name}: QuantizeLinear to {out.dtype} is not lowered (int8/uint8 only)")
    scale, zp, axis = quant_params(ctx, node, node.inputs[0])
    _elementwise_q(ctx, node, x, out, scale, zp, axis, quantize=True)


@kernel("DequantizeLinear")
def dequantize_linear(ctx: LoweringContext, node: Node) -> None:
    q = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    scale, zp, axis = quant_params(ctx, node, node.inputs[0])
    _elementwise_q(ctx, node, q, out, scale, zp, axis, quantize=False)
