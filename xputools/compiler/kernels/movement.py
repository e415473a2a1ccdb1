"""Data-movement ONNX ops. Reshape-likes alias their input's bytes (no instructions); the others are
strided DMAs between HBM tensors (datamove.copy_region), with SBUF staging where it shortens the
DMAs' contiguous runs, PE transposes when a Transpose moves the innermost axis, and POOL `gather`
for runtime indices and reversed (negative-step) axes."""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..errors import CompileError
from ..graph import Node
from .lib.ap import hbm_ap, is_float, new_tile
from .lib.datamove import (
    STAGE_BYTES,
    DmaCost,
    Filler,
    copy_direct,
    copy_region,
    direct_cycles,
    progressions,
    row_groups,
    row_slots,
)
from .lib.dims import blocks, broadcast_strides, count_stride_dims, loop_excess, merge_dims, row_major_strides, volume
from .lib.pools import SlotPool
from .lib.registry import kernel


def _axis(node: Node, rank: int, default: int = 0) -> int:
    axis = int(node.attrs.get("axis", default))
    if not -rank <= axis < max(rank, 1):
        raise CompileError(f"{node.name}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _const_ints(ctx: LoweringContext, node: Node, index: int, what: str) -> list[int] | None:
    name = node.input(index)
    if not name:
        return None
    c = ctx.const(name)
    if c is None:
        raise CompileError(f"{node.name}: {what} ({name}) must be a constant on the device")
    return [int(v) for v in np.asarray(c).reshape(-1)]


# ---- aliases ---------------------------------------------------------------------------------------
@kernel("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
def reshape(ctx: LoweringContext, node: Node) -> None:
    """Same bytes, another shape: the output names the input's HBM region."""
    ctx.alias(node.outputs[0], node.inputs[0])


# ---- Concat / Split ----------------------------------------------------------------------------------
def _slab_copier(ctx: LoweringContext, shape: tuple[int, ...], axis: int) -> Callable[..., None]:
    """copy(dst, dst_pos, src, src_pos, k): k positions along `axis` (over all outer and inner
    elements of a tensor of `shape`) between two tensors that differ only in that axis's length."""
    inner, outer = math.prod(shape[axis + 1:]), math.prod(shape[:axis])

    def copy(dst: DeviceValue, dst_pos: int, src: DeviceValue, src_pos: int, k: int) -> None:
        if k and outer:
            copy_region(ctx, dst, dst_pos * inner, src, src_pos * inner,
                        [(outer, dst.shape[axis] * inner, src.shape[axis] * inner), (k * inner, 1, 1)])
    return copy


@kernel("Concat")
def concat(ctx: LoweringContext, node: Node) -> None:
    out = ctx.output(node.outputs[0])
    axis = _axis(node, len(out.shape))
    copy, pos = _slab_copier(ctx, out.shape, axis), 0
    for name in node.present_inputs():
        v = ctx.value(name)
        copy(out, pos, v, 0, v.shape[axis])
        pos += v.shape[axis]


@kernel("Split")
def split(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    axis = _axis(node, len(x.shape))
    copy, pos = _slab_copier(ctx, x.shape, axis), 0
    for name in node.outputs:  # the static output shapes give the split sizes
        out = ctx.output(name)
        copy(out, 0, x, pos, out.shape[axis])
        pos += out.shape[axis]
    if pos != x.shape[axis]:
        raise CompileError(f"{node.name}: outputs cover {pos} of the {x.shape[axis]} elements "
                           f"along axis {axis}")


# ---- Slice ---------------------------------------------------------------------------------------
def slice_axis(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """(first index, count) of an ONNX Slice along one axis."""
    if step == 0:
        raise ValueError("Slice step 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return start, max(0, -(-(end - start) // step))


@kernel("Slice")
def slice_(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    rank = len(x.shape)
    starts = _const_ints(ctx, node, 1, "starts")
    ends = _const_ints(ctx, node, 2, "ends")
    axes = _const_ints(ctx, node, 3, "axes") or list(range(len(starts)))
    steps = _const_ints(ctx, node, 4, "steps") or [1] * len(starts)
    first, step = [0] * rank, [1] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = a + rank if a < 0 else a
        if st == 0:
            raise CompileError(f"{node.name}: Slice step 0 on axis {a}")
        first[a], count = slice_axis(x.shape[a], s, e, st)
        step[a] = st
        if count != out.shape[a]:
            raise CompileError(f"{node.name}: Slice gives {count} elements on axis {a}, "
                               f"the graph says {out.shape[a]}")
    if out.size == 0:
        return
    xs, os_ = row_major_strides(x.shape), row_major_strides(out.shape)
    src_off = sum(f * s for f, s in zip(first, xs))
    copy_region(ctx, out, 0, x, src_off, [(out.shape[i], os_[i], step[i] * xs[i]) for i in range(rank)])


# ---- Expand ----------------------------------------------------------------------------------------
@kernel("Expand")
def expand(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    src = broadcast_strides(x.shape, out.shape)
    copy_region(ctx, out, 0, x, 0, list(zip(out.shape, row_major_strides(out.shape), src)))


# ---- Gather ----------------------------------------------------------------------------------------
@kernel("Gather")
def gather(ctx: LoweringContext, node: Node) -> None:
    data = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    axis = _axis(node, len(data.shape))
    outer = math.prod(data.shape[:axis])
    rows = data.shape[axis]
    inner = math.prod(data.shape[axis + 1:])
    const = ctx.const(node.inputs[1])
    n = int(np.prod(np.shape(const))) if const is not None else ctx.value(node.inputs[1]).size
    if out.size == 0:
        return
    if const is not None:
        idx = [int(v) for v in np.asarray(const).reshape(-1)]
        fixed = [v + rows if v < 0 else v for v in idx]
        bad = [v for v, f in zip(idx, fixed) if not 0 <= f < rows]
        if bad:
            raise CompileError(f"{node.name}: Gather index {bad[0]} is out of range for axis {axis} "
                               f"of size {rows}")
        copies = [(pos * inner, first * inner,
                   [(outer, n * inner, rows * inner), (count, inner, step * inner), (inner, 1, 1)])
                  for pos, count, first, step in progressions(fixed)]
        isz = itemsize(data.dtype)
        # copies into one output are ordered one after the other: few runs of indices are cheaper as
        # DMAs, many as a run-time gather from the index table
        as_copies = sum(direct_cycles(ctx, merge_dims(d), isz) for _, _, d in copies)
        if as_copies <= _gather_cycles(ctx, outer, inner, n, isz):
            for dst_off, src_off, dims in copies:
                copy_region(ctx, out, dst_off, data, src_off, dims)
            return
    gather_rows(ctx, out, data, ctx.value(node.inputs[1]), outer, rows, inner, n)


def _gather_cycles(ctx: LoweringContext, outer: int, inner: int, n: int, isz: int) -> float:
    """Estimated cycles of gather_rows: index load and fix-up, then per 128 indices a POOL gather and
    a store (stores into the output are serialized)."""
    cost, pool, P = DmaCost(ctx.arch), ctx.arch.raw["pool"], ctx.arch.partitions
    row = outer * inner
    gather = pool["fixed_cycles"] + math.ceil(2 * row / pool["elements_per_cycle"])
    store = cost.cycles(1, cost.fabric(min(n, P) * row, isz, min(n, P) * outer))
    fixup = 2 * (ctx.arch.raw["dve"]["fixed_cycles"] + 1)
    return cost.latency + fixup + gather + math.ceil(n / P) * max(store, gather)


def gather_rows(ctx: LoweringContext, out: DeviceValue, data: DeviceValue, indices: DeviceValue, outer: int, rows: int,
                inner: int, n: int) -> None:
    """out[o, i, :] = data[o, wrap(indices[i]), :] on POOL, 128 indices per gather."""
    others = merge_dims([(outer, rows * inner, n * inner), (inner, 1, 1)])  # (count, src, dst)
    parts = []
    for offs, sub in (blocks(others, STAGE_BYTES // itemsize(data.dtype)) if others else [((0, 0), [])]):
        for offs2, sub2 in (loop_excess(sub, 3) if sub else [((0, 0), [])]):
            parts.append(((offs[0] + offs2[0], offs[1] + offs2[1]), sub2))
    P = ctx.arch.partitions
    slots = row_slots(ctx, max(volume(sub) for _, sub in parts) * itemsize(data.dtype))
    index_slots = SlotPool.block(ctx, 6, 4)  # raw, shift, index tiles of two chunks in flight
    for p0 in range(0, n, P):
        pc = min(P, n - p0)
        raw = index_slots.tile(pc, 1, "i32")
        ctx.em.emit("dma", "dma_copy", {"dst": raw, "src": hbm_ap(indices, p0, ((1, pc),))})
        shift = index_slots.tile(pc, 1, "i32")  # rows where the index is negative (ONNX counts from the end)
        ctx.em.emit("dve", "tensor_scalar", {"dst": shift, "src": raw}, op0="lt", s0=0, op1="mul", s1=rows)
        idx = index_slots.tile(pc, 1, "i32")
        ctx.em.emit("dve", "tensor_tensor", {"dst": idx, "a": raw, "b": shift}, op="add")
        for (so, do), sub in parts:
            table = hbm_ap(data, so, ((inner, rows),) + tuple((s, c) for c, s, _ in sub))
            tile = slots.tile(pc, volume(sub), data.dtype)
            ctx.em.emit("pool", "gather", {"dst": tile, "table": table, "idx": idx})
            ctx.em.emit("dma", "dma_copy", {
                "dst": hbm_ap(out, p0 * inner + do, ((inner, pc),) + tuple((d, c) for c, _, d in sub)),
                "src": tile})


# ---- Transpose --------------------------------------------------------------------------------------
@kernel("Transpose")
def transpose(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    rank = len(x.shape)
    perm = node.attrs.get("perm") or list(range(rank))[::-1]
    perm = [int(p) + rank if int(p) < 0 else int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise CompileError(f"{node.name}: perm {perm} is not a permutation of {rank} axes")
    if out.size == 0:
        return
    xs, os_ = row_major_strides(x.shape), row_major_strides(out.shape)
    dims = merge_dims([(out.shape[i], os_[i], xs[perm[i]]) for i in range(rank)])
    if not dims or dims[-1][2] == 1:  # the innermost axis stays: contiguous runs on both sides
        copy_region(ctx, out, 0, x, 0, dims)
        return
    plan = _TransposePlan(ctx, dims, x.dtype)
    if plan.cycles < direct_cycles(ctx, dims, itemsize(x.dtype)):
        plan.emit(ctx, out, x)
    else:
        copy_direct(ctx, out, 0, x, 0, dims)


# dtype -> (dtype the PE transposes it as, PSUM dtype, 32-bit words per element)
_PE_WORDS = {"f32": ("f32", "f32", 1), "bf16": ("bf16", "f32", 1), "f16": ("f16", "f32", 1),
             "fp8e4": ("fp8e4", "f32", 1), "fp8e5": ("fp8e5", "f32", 1),
             "i8": ("i8", "i32", 1), "u8": ("u8", "i32", 1), "i16": ("i16", "i32", 1),
             "i32": ("i32", "i32", 1), "u32": ("i32", "i32", 1), "i64": ("i32", "i32", 2)}


class _Tile(NamedTuple):
    dst: int    # element offset of the tile's first output element (b excluded: see bs)
    src: int
    cn: int     # counts of the c, d and a axes in the tile
    dn: int
    an: int
    bs: list    # (b start, b count) per PE transpose sharing the PSUM tile

    @property
    def first(self) -> int:
        return self.dst + self.bs[0][0]

    @property
    def width(self) -> int:
        return sum(n for _, n in self.bs)


class _TransposePlan:
    """Tiles [K = (c, b) partitions, M = (d, a) free] loaded with contiguous runs along the input's
    innermost axis a, turned by PE `transpose` into PSUM [(d, a), (c, b)] and stored with
    contiguous runs along the output's innermost axis b. c and d are optional extra axes folded in
    when a or b is short; every other axis is a loop. 64-bit elements move as pairs of 32-bit words."""

    def __init__(self, ctx: LoweringContext, dims: list[tuple[int, ...]], dtype: str):
        pe = ctx.arch.raw["pe"]
        self.kmax, self.mmax = min(pe["rows"], ctx.arch.partitions, pe["max_n"]), pe["cols"]
        self.wdtype, self.pdtype, self.w = _PE_WORDS[dtype]
        self.dtype, self.dims = dtype, dims
        ia = next(i for i, d in enumerate(dims) if d[2] == 1)
        ib = len(dims) - 1
        A, B = dims[ia][0], dims[ib][0]
        # fold a spare axis next to a short b (partitions) and a short a (PE columns); prefer the
        # axis that continues the contiguous run, else the longest
        ic = self._fold_axis(B <= self.kmax // 2, [ib - 1] if dims[ib - 1][1] == B else [], (ia, ib))
        id_ = self._fold_axis(A <= self.mmax // 2, [i for i, d in enumerate(dims) if d[2] == A],
                              (ia, ib, ic))
        self.ia, self.ib, self.ic, self.id = ia, ib, ic, id_
        self.bc = min(B, self.kmax)
        self.cc = min(dims[ic][0], self.kmax // self.bc) if ic is not None else 1
        self.ac = min(A, self.mmax)
        self.dc = min(dims[id_][0], self.mmax // self.ac) if id_ is not None else 1
        bank = ctx.arch.psum_bytes // ctx.arch.raw["psum"]["banks"] // 4  # 32-bit columns per bank
        self.group = max(1, bank // (self.bc * self.w)) if self.cc == 1 else 1
        self.loops = [i for i in range(len(dims)) if i not in (ia, ib, ic, id_)]
        cost = DmaCost(ctx.arch)  # a bigger store gains nothing: its transfer would outlast a latency
        self.group_bytes = cost.latency * cost.bytes_per_cycle
        self.cycles = self._estimate(ctx)

    def _fold_axis(self, short: bool, preferred: list[int], taken: tuple[int | None, ...]) -> int | None:
        if not short:
            return None
        spare = [i for i in range(len(self.dims)) if i not in taken]
        for i in preferred:
            if i in spare:
                return i
        return max(spare, key=lambda i: self.dims[i][0], default=None)

    def _count(self, i: int | None) -> int:
        return self.dims[i][0] if i is not None else 1

    def tiles(self) -> Iterator[_Tile]:
        """One _Tile per PSUM tile."""
        d = self.dims
        C, D, A, B = (self._count(i) for i in (self.ic, self.id, self.ia, self.ib))
        for idx in itertools.product(*(range(d[i][0]) for i in self.loops)):
            do = sum(j * d[i][1] for j, i in zip(idx, self.loops))
            so = sum(j * d[i][2] for j, i in zip(idx, self.loops))
            for c0 in range(0, C, self.cc):
                for d0 in range(0, D, self.dc):
                    for a0 in range(0, A, self.ac):
                        for g0 in range(0, B, self.bc * self.group):
                            bs = [(b0, min(self.bc, B - b0)) for b0 in
                                  range(g0, min(B, g0 + self.bc * self.group), self.bc)]
                            off_d = (do + self._off(self.ic, c0, 1) + self._off(self.id, d0, 1)
                                     + a0 * d[self.ia][1])
                            off_s = so + self._off(self.ic, c0, 2) + self._off(self.id, d0, 2) + a0
                            yield _Tile(off_d, off_s, min(self.cc, C - c0), min(self.dc, D - d0),
                                        min(self.ac, A - a0), bs)

    def _off(self, i: int | None, j: int, col: int) -> int:
        return j * self.dims[i][col] if i is not None else 0

    def _stride(self, i: int | None, col: int) -> int:
        return self.dims[i][col] if i is not None else 0

    def _store_groups(self, tiles: Iterable[_Tile]) -> list[list[_Tile]]:
        """Consecutive tiles of one shape whose destinations are evenly spaced: one SBUF buffer and
        one store for the group (stores into one tensor are serialized, each paying DMA latency)."""
        groups: list[list] = []
        for t in tiles:
            g = groups[-1] if groups else None
            if g is not None and self._joins(g, t):
                g.append(t)
            else:
                groups.append([t])
        return groups

    def _joins(self, group: list[_Tile], t: _Tile) -> bool:
        first = group[0]
        shape = lambda x: (x.cn, x.dn, x.an, [n for _, n in x.bs])  # noqa: E731
        if shape(t) != shape(first):
            return False
        delta = t.first - first.first
        if delta <= 0 or delta % len(group) or (len(group) > 1 and delta // len(group) != self._delta(group)):
            return False
        row_bytes = (len(group) + 1) * first.width * first.cn * self.w * 4
        if row_bytes > STAGE_BYTES or row_bytes * first.dn * first.an > self.group_bytes:
            return False
        return len(self._store_dims(first, len(group) + 1, delta // len(group))) <= 4

    @staticmethod
    def _delta(group: list[_Tile]) -> int:
        return group[1].first - group[0].first

    def _store_dims(self, tile: _Tile, n: int, delta: int) -> tuple[tuple[int, int], ...]:
        w = self.w
        return count_stride_dims([(tile.dn, self._stride(self.id, 1) * w), (tile.an, self._stride(self.ia, 1) * w),
                                  (n, delta * w), (tile.cn, self._stride(self.ic, 1) * w), (tile.width * w, 1)])

    def _estimate(self, ctx: LoweringContext) -> float:
        cost = DmaCost(ctx.arch)
        isz = itemsize(self.dtype)
        pe = ctx.arch.raw["pe"]
        cpc = pe["cycles_per_column"].get(self.wdtype, 4)
        fabric = pe_cycles = copy_cycles = 0.0
        groups = self._store_groups(self.tiles())
        for group in groups:
            for _, _, cn, dn, an, bs in group:
                for _, bn in bs:
                    fabric += cost.fabric(cn * bn * dn * an, isz, cn * bn * dn)
                    pe_cycles += self.w * (pe["fixed_cycles"] + cn * bn * cpc)
                width = sum(bn for _, bn in bs)
                fabric += cost.fabric(dn * an * cn * width, isz, dn * an * cn)
                if len(group) > 1:
                    copy_cycles += ctx.arch.raw["dve"]["fixed_cycles"] + cn * width * self.w
        busiest = max(fabric / cost.bytes_per_cycle, pe_cycles, copy_cycles / 2)  # copies alternate DVE/ACT
        return cost.cycles(len(groups) + 1, 0.0, busiest)

    def emit(self, ctx: LoweringContext, out: DeviceValue, x: DeviceValue) -> None:
        w, wd, pd = self.w, self.wdtype, self.pdtype
        store_dtype = wd if w > 1 or wd != self.dtype else self.dtype
        s = lambda i: self._stride(i, 2) * w  # noqa: E731 - strides in 32-bit words for 64-bit data
        copies = 0
        for group in self._store_groups(self.tiles()):
            m = group[0].dn * group[0].an
            width = group[0].width * group[0].cn * w
            buf = new_tile(ctx, m, width * len(group), store_dtype) if len(group) > 1 else None
            for j, (_, off_s, cn, dn, an, bs) in enumerate(group):
                ps = ctx.em.psum.alloc(width * 4)
                col = 0
                for b0, bn in bs:
                    k = cn * bn
                    tile = new_tile(ctx, k, m * w, wd)
                    src_dims = count_stride_dims([(cn, s(self.ic)), (bn, s(self.ib)), (dn, s(self.id)), (an * w, 1)])
                    src = self._word_ap(x, off_s + b0 * self.dims[self.ib][2], src_dims, wd)
                    ctx.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
                    for word in range(w):
                        ctx.em.emit("pe", "transpose", {
                            "src": AP("sbuf", tile.offset + word * itemsize(wd), ((w, m),), wd, 0, k),
                            "dst": AP("psum", ps + (col * w + word) * 4, ((w, k),), pd, 0, m)})
                    col += k
                psum_tile = AP("psum", ps, ((1, width),), pd, 0, m)
                if buf is None:
                    dst = self._word_ap(out, group[0].first, self._store_dims(group[0], 1, 0), store_dtype)
                    ctx.em.emit("dma", "dma_copy", {"dst": dst, "src": psum_tile})
                    continue
                part = AP("sbuf", buf.offset + j * width * itemsize(store_dtype), ((1, width),),
                          store_dtype, 0, m)
                ctx.em.emit(("dve", "act")[copies % 2], "copy", {"dst": part, "src": psum_tile})
                copies += 1
            if buf is not None:
                dst = self._word_ap(out, group[0].first,
                                    self._store_dims(group[0], len(group), self._delta(group)), store_dtype)
                ctx.em.emit("dma", "dma_copy", {"dst": dst, "src": buf})

    def _word_ap(self, value: DeviceValue, elem_offset: int, dims: tuple[tuple[int, int], ...], dtype: str) -> AP:
        return AP("hbm", value.offset + elem_offset * itemsize(value.dtype), dims, dtype)


# ---- Pad -----------------------------------------------------------------------------------------
def _pad_source(mode: str, o: int, before: int, dim: int) -> int:
    """Input index feeding output index `o` along one axis, or -1 for the constant."""
    x = o - before
    if 0 <= x < dim:
        return x
    if mode == "constant":
        return -1
    if mode == "edge":
        return min(max(x, 0), dim - 1)
    if dim == 1:
        return 0
    period = 2 * (dim - 1)
    x %= period
    return period - x if x >= dim else x


def index_pieces(src: list[int]) -> list[tuple[int, int, int, int]]:
    """Runs (out start, count, src start, src step) of an index map; -1 (the constant) runs have
    step 0. Steps are 0 or 1 except inside constant runs; any other step starts a new run."""
    out, i = [], 0
    while i < len(src):
        j = i + 1
        step = 0
        if j < len(src) and (src[i] < 0) == (src[j] < 0) and (src[i] < 0 or src[j] - src[i] in (0, 1)):
            step = 0 if src[i] < 0 else src[j] - src[i]
            while j < len(src) and (src[j] < 0 if src[i] < 0 else src[j] - src[j - 1] == step):
                j += 1
        out.append((i, j - i, src[i], step))
        i = j
    return out


def _pad_amounts(ctx: LoweringContext, node: Node, rank: int) -> tuple[list[int], list[int]]:
    pads = _const_ints(ctx, node, 1, "pads") or []
    axes = _const_ints(ctx, node, 3, "axes")
    axes = [a + rank if a < 0 else a for a in axes] if axes is not None else list(range(rank))
    if len(pads) != 2 * len(axes):
        raise CompileError(f"{node.name}: {len(pads)} pads for {len(axes)} axes (expected twice as many)")
    before, after = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        before[a], after[a] = pads[k], pads[k + len(axes)]
    return before, after


def _pad_value(ctx: LoweringContext, node: Node, dtype: str) -> float | int:
    name = node.input(2)
    c = ctx.const(name) if name else None
    if name and c is None:
        raise CompileError(f"{node.name}: the pad value must be a constant on the device")
    v = np.asarray(c).reshape(-1)[0] if c is not None and np.size(c) else 0
    return float(v) if is_float(dtype) else int(v)


@kernel("Pad")
def pad(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    mode = node.attrs.get("mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        raise CompileError(f"{node.name}: Pad mode {mode!r} is not supported on the device")
    rank = len(x.shape)
    before, after = _pad_amounts(ctx, node, rank)
    if out.size == 0:
        return
    maps = [[_pad_source(mode, o, before[a], x.shape[a]) for o in range(out.shape[a])] for a in range(rank)]
    value = _pad_value(ctx, node, out.dtype) if mode == "constant" else 0
    if not _pad_staged(ctx, x, out, mode, before, after, maps, value):
        _pad_cells(ctx, x, out, maps, value)


def _pad_cells(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, maps: list[list[int]],
               value: float | int) -> None:
    """Every box of the output whose source along each axis is one run: a copy or a fill."""
    xs, os_ = row_major_strides(x.shape), row_major_strides(out.shape)
    pieces = [index_pieces(m) for m in maps]
    fills, copies = [], []
    for cell in itertools.product(*pieces):
        dst_off = sum(p[0] * s for p, s in zip(cell, os_))
        if any(p[2] < 0 for p in cell):
            fills.append((dst_off, [(p[1], s) for p, s in zip(cell, os_)]))
        else:
            copies.append((dst_off, sum(p[2] * s for p, s in zip(cell, xs)),
                           [(p[1], s, p[3] * xs_) for p, s, xs_ in zip(cell, os_, xs)]))
    if fills:
        longest = max((merge_dims(d) or [(1, 1)])[-1][0] for _, d in fills)
        filler = Filler(ctx, out, value, longest)
        for dst_off, dims in fills:
            filler.fill(dst_off, dims)
    for dst_off, src_off, dims in copies:
        copy_region(ctx, out, dst_off, x, src_off, dims)


def _pad_staged(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, mode: str, before: list[int], after: list[int],
                maps: list[list[int]], value: float | int) -> bool:
    """Pads on the innermost (<= 3) axes with a small padded block per row of the unpadded outer axes:
    build each block in SBUF (memset or edge/reflect copies around the loaded interior) and store the
    rows contiguously. False when that layout does not apply."""
    rank = len(x.shape)
    padded = [a for a in range(rank) if before[a] or after[a]]
    k = padded[0] if padded else rank
    if rank - k > 3 or x.size == 0 or any(b < 0 or e < 0 for b, e in zip(before, after)):
        return False
    isz = itemsize(out.dtype)
    block = math.prod(out.shape[k:])
    in_block = math.prod(x.shape[k:])
    if block * isz > STAGE_BYTES:
        return False
    rows = math.prod(out.shape[:k])
    bs = row_major_strides(out.shape[k:])  # strides inside a block
    P = min(ctx.arch.partitions, rows)
    nch_max = max(1, STAGE_BYTES // (block * isz))
    groups = row_groups(rows, P, nch_max)
    interior = sum(before[a] * bs[a - k] for a in range(k, rank))
    axes_k = range(k, rank)
    for r0, p, nch in groups:
        tile = new_tile(ctx, p, nch * block, out.dtype)
        if mode == "constant":
            ctx.em.emit("dve", "memset", {"dst": tile}, value=value)
        dst = AP("sbuf", tile.offset + interior * isz,
                 ((block, nch),) + tuple((bs[a - k], x.shape[a]) for a in axes_k), out.dtype, 0, p)
        src = hbm_ap(x, r0 * in_block, ((in_block * nch, p), (1, nch * in_block)))
        ctx.em.emit("dma", "dma_copy", {"dst": dst, "src": src})
        if mode != "constant":
            _pad_borders(ctx, tile, out, x, k, before, maps, bs, block, nch, p)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, r0 * block, ((block * nch, p), (1, nch * block))),
                                        "src": tile})
    return True


def _pad_borders(ctx: LoweringContext, tile: AP, out: DeviceValue, x: DeviceValue, k: int, before: list[int],
                 maps: list[list[int]], bs: tuple[int, ...], block: int, nch: int, p: int) -> None:
    """Edge/reflect borders, innermost axis first: along axis a, every border run copies from the
    interior slices of the block (axes inside a are complete by then, axes outside a interior)."""
    rank = len(x.shape)
    isz = itemsize(out.dtype)
    for a in reversed(range(k, rank)):
        for start, count, src, step in index_pieces(maps[a]):
            if start >= before[a] and start + count <= before[a] + x.shape[a]:
                continue  # the interior run
            runs_ = [(start, count, src, step)] if step in (0, 1) else \
                [(start + i, 1, maps[a][start + i], 0) for i in range(count)]
            for o0, cnt, s0, st in runs_:
                dst_dims, src_dims, d_off, s_off = [(block, nch)], [(block, nch)], 0, 0
                for j in range(k, rank):
                    if j == a:
                        dst_dims.append((bs[j - k], cnt))
                        src_dims.append((bs[j - k] * st, cnt))
                        d_off += o0 * bs[j - k]
                        s_off += (s0 + before[j]) * bs[j - k]
                    elif j < a:  # outer axes: their interior only
                        dst_dims.append((bs[j - k], x.shape[j]))
                        src_dims.append((bs[j - k], x.shape[j]))
                        d_off += before[j] * bs[j - k]
                        s_off += before[j] * bs[j - k]
                    else:  # inner axes: already padded
                        dst_dims.append((bs[j - k], out.shape[j]))
                        src_dims.append((bs[j - k], out.shape[j]))
                ctx.em.emit("dve", "copy", {
                    "dst": AP("sbuf", tile.offset + d_off * isz, tuple(dst_dims), out.dtype, 0, p),
                    "src": AP("sbuf", tile.offset + s_off * isz, tuple(src_dims), out.dtype, 0, p)})
