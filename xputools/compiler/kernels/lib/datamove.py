"""Strided copies between HBM tensors, shared by the data-movement and resize kernels.

A copy is described by `dims`: (count, dst_stride, src_stride) triples in elements, outermost
first, plus element offsets into the destination and source values (DeviceValues of the same
dtype). `copy_region` picks the cheapest way under the cost model (docs/timing.md):
- direct: HBM->HBM DMAs (an access pattern has at most 4 dims: outer dims beyond that are looped);
- staged: the destination is contiguous but the source is not (stride-0 broadcasts, strided reads):
  each row's contiguous source span is loaded into SBUF, rearranged by one on-chip copy whose access
  pattern carries the source strides, and stored as long contiguous runs (a DMA pays 64 bytes per
  contiguous run, so an element-by-element pattern costs ~17x its f32 payload);
- gathered: a negative source stride (a reversed axis, which an access pattern cannot express)
  becomes POOL `gather` with row indices from `iota`.
`fill_region` writes a constant into a strided region from a memset SBUF tile.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from device_model.arch import Arch
from device_model.dtypes import itemsize
from device_model.isa import AP, MAX_FREE_DIMS

from ...context import DeviceValue, LoweringContext
from ...emitter import SBUF_BLOCK
from .ap import hbm_ap, new_tile
from .dims import Dims, blocks, count_stride_dims, loop_excess, merge_dims, stride_column, volume
from .pools import SlotPool

STAGE_BYTES = 32 * 1024  # per partition for one staging buffer (a kernel keeps two or three live)
SMALL_REVERSED = 3  # a reversed axis this short is cheaper as separate DMAs than as a gather


def runs(ap_dims: tuple[tuple[int, int], ...]) -> int:
    """Contiguous runs of an HBM pattern, as device_model.timing.contiguous_runs counts them."""
    dims = [d for d in ap_dims if d[1] != 1]
    total = math.prod(c for _, c in ap_dims)
    run = 1
    while dims and dims[-1][0] == run:
        run *= dims.pop()[1]
    return max(1, total // run)


# ---- cost model --------------------------------------------------------------------------------------
class DmaCost:
    """Cycle estimates from the arch preset. Writes into one HBM tensor are ordered one after the
    other by the emitter (hazards are tracked per tensor), so each store pays the full latency."""

    def __init__(self, arch: Arch):
        dma = arch.raw["dma"]
        self.latency = dma["latency_cycles"]
        self.overhead = dma["run_overhead_bytes"]
        self.bytes_per_cycle = min(arch.raw["hbm"]["bandwidth_gbps"], dma["queue_gbps"]) / arch.clock_ghz

    def fabric(self, elems: int, isz: int, nruns: int) -> float:
        """Bytes a transfer occupies the fabric for: payload plus the per-run overhead."""
        return elems * isz + nruns * self.overhead

    def cycles(self, serial_dmas: int, fabric_bytes: float, extra: float = 0.0) -> float:
        """Cycles of `serial_dmas` DMAs one after the other moving `fabric_bytes`, plus `extra`."""
        return serial_dmas * self.latency + fabric_bytes / self.bytes_per_cycle + extra


# ---- copies ---------------------------------------------------------------------------------------
def copy_region(ctx: LoweringContext, dst: DeviceValue, dst_off: int, src: DeviceValue, src_off: int,
                dims: Dims) -> None:
    """dst[dst_off + Σ i·dst_stride] = src[src_off + Σ i·src_stride] over `dims`."""
    if any(d[0] == 0 for d in dims):
        return
    dims = merge_dims(dims) or [(1, 1, 1)]
    if any(d[2] < 0 for d in dims):
        _copy_reversed(ctx, dst, dst_off, src, src_off, dims)
        return
    if dims[-1][1] == 1 and dims[-1][2] != 1:
        plan = _stage_plan(ctx, dims, itemsize(src.dtype))
        if plan is not None and plan.cycles < direct_cycles(ctx, dims, itemsize(src.dtype)):
            _emit_staged(ctx, dst, dst_off, src, src_off, plan)
            return
    copy_direct(ctx, dst, dst_off, src, src_off, dims)


def copy_direct(ctx: LoweringContext, dst: DeviceValue, dst_off: int, src: DeviceValue, src_off: int,
                dims: Dims) -> None:
    """`copy_region` as HBM->HBM DMAs only (outer dims beyond what a pattern holds become loops)."""
    dims = merge_dims(dims) or [(1, 1, 1)]
    for (do, so), sub in loop_excess(dims):
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(dst, dst_off + do, count_stride_dims(stride_column(sub, 1))),
                                        "src": hbm_ap(src, src_off + so, count_stride_dims(stride_column(sub, 2)))})


def direct_cycles(ctx: LoweringContext, dims: Dims, isz: int) -> float:
    """Estimated cycles of `copy_direct` over `dims`."""
    cost = DmaCost(ctx.arch)
    n, fabric = 0, 0.0
    for _, sub in loop_excess(dims):
        nruns = max(runs(count_stride_dims(stride_column(sub, 1))), runs(count_stride_dims(stride_column(sub, 2))))
        fabric += cost.fabric(volume(sub), isz, nruns)
        n += 1
    return cost.cycles(n, fabric)


@dataclass
class _StagePlan:
    outer: list      # dims looped around everything
    row: tuple       # the dim on partitions
    free: list       # up to 3 inner dims, the free axis of each tile
    span: int        # contiguous source elements loaded per row
    groups: list     # (first row, partitions, rows per partition): one load, copy and store each
    cycles: float    # estimate


def _stage_plan(ctx: LoweringContext, dims: Dims, isz: int) -> _StagePlan | None:
    """Rows on partitions, up to 3 inner dims in the free axis; None when staging cannot help."""
    max_elems = STAGE_BYTES // isz
    free, f, i = [], 1, len(dims)
    while i > 0 and len(free) < 3 and f * dims[i - 1][0] <= max_elems:
        i -= 1
        free.insert(0, dims[i])
        f *= dims[i][0]
    if not free:
        return None
    span = 1 + sum((c - 1) * s for c, _, s in free)
    if span > max_elems:
        return None
    row = dims[i - 1] if i > 0 else (1, 0, 0)
    outer = list(dims[:i - 1]) if i > 0 else []
    rows = row[0]
    p = min(ctx.arch.partitions, rows)
    nch_max = max(1, max_elems // max(f, span))
    if len(merge_dims(stride_column(free, 1))) > 2:
        nch_max = 1  # the store pattern would need more than 4 dims
    groups = row_groups(rows, p, nch_max)
    cost = DmaCost(ctx.arch)
    n_outer = volume(outer)
    fabric = 0.0
    for _, pp, nch in groups:
        fabric += cost.fabric(pp * nch * span, isz, pp) + cost.fabric(pp * nch * f, isz, pp)
    copy_cycles = ctx.arch.raw["dve"]["fixed_cycles"] + max(f, span) * groups[0][2]
    serial = n_outer * len(groups) + 1
    return _StagePlan(outer, row, free, span, groups, cost.cycles(serial, fabric * n_outer, copy_cycles))


def _emit_staged(ctx: LoweringContext, dst: DeviceValue, dst_off: int, src: DeviceValue, src_off: int,
                 plan: _StagePlan) -> None:
    dtype = src.dtype
    f = volume(plan.free)
    engines = ("dve", "act")
    k = 0
    outer = plan.outer or [(1, 0, 0)]
    for idx in itertools.product(*(range(d[0]) for d in outer)):
        d_base = dst_off + sum(j * d[1] for j, d in zip(idx, outer))
        s_base = src_off + sum(j * d[2] for j, d in zip(idx, outer))
        _, row_d, row_s = plan.row
        for r0, p, nch in plan.groups:
            raw = new_tile(ctx, p, nch * plan.span, dtype)
            ctx.em.emit("dma", "dma_copy", {
                "dst": raw,
                "src": hbm_ap(src, s_base + r0 * row_s,
                              count_stride_dims([(p, row_s * nch), (nch, row_s), (plan.span, 1)]))})
            out = new_tile(ctx, p, nch * f, dtype)
            src_dims = ((plan.span, nch),) + tuple((s, c) for c, _, s in plan.free)
            ctx.em.emit(engines[k % 2], "copy",
                        {"dst": out, "src": AP("sbuf", raw.offset, src_dims, dtype, 0, p)})
            k += 1
            ctx.em.emit("dma", "dma_copy", {
                "dst": hbm_ap(dst, d_base + r0 * row_d,
                              count_stride_dims([(p, row_d * nch), (nch, row_d)] + stride_column(plan.free, 1))),
                "src": out})


def _copy_reversed(ctx: LoweringContext, dst: DeviceValue, dst_off: int, src: DeviceValue, src_off: int,
                   dims: Dims) -> None:
    neg = [i for i, d in enumerate(dims) if d[2] < 0]
    row = max(neg, key=lambda i: dims[i][0])
    looped = [i for i in neg if i != row or dims[i][0] <= SMALL_REVERSED]
    rest = [d for i, d in enumerate(dims) if i not in looped]
    for idx in itertools.product(*(range(dims[i][0]) for i in looped)):
        do = dst_off + sum(j * dims[i][1] for j, i in zip(idx, looped))
        so = src_off + sum(j * dims[i][2] for j, i in zip(idx, looped))
        if row in looped:
            copy_region(ctx, dst, do, src, so, rest)
        else:
            others = [d for i, d in enumerate(dims) if i not in looped and i != row]
            _gather_reversed(ctx, dst, do, src, so, dims[row], others)


def _gather_reversed(ctx: LoweringContext, dst: DeviceValue, dst_off: int, src: DeviceValue, src_off: int,
                    row: tuple[int, ...], others: Dims) -> None:
    """One reversed axis (count n, src stride < 0) as the gather row axis; `others` form the rows."""
    n, row_d, row_s = row
    base = src_off + (n - 1) * row_s  # the lowest-addressed row; row t of the table is at base + t·|s|
    isz = itemsize(src.dtype)
    others = merge_dims(others)
    parts = []
    for offs, sub in (blocks(others, STAGE_BYTES // isz) if others else [((0, 0), [])]):
        for offs2, sub2 in (loop_excess(sub, MAX_FREE_DIMS - 1) if sub else [((0, 0), [])]):
            parts.append(((offs[0] + offs2[0], offs[1] + offs2[1]), sub2))
    slots = row_slots(ctx, max(volume(sub) for _, sub in parts) * isz)
    index_slots = SlotPool.block(ctx, 2, 4)
    for p0 in range(0, n, ctx.arch.partitions):
        pc = min(ctx.arch.partitions, n - p0)
        idx = index_slots.tile(pc, 1, "i32")
        ctx.em.emit("pool", "iota", {"dst": idx}, base=n - 1 - p0, pstep=-1, step=0)
        for (do, so), sub in parts:
            table = hbm_ap(src, base + so, ((-row_s, n),) + tuple((s, c) for c, _, s in sub))
            tile = slots.tile(pc, volume(sub), src.dtype)
            ctx.em.emit("pool", "gather", {"dst": tile, "table": table, "idx": idx})
            ctx.em.emit("dma", "dma_copy", {
                "dst": hbm_ap(dst, dst_off + p0 * row_d + do, ((row_d, pc),) + tuple((d, c) for c, d, _ in sub)),
                "src": tile})


def row_slots(ctx: LoweringContext, nbytes: int) -> SlotPool:
    """Slots for gathered rows: up to four in flight, within a quarter of SBUF."""
    return SlotPool.block(ctx, max(2, min(4, ctx.arch.sbuf_bytes // 4 // max(nbytes, SBUF_BLOCK))), nbytes)


# ---- constants -------------------------------------------------------------------------------------
class Filler:
    """A memset SBUF row of `length` elements holding `value`, DMA'd into regions of `dst`."""

    def __init__(self, ctx: LoweringContext, dst: DeviceValue, value: float | int, length: int):
        self.ctx, self.dst = ctx, dst
        self.length = max(1, min(length, STAGE_BYTES // itemsize(dst.dtype)))
        self.tile = new_tile(ctx, 1, self.length, dst.dtype)
        ctx.em.emit("dve", "memset", {"dst": self.tile}, value=value)

    def fill(self, dst_off: int, dims: Dims) -> None:
        """dst[dst_off + Σ i·stride] = value over `dims` of (count, dst_stride)."""
        if any(d[0] == 0 for d in dims):
            return
        dims = merge_dims(dims) or [(1, 1)]
        count, stride = dims[-1]
        chunks = [(c0, min(self.length, count - c0)) for c0 in range(0, count, self.length)] \
            if stride == 1 else [(0, count)]
        for c0, cn in chunks:
            sub_dims = merge_dims(dims[:-1] + [(cn, stride)]) or [(1, 1)]
            for (do,), sub in loop_excess(sub_dims):
                # a contiguous source run where the destination has one
                inner_stride = 1 if sub[-1][1] == 1 else 0
                src_dims = tuple((0, c) for c, _ in sub[:-1]) + ((inner_stride, sub[-1][0]),)
                self.ctx.em.emit("dma", "dma_copy", {
                    "dst": hbm_ap(self.dst, dst_off + c0 * stride + do, tuple((s, c) for c, s in sub)),
                    "src": AP("sbuf", self.tile.offset, src_dims, self.dst.dtype, 0, 1)})


def row_groups(rows: int, p: int, nch_max: int) -> list[tuple[int, int, int]]:
    """(first row, partitions, chunks) groups covering `rows`: full groups of `p` partitions take
    up to `nch_max` row-chunks each, a ragged remainder goes last on its own."""
    groups, r, full = [], 0, rows // p
    while r < full * p:
        nch = min(nch_max, full - r // p)
        groups.append((r, p, nch))
        r += p * nch
    if rows % p:
        groups.append((r, rows % p, 1))
    return groups


def progressions(idx: list[int]) -> list[tuple[int, int, int, int]]:
    """Split indices into runs (position, count, first value, step >= 0) of arithmetic progressions."""
    out, i = [], 0
    while i < len(idx):
        j = i + 1
        step = idx[j] - idx[i] if j < len(idx) else 0
        if step < 0:
            step = 0
        while j < len(idx) and idx[j] - idx[j - 1] == step:
            j += 1
        out.append((i, j - i, idx[i], step))
        i = j
    return out
