"""Softmax, LogSoftmax, LayerNormalization and (standalone, inference) BatchNormalization.

Rows that are normalised together sit on one partition (the row planner of reduce.py: the
normalised axis whole in each tile, other dims on partitions and free). Per-row statistics are
[P, 1] (or [P, rows per partition]) tiles applied with per-partition scalars, or broadcast along
the free axis with stride-0 access patterns.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..errors import CompileError
from ..graph import Graph, Node
from .lib.ap import hbm_ap, strided, tile_columns
from .lib.pools import RingTiles
from .lib.registry import kernel
from .lib.rows import BUDGET, Dim, RowTile, best_plan, canonical_dims, row_tiles

LAYERNORM_MAX_ROW = 7680  # x plus replicated scale and bias rows must fit half of SBUF
LAYERNORM_BATCH = 4096    # free elements per tile when several short rows share a partition


def _axis(node: Node, rank: int, default: int) -> int:
    axis = int(node.attrs.get("axis", default))
    if not -rank <= axis < rank:
        raise CompileError(f"{node.name}: {node.op_type} axis {axis} is out of range for rank {rank}")
    return axis % rank


# ---- Softmax / LogSoftmax ------------------------------------------------------------------------
def softmax_problem(node: Node, graph: Graph) -> str | None:
    """Why the device cannot run this Softmax/LogSoftmax node (support rule), or None: rows longer
    than a tile are done in two passes, but only along the innermost axis."""
    shape = graph.values[node.input(0)].shape
    axis = int(node.attrs.get("axis", -1))
    if not -len(shape) <= axis < len(shape):
        return f"axis {axis} is out of range for rank {len(shape)}"
    dims = canonical_dims(shape, [axis % len(shape)])
    row = math.prod(d.n for d in dims if d.red)
    if row > BUDGET and not dims[-1].red:
        return f"rows of {row} elements (more than {BUDGET}) along a non-innermost axis"
    return None


@kernel("Softmax", "LogSoftmax")
def softmax(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if x.size == 0:
        return
    axis = _axis(node, len(x.shape), -1)
    log = node.op_type == "LogSoftmax"
    mode = ctx.act_mode(node)
    dims = canonical_dims(x.shape, [axis])
    if not any(d.red for d in dims):  # a single element per row: softmax 1, log-softmax 0
        dims = dims + [Dim(1, 1, 0, True)]
    row = math.prod(d.n for d in dims if d.red)
    if row > BUDGET:
        if not dims[-1].red:
            raise CompileError(f"{node.name}: {node.op_type} over axis {axis} with {row} elements per row "
                               f"(more than {BUDGET}) is only lowered for the innermost axis")
        _softmax_two_pass(ctx, x, out, row, log, mode)
        return
    budget = 1 if row == 1 else BUDGET  # one-element rows: one per partition (the simple path)
    dims, plan = best_plan(dims, ctx, budget=budget, whole_reduced=True, elem_bytes=itemsize(x.dtype),
                           passes=3)
    tiles = row_tiles(ctx)
    for t in plan.tiles:
        xt = tiles.load(hbm_ap(x, t.x_off, t.x_dims()), t.q, t.free)
        y = _softmax_tile(ctx, tiles, t, xt, log, mode)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, t.x_off, t.x_dims()), "src": y})


def _softmax_tile(ctx: LoweringContext, tiles: RingTiles, t: RowTile, xt: AP, log: bool, mode: str) -> AP:
    em = ctx.em
    q, f = t.q, t.free
    if t.kept_free == 1:  # one row per partition: per-partition scalars, exp and its sum in one go
        mx = tiles.new(q, 1)
        em.emit("dve", "reduce", {"dst": mx, "src": xt}, op="max", axes=1)
        neg = tiles.new(q, 1)
        em.emit("dve", "tensor_scalar", {"dst": neg, "src": mx}, op0="mul", s0=-1.0)
        e, s = tiles.new(q, f), tiles.new(q, 1)
        em.emit("act", "activate", {"dst": e, "src": xt, "bias_ap": neg, "accum": s}, func="exp", mode=mode)
        if log:
            ls = tiles.new(q, 1)
            em.emit("act", "activate", {"dst": ls, "src": s}, func="log", mode=mode)
            em.emit("dve", "tensor_scalar", {"dst": e, "src": xt, "s0_ap": neg, "s1_ap": ls},
                    op0="add", op1="sub")
        else:
            em.emit("dve", "tensor_scalar", {"dst": e, "src": e, "s0_ap": s}, op0="div")
        return e
    # several rows per partition: the row axis is innermost in the view, statistics broadcast
    xv, naxes = t.reduce_view(xt)
    mx = tiles.new(q, t.kept_free)
    em.emit("dve", "reduce", {"dst": mx, "src": xv}, op="max", axes=naxes)
    em.emit("dve", "tensor_tensor", {"dst": xv, "a": xv, "b": t.broadcast_view(mx)}, op="sub")
    e = tiles.new(q, f)
    em.emit("act", "activate", {"dst": e, "src": xt}, func="exp", mode=mode)
    ev, _ = t.reduce_view(e)
    s = tiles.new(q, t.kept_free)
    em.emit("dve", "reduce", {"dst": s, "src": ev}, op="sum", axes=naxes)
    if log:
        em.emit("act", "activate", {"dst": s, "src": s}, func="log", mode=mode)
        em.emit("dve", "tensor_tensor", {"dst": xv, "a": xv, "b": t.broadcast_view(s)}, op="sub")
        return xt
    em.emit("dve", "tensor_tensor", {"dst": ev, "a": ev, "b": t.broadcast_view(s)}, op="div")
    return e


def _softmax_two_pass(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, row: int, log: bool, mode: str) -> None:
    """Rows longer than a tile: pass 1 keeps a running max and a running sum of exp(x - max)
    (rescaled when the max grows), pass 2 writes the result chunk by chunk."""
    em = ctx.em
    rows = x.size // row
    parts = ctx.arch.partitions
    chunk = BUDGET
    tiles = row_tiles(ctx)
    step_bytes = 2 * tiles.nbytes(chunk, "f32") + 8 * tiles.nbytes(1, "f32")
    for r0 in range(0, rows, parts):
        q = min(parts, rows - r0)
        m_run = s_run = neg = None
        for c0 in range(0, row, chunk):
            n = min(chunk, row - c0)
            if m_run is not None:  # the running max and sum live through this step
                m_run, s_run = tiles.keep(m_run, step_bytes), tiles.keep(s_run, step_bytes)
            xt = tiles.load(hbm_ap(x, r0 * row + c0, ((row, q), (1, n))), q, n)
            cm = tiles.new(q, 1)
            em.emit("dve", "reduce", {"dst": cm, "src": xt}, op="max", axes=1)
            if m_run is not None:
                m_new = tiles.new(q, 1)
                em.emit("dve", "tensor_tensor", {"dst": m_new, "a": m_run, "b": cm}, op="max")
                cm = m_new
            neg = tiles.new(q, 1)
            em.emit("dve", "tensor_scalar", {"dst": neg, "src": cm}, op0="mul", s0=-1.0)
            e, cs = tiles.new(q, n), tiles.new(q, 1)
            em.emit("act", "activate", {"dst": e, "src": xt, "bias_ap": neg, "accum": cs},
                    func="exp", mode=mode)
            if s_run is not None:
                corr = tiles.new(q, 1)  # exp(old max - new max)
                em.emit("act", "activate", {"dst": corr, "src": m_run, "bias_ap": neg}, func="exp", mode=mode)
                s_new = tiles.new(q, 1)
                em.emit("dve", "tensor_scalar", {"dst": s_new, "src": s_run, "s0_ap": corr, "s1_ap": cs},
                        op0="mul", op1="add")
                cs = s_new
            m_run, s_run = cm, cs
        if log:
            ls = tiles.new(q, 1)
            em.emit("act", "activate", {"dst": ls, "src": s_run}, func="log", mode=mode)
            s_run = ls
        for c0 in range(0, row, chunk):
            n = min(chunk, row - c0)
            neg, s_run = tiles.keep(neg, step_bytes), tiles.keep(s_run, step_bytes)
            xt = tiles.load(hbm_ap(x, r0 * row + c0, ((row, q), (1, n))), q, n)
            y = tiles.new(q, n)
            if log:
                em.emit("dve", "tensor_scalar", {"dst": y, "src": xt, "s0_ap": neg, "s1_ap": s_run},
                        op0="add", op1="sub")
            else:
                em.emit("act", "activate", {"dst": y, "src": xt, "bias_ap": neg}, func="exp", mode=mode)
                em.emit("dve", "tensor_scalar", {"dst": y, "src": y, "s0_ap": s_run}, op0="div")
            em.emit("dma", "dma_copy", {"dst": hbm_ap(out, r0 * row + c0, ((row, q), (1, n))), "src": y})


# ---- LayerNormalization ----------------------------------------------------------------------------
class Replicated:
    """n elements of an HBM value (from element `start`) copied to every partition of a [rows, n]
    tile (stride-0 partition pattern), reloaded whenever the ring allocator may reuse its bytes."""

    def __init__(self, ctx: LoweringContext, tiles: RingTiles, src: DeviceValue, rows: int, n: int, start: int = 0):
        self.ctx, self.tiles, self.src, self.rows, self.n, self.start = ctx, tiles, src, rows, n, start
        self.tile: AP | None = None

    def get(self, ahead: int) -> AP:
        if self.tile is None or not self.tiles.fresh(self.tile, ahead):
            self.tile = self.tiles.new(self.rows, self.n)
            src = hbm_ap(self.src, self.start, ((0, self.rows), (1, self.n)))
            self.ctx.em.emit("dma", "dma_copy", {"dst": self.tile, "src": src})
        return self.tile


def layernorm_param(graph: Graph, node: Node, index: int) -> tuple[str, np.ndarray | None] | None:
    """How LayerNormalization input `index` (scale/bias) reaches the device: ("const", values
    expanded to the normalised shape), ("value", None) for a run-time tensor of exactly that shape,
    or None when it cannot (it varies along the leading axes)."""
    name = node.input(index)
    x_shape = tuple(graph.values[node.input(0)].shape)
    axis = int(node.attrs.get("axis", -1)) % len(x_shape)
    tail = x_shape[axis:]
    v = graph.values[name]
    shape = tuple(v.shape)
    while len(shape) > len(tail) and shape[0] == 1:
        shape = shape[1:]
    try:
        if np.broadcast_shapes(shape, tail) != tail:
            return None
    except ValueError:
        return None
    if v.const is not None:
        return "const", np.broadcast_to(np.asarray(v.const).reshape(shape), tail)
    return ("value", None) if shape == tail else None


def layernorm_problem(node: Node, graph: Graph) -> str | None:
    """Why the device cannot run this LayerNormalization node (support rule), or None."""
    shape = graph.values[node.input(0)].shape
    axis = int(node.attrs.get("axis", -1))
    if not -len(shape) <= axis < len(shape):
        return f"axis {axis} is out of range for rank {len(shape)}"
    row = math.prod(shape[axis % len(shape):])
    if row > LAYERNORM_MAX_ROW:
        return f"rows of {row} elements (more than {LAYERNORM_MAX_ROW}) do not fit SBUF with scale and bias"
    for index in (1, 2):
        if node.input(index) and layernorm_param(graph, node, index) is None:
            return (f"input {index} ({node.input(index)}) varies along the leading axes "
                    "(scale/bias apply per normalised element)")
    return None


@kernel("LayerNormalization")
def layer_norm(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    y = ctx.output(node.outputs[0])
    rank = len(x.shape)
    axis = _axis(node, rank, -1)
    eps = float(node.attrs.get("epsilon", 1e-5))
    mode = ctx.act_mode(node)
    rows, row = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    if row > LAYERNORM_MAX_ROW:
        raise CompileError(f"{node.name}: LayerNormalization rows of {row} elements exceed "
                           f"{LAYERNORM_MAX_ROW}")
    stash = []  # optional outputs Mean and InvStdDev
    for i in (1, 2):
        name = node.outputs[i] if len(node.outputs) > i else ""
        stash.append(ctx.output(name) if name and _used(ctx, name) else None)
    params = []
    for index in (1, 2):
        if not node.input(index):
            params.append(None)
            continue
        how = layernorm_param(ctx.graph, node, index)
        if how is None:
            raise CompileError(f"{node.name}: LayerNormalization input {node.input(index)!r} varies along "
                               "the leading axes (the device applies scale/bias along the normalised axes)")
        kind, values = how
        if kind == "const":
            params.append(ctx.new_const(f"param{index}", np.asarray(values, np.float32).reshape(-1)))
        else:
            params.append(ctx.value(node.input(index)))
    if x.size == 0:
        return
    dims = [Dim(rows, row, 1, False), Dim(row, 1, 0, True)]
    budget = 1 if row == 1 else LAYERNORM_BATCH if row <= LAYERNORM_BATCH // 2 else row
    dims, plan = best_plan([d for d in dims if d.n > 1] or [Dim(1, 1, 1, False)], ctx, budget=budget,
                           whole_reduced=True, elem_bytes=itemsize(x.dtype), passes=4)
    tiles = row_tiles(ctx)
    qmax = max(t.q for t in plan.tiles)
    scale, bias = (Replicated(ctx, tiles, p, qmax, row) if p is not None else None for p in params)
    for t in plan.tiles:
        m = t.kept_free
        xt = tiles.load(hbm_ap(x, t.x_off, t.x_dims()), t.q, t.free)
        ahead = 3 * tiles.nbytes(t.free, "f32") + 4 * tiles.nbytes(m, "f32") + 2 * tiles.nbytes(row, "f32")
        sc = scale.get(ahead) if scale else None
        bi = bias.get(ahead) if bias else None
        if m == 1:
            yt, mean, rstd = _layernorm_row(ctx, tiles, t, xt, eps, mode)
        else:
            yt, mean, rstd = _layernorm_rows(ctx, tiles, t, xt, row, eps, mode)
        for p, op in ((sc, "mul"), (bi, "add")):
            if p is not None:
                pv = strided(_rows(p, t.q), [(0, m), (1, row)])
                ctx.em.emit("dve", "tensor_tensor", {"dst": yt, "a": yt, "b": pv}, op=op)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(y, t.x_off, t.x_dims()), "src": yt})
        for dv, stat in zip(stash, (mean, rstd)):
            if dv is not None:
                ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(dv, t.y_off, t.y_dims()), "src": stat})


def _used(ctx: LoweringContext, name: str) -> bool:
    g = ctx.graph
    return name in g.output_names or bool(g.consumers(name))


def _layernorm_row(ctx: LoweringContext, tiles: RingTiles, t: RowTile, xt: AP, eps: float,
                   mode: str) -> tuple[AP, AP, AP]:
    """One row per partition: DVE stats gives mean and variance at once."""
    em = ctx.em
    st = tiles.new(t.q, 2)
    em.emit("dve", "stats", {"dst": st, "src": xt})
    rstd = tiles.new(t.q, 1)
    em.emit("act", "activate", {"dst": rstd, "src": tile_columns(st, 1)}, func="rsqrt", bias=eps, mode=mode)
    mean = tile_columns(st, 0)
    em.emit("dve", "tensor_scalar", {"dst": xt, "src": xt, "s0_ap": mean, "s1_ap": rstd},
            op0="sub", op1="mul")
    return xt, mean, rstd


def _layernorm_rows(ctx: LoweringContext, tiles: RingTiles, t: RowTile, xt: AP, row: int, eps: float,
                    mode: str) -> tuple[AP, AP, AP]:
    """Several short rows per partition: sums over the row axis of [q, m, row] views."""
    em = ctx.em
    q, m = t.q, t.kept_free
    mean = tiles.new(q, m)
    xv, _ = t.reduce_view(xt)
    em.emit("dve", "reduce", {"dst": mean, "src": xv}, op="sum", axes=1)
    em.emit("dve", "tensor_scalar", {"dst": mean, "src": mean}, op0="div", s0=float(row))
    em.emit("dve", "tensor_tensor", {"dst": xv, "a": xv, "b": t.broadcast_view(mean)}, op="sub")
    sq = tiles.new(q, t.free)
    em.emit("act", "activate", {"dst": sq, "src": xt}, func="square", mode=mode)
    var = tiles.new(q, m)
    sv, _ = t.reduce_view(sq)
    em.emit("dve", "reduce", {"dst": var, "src": sv}, op="sum", axes=1)
    rstd = tiles.new(q, m)
    em.emit("act", "activate", {"dst": rstd, "src": var}, func="rsqrt", scale=1.0 / row, bias=eps, mode=mode)
    em.emit("dve", "tensor_tensor", {"dst": xv, "a": xv, "b": t.broadcast_view(rstd)}, op="mul")
    return xt, mean, rstd


# ---- BatchNormalization (inference) -----------------------------------------------------------------
@kernel("BatchNormalization")
def batch_norm(ctx: LoweringContext, node: Node) -> None:
    """y = x * a + b per channel, a = scale / sqrt(var + eps) and b = B - mean * a. Rows (n, c) on
    partitions with a and b as per-partition scalars of one ACT instruction; without spatial dims,
    channels on the free axis instead."""
    x = ctx.value(node.inputs[0])
    y = ctx.output(node.outputs[0])
    if x.size == 0:
        return
    n, c = x.shape[0], (x.shape[1] if len(x.shape) > 1 else 1)
    spatial = math.prod(x.shape[2:])
    coef = _batchnorm_coefficients(ctx, node, c)  # [2, C]: a then b
    em = ctx.em
    tiles = row_tiles(ctx)
    parts = ctx.arch.partitions
    if spatial == 1:  # [N, C]: channels along the free axis, coefficients replicated on partitions
        for c0 in range(0, c, BUDGET):
            cn = min(BUDGET, c - c0)
            qmax = min(parts, n)
            ra = Replicated(ctx, tiles, coef, qmax, cn, c0)
            rb = Replicated(ctx, tiles, coef, qmax, cn, c + c0)
            for r0 in range(0, n, parts):
                q = min(parts, n - r0)
                ahead = 3 * tiles.nbytes(cn, "f32")
                ta, tb = ra.get(ahead), rb.get(ahead)
                xt = tiles.load(hbm_ap(x, r0 * c + c0, ((c, q), (1, cn))), q, cn)
                em.emit("dve", "tensor_tensor", {"dst": xt, "a": xt, "b": _rows(ta, q)}, op="mul")
                em.emit("dve", "tensor_tensor", {"dst": xt, "a": xt, "b": _rows(tb, q)}, op="add")
                em.emit("dma", "dma_copy", {"dst": hbm_ap(y, r0 * c + c0, ((c, q), (1, cn))), "src": xt})
        return
    for row0, q, c0 in _channel_row_tiles(n, c, parts):
        ab = None
        for f0 in range(0, spatial, BUDGET):
            fn = min(BUDGET, spatial - f0)
            if ab is None or not tiles.fresh(ab, tiles.nbytes(fn, "f32")):
                ab = tiles.new(q, 2)
                cq = min(c, q)
                for k in (0, 1):  # the channels of the tile's rows, repeated per image
                    src = hbm_ap(coef, k * c + c0, ((0, q // cq), (1, cq)))
                    em.emit("dma", "dma_copy", {"dst": tile_columns(ab, k), "src": src})
            rows = ((spatial, q), (1, fn))
            xt = tiles.load(hbm_ap(x, row0 * spatial + f0, rows), q, fn)
            em.emit("act", "activate", {"dst": xt, "src": xt, "scale_ap": tile_columns(ab, 0),
                                        "bias_ap": tile_columns(ab, 1)}, func="identity")
            em.emit("dma", "dma_copy", {"dst": hbm_ap(y, row0 * spatial + f0, rows), "src": xt})


def _batchnorm_coefficients(ctx: LoweringContext, node: Node, c: int) -> DeviceValue:
    """[2, C] f32 in HBM: a = scale / sqrt(var + eps), then b = B - mean * a. Folded at compile time
    from constants, else computed on the device (channels along the free axis of one partition)."""
    eps = float(np.float32(node.attrs.get("epsilon", 1e-5)))
    names = node.inputs[1:5]
    consts = [ctx.const(name) for name in names]
    if all(v is not None for v in consts):
        scale, b, mean, var = (np.asarray(v, np.float64).reshape(-1) for v in consts)
        a = scale / np.sqrt(var + eps)
        return ctx.new_const("coef", np.stack([a, b - mean * a]).astype(np.float32))
    em = ctx.em
    coef = ctx.scratch("coef", (2, c), "f32")
    tiles = row_tiles(ctx)
    for c0 in range(0, c, BUDGET):
        n = min(BUDGET, c - c0)
        scale, b, mean, var = (tiles.load(hbm_ap(ctx.value(name), c0, ((1, n),)), 1, n) for name in names)
        a = tiles.new(1, n)
        em.emit("act", "activate", {"dst": a, "src": var}, func="rsqrt", bias=eps, mode=ctx.act_mode(node))
        em.emit("dve", "tensor_tensor", {"dst": a, "a": a, "b": scale}, op="mul")
        em.emit("dve", "tensor_tensor", {"dst": mean, "a": mean, "b": a}, op="mul")
        em.emit("dve", "tensor_tensor", {"dst": b, "a": b, "b": mean}, op="sub")
        em.emit("dma", "dma_copy", {"dst": hbm_ap(coef, c0, ((1, n),)), "src": a})
        em.emit("dma", "dma_copy", {"dst": hbm_ap(coef, c + c0, ((1, n),)), "src": b})
    return coef


def _rows(tile: AP, q: int) -> AP:
    return AP(tile.space, tile.offset, tile.dims, tile.dtype, tile.pstart, q)


def _channel_row_tiles(n: int, c: int, parts: int) -> Iterator[tuple[int, int, int]]:
    """(first row of the (n, c) row space, rows, first channel) per tile; a tile starts at a
    channel 0 when several images share it, so its channel pattern is c0.. repeated."""
    if c <= parts:
        group = parts // c
        for n0 in range(0, n, group):
            yield n0 * c, min(group, n - n0) * c, 0
        return
    for i in range(n):
        for c0 in range(0, c, parts):
            yield i * c + c0, min(parts, c - c0), c0
