"""Reductions: ReduceSum/Mean/Max/Min/L2, and the row planner that Softmax, LayerNorm and the
global pools share.

A reduction is planned on the input's coalesced dims (size-1 dims dropped, neighbours of the same
kind merged), each kept (K) or reduced (R), e.g. [K, R], [R, K], [K, R, K]. One dim goes on the
partitions, split as rows of `m` consecutive elements (so a contiguous innermost dim still gives
DMA runs of m elements); the others are cut into chunks so a tile fits the SBUF budget. A tile is
DMAed in HBM order (long runs) and reduced through an SBUF access pattern that puts its reduced dims
innermost (one DVE `reduce`). Reduced dims cut across tiles are combined with DVE tensor_tensor;
a reduced dim on the partitions is finished with POOL `preduce`. The cheapest candidate layout by
the device's cost model wins.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP
from device_model.timing import contiguous_runs

from ..emitter import SBUF_BLOCK
from ..errors import CompileError
from ..tiling import row_major_strides
from . import kernel
from .common import hbm_ap, is_float

BUDGET = 8192  # elements per partition in one input tile (32 KiB of f32)


# ---- SBUF tiles ------------------------------------------------------------------------------------
class Tiles:
    """Fresh SBUF tiles from the emitter's ring allocator, remembering how much was allocated since
    each one: a tile kept across steps (a running statistic, a replicated scale vector) must be
    refreshed before the ring can hand its bytes out again."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.ring = ctx.em.sbuf
        self.used = 0
        self.largest = BUDGET * 4  # bounds the bytes a wrap of the ring skips
        self._born: dict[int, int] = {}
        # the main input streams through one queue: tiles arrive one after another at the full
        # fabric rate, so compute starts after the first instead of after all of them
        self.queue = ctx.em.next_dma_queue()

    def nbytes(self, free: int, dtype: str) -> int:
        return -(-max(free * itemsize(dtype), 1) // SBUF_BLOCK) * SBUF_BLOCK

    def new(self, partitions: int, free: int, dtype: str = "f32") -> AP:
        # whole hazard blocks only: a tile sharing a block with its neighbour would wait for it
        skip = -self.ring.cursor % SBUF_BLOCK
        if skip and self.ring.cursor + skip < self.ring.size:
            self.ring.alloc(skip)
        nbytes = self.nbytes(free, dtype)
        off = self.ring.alloc(nbytes)
        self.used += nbytes + skip
        self.largest = max(self.largest, nbytes)
        self._born[off] = self.used
        return AP("sbuf", off, ((1, max(free, 1)),), dtype, 0, partitions)

    def load(self, src: AP, partitions: int, free: int, dtype: str = "f32") -> AP:
        """A new [partitions, free] tile DMAed from `src` on the input queue."""
        tile = self.new(partitions, free, dtype)
        self.ctx.em.emit(self.queue, "dma_copy", {"dst": tile, "src": src})
        return tile

    def fresh(self, tile: AP, ahead: int) -> bool:
        """True when `tile` survives `ahead` more bytes of allocations: the ring reaches its bytes
        again after the rest of the ring (less what a wrap skips) has been handed out."""
        born = self._born.get(tile.offset)
        if born is None:
            return False
        size = self.nbytes(tile.free_size, tile.dtype)
        return self.used - born + ahead + self.largest <= self.ring.size - size

    def keep(self, tile: AP, ahead: int, engine: str = "dve") -> AP:
        """`tile`, or a copy of it in a fresh buffer when the ring may reuse its bytes soon."""
        if self.fresh(tile, ahead):
            return tile
        copy = self.new(tile.pcount, tile.free_size, tile.dtype)
        self.ctx.em.emit(engine, "copy", {"dst": copy, "src": tile})
        return copy


def column(tile: AP, index: int, width: int = 1) -> AP:
    """Columns [index, index+width) of a contiguous [P, F] tile."""
    return AP(tile.space, tile.offset + index * itemsize(tile.dtype), ((1, width),), tile.dtype,
              tile.pstart, tile.pcount)


def strided(tile: AP, dims, offset_elems: int = 0) -> AP:
    """A view of `tile` with explicit free dims (stride, count), merged where contiguous."""
    return AP(tile.space, tile.offset + offset_elems * itemsize(tile.dtype), merge_dims(dims), tile.dtype,
              tile.pstart, tile.pcount)


def merge_dims(dims) -> tuple[tuple[int, int], ...]:
    """Drop count-1 dims and merge neighbours that walk memory contiguously (C order kept)."""
    out: list[tuple[int, int]] = []
    for s, n in dims:
        if n == 1:
            continue
        if out and out[-1][0] == s * n:
            out[-1] = (s, out[-1][1] * n)
        else:
            out.append((s, n))
    return tuple(out) or ((1, 1),)


def work_dtype(dtype: str) -> str:
    """The SBUF dtype a kernel computes in for a value stored as `dtype`."""
    if is_float(dtype):
        return "f32"
    return "i64" if dtype in ("i64", "u32") else "i32"


# ---- coalesced dims and tiles ----------------------------------------------------------------------
@dataclass(frozen=True)
class Dim:
    n: int      # count
    s: int      # input element stride
    o: int      # output element stride (0 on a reduced dim)
    red: bool


def canonical_dims(shape, reduced) -> list[Dim]:
    """The input's dims with size-1 dims dropped and same-kind neighbours merged."""
    reduced = set(reduced)
    in_strides = row_major_strides(shape)
    out_strides = row_major_strides([n for i, n in enumerate(shape) if i not in reduced])
    dims: list[Dim] = []
    k = 0
    for i, n in enumerate(shape):
        red = i in reduced
        o = 0 if red else out_strides[k]
        k += 0 if red else 1
        if n == 1:
            continue
        if dims and dims[-1].red == red and dims[-1].s == in_strides[i] * n and dims[-1].o == o * n:
            dims[-1] = Dim(dims[-1].n * n, in_strides[i], o, red)
        else:
            dims.append(Dim(n, in_strides[i], o, red))
    return dims


@dataclass(frozen=True)
class RowTile:
    """One tile: `q` partitions (input stride `ps`, output stride `po`, 0 when the partition axis
    is reduced) times free dims in HBM order. `first`/`last` delimit the tiles reduced together."""

    q: int
    ps: int
    po: int
    x_off: int
    y_off: int
    dims: tuple[Dim, ...]
    first: bool
    last: bool

    @property
    def free(self) -> int:
        return math.prod(d.n for d in self.dims)

    @property
    def kept_free(self) -> int:
        return math.prod(d.n for d in self.dims if not d.red)

    def x_dims(self):
        return merge_dims([(self.ps, self.q)] + [(d.s, d.n) for d in self.dims])

    def y_dims(self, partitions: bool = True):
        head = [(self.po, self.q)] if partitions else []
        return merge_dims(head + [(d.o, d.n) for d in self.dims if not d.red])

    def reduce_view(self, tile: AP) -> tuple[AP, int]:
        """`tile` (this tile's data, contiguous in HBM order) seen with its kept dims first and its
        reduced dims innermost; also the number of reduced dims of the view."""
        strides = row_major_strides([d.n for d in self.dims])
        kept = merge_dims([(s, d.n) for s, d in zip(strides, self.dims) if not d.red])
        red = merge_dims([(s, d.n) for s, d in zip(strides, self.dims) if d.red])
        kept = () if kept == ((1, 1),) else kept
        red = () if red == ((1, 1),) else red
        view = AP(tile.space, tile.offset, kept + red or ((1, 1),), tile.dtype, tile.pstart, tile.pcount)
        return view, len(red)

    def broadcast_view(self, stat: AP) -> AP:
        """A [q, kept_free] statistic (kept dims in HBM order) repeated over the reduced dims, in the
        element order of `reduce_view`."""
        kept = [d.n for d in self.dims if not d.red]
        strides = row_major_strides(kept)
        red = math.prod(d.n for d in self.dims if d.red)
        return strided(stat, [(s, n) for s, n in zip(strides, kept)] + [(0, red)])


@dataclass
class Plan:
    tiles: list[RowTile]
    reduced_partitions: bool
    cost: float


def _partition_steps(n: int, m: int, partitions: int):
    """(start element, rows, elements per row) covering a dim of n split in rows of m."""
    rows = n // m
    steps = [(r0 * m, min(partitions, rows - r0), m) for r0 in range(0, rows, partitions)]
    if n % m:
        steps.append((rows * m, 1, n % m))
    return steps


def plan_layout(dims: list[Dim], pdim: int, partitions: int, budget: int, whole_reduced: bool) -> Plan | None:
    """Tiles for `dims` with dim `pdim` on the partitions, or None when that layout cannot work.
    `whole_reduced`: every tile holds all reduced elements of its rows (Softmax, LayerNorm)."""
    pd = dims[pdim]
    if whole_reduced and pd.red:
        return None
    chunk = [1] * len(dims)
    left = budget
    multi = 0
    if whole_reduced:
        need = math.prod(d.n for d in dims if d.red)
        if need > budget:
            return None
        for i, d in enumerate(dims):
            if d.red:
                chunk[i] = d.n
                multi += 1
        left = budget // need
    m = 1
    for i in reversed(range(len(dims))):
        d = dims[i]
        if whole_reduced and d.red:
            continue
        if multi >= 3:  # partition + 3 free dims is the most one access pattern holds
            break
        if i == pdim:
            m = max(1, min(-(-d.n // partitions), left))
            # rows that divide the dim exactly avoid a one-partition tail tile
            m = next((k for k in range(m, (m + 1) // 2 - 1, -1) if d.n % k == 0), m)
            left //= m
            multi += m > 1
        else:
            chunk[i] = max(1, min(d.n, left))
            left //= chunk[i]
            multi += chunk[i] > 1
    # loops: kept dims outermost, then reduced ones (whose tiles are combined)
    loops = []
    for i, d in enumerate(dims):
        if i == pdim:
            steps = _partition_steps(d.n, m, partitions)
        else:
            steps = [(start, None, min(chunk[i], d.n - start)) for start in range(0, d.n, chunk[i])]
        loops.append((i, steps))
    outer = [lp for lp in loops if not dims[lp[0]].red]
    inner = [lp for lp in loops if dims[lp[0]].red]
    tiles: list[RowTile] = []
    inner_steps = list(itertools.product(*(s for _, s in inner)))
    for o_combo in itertools.product(*(s for _, s in outer)):
        for k, i_combo in enumerate(inner_steps):
            chosen = dict(zip([i for i, _ in outer], o_combo))
            chosen.update(zip([i for i, _ in inner], i_combo))
            x_off = y_off = 0
            tdims = []
            q = 1
            for i, d in enumerate(dims):
                start, rows, count = chosen[i]
                x_off += start * d.s
                y_off += start * d.o
                if i == pdim:
                    q = rows
                if count > 1:
                    tdims.append(Dim(count, d.s, d.o, d.red))
            tiles.append(RowTile(q, pd.s * m, pd.o * m, x_off, y_off, tuple(tdims), k == 0,
                                 k == len(inner_steps) - 1))
    return Plan(tiles, pd.red, 0.0)


def _cost(plan: Plan, elem_bytes: int, passes: float, arch) -> float:
    """Cycles by the device cost model, roughly: the loads stream through one DMA queue (transfer
    plus latency each) while the engines work on the previous tile."""
    dma_rate = arch.raw["hbm"]["bandwidth_gbps"] / arch.clock_ghz
    run_bytes = arch.raw["dma"]["run_overhead_bytes"]
    latency = arch.raw["dma"]["latency_cycles"]
    fixed = arch.raw["dve"]["fixed_cycles"]
    loads, compute = [0.0], [0.0]
    for t in plan.tiles:
        runs = contiguous_runs(AP("hbm", 0, t.x_dims(), "f32"))
        loads.append((t.q * t.free * elem_bytes + runs * run_bytes) / dma_rate + latency)
        work = passes * (fixed + t.free)
        if plan.reduced_partitions and t.q > 1:
            work += arch.raw["pool"]["fixed_cycles"] + 2 * t.kept_free * math.ceil(math.log2(t.q))
        compute.append(work)
    loads, compute = loads[1:] or loads, compute[1:] or compute
    overlap = max(sum(loads[1:]), sum(compute[:-1]))
    return loads[0] + overlap + compute[-1] + 300 * len(plan.tiles)  # + emulator overhead per tile


def best_plan(dims: list[Dim], ctx, budget: int = BUDGET, whole_reduced: bool = False,
              elem_bytes: int = 4, passes: float = 1.0) -> tuple[list[Dim], Plan]:
    """The cheapest layout (and tile size, up to `budget` elements per partition); a size-1 kept dim
    is added when every dim is reduced (or none is left)."""
    partitions = ctx.arch.partitions
    if not any(not d.red for d in dims):
        dims = [Dim(1, 0, 0, False)] + list(dims)
    best = None
    for size in sorted({budget, max(1, budget // 2), max(1, budget // 4)}, reverse=True):
        for j in range(len(dims)):
            plan = plan_layout(dims, j, partitions, size, whole_reduced)
            if plan is None:
                continue
            plan.cost = _cost(plan, elem_bytes, passes, ctx.arch)
            if best is None or plan.cost < best.cost:
                best = plan
    if best is None:
        raise CompileError(f"{ctx.node.name if ctx.node else ''}: {ctx.node.op_type if ctx.node else ''} "
                           f"rows of {math.prod(d.n for d in dims if d.red)} elements do not fit the "
                           f"{budget}-element SBUF tile")
    return dims, best


# ---- the reduction kernel ------------------------------------------------------------------------
COMBINE = {"sum": "add", "max": "max", "min": "min"}
REDUCE_OPS = {  # op -> (reduce op, elementwise pre-transform, finish)
    "ReduceSum": ("sum", None, None),
    "ReduceMean": ("sum", None, "mean"),
    "ReduceMax": ("max", None, None),
    "ReduceMin": ("min", None, None),
    "ReduceL2": ("sum", "square", "sqrt"),
}


def reduce_axes(ctx, node, rank: int) -> list[int] | None:
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
def reduce(ctx, node) -> None:
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


def reduce_into(ctx, x, out, dims: list[Dim], op: str, pre: str | None = None, finish: str | None = None,
                count: int = 1, act_mode: str = "exact") -> None:
    """out = finish(reduce_op(pre(x))) over the reduced dims of `dims` (see module docstring).
    finish: None, "mean" (divide by `count`) or "sqrt"."""
    em = ctx.em
    work = work_dtype(x.dtype)
    dims, plan = best_plan(dims, ctx, elem_bytes=itemsize(x.dtype))
    tiles = Tiles(ctx)
    acc = None
    for t in plan.tiles:
        if acc is not None:  # the partial result of the previous tiles lives through this step
            acc = tiles.keep(acc, 2 * tiles.nbytes(t.free, "f32") + 3 * tiles.nbytes(t.kept_free, "f32"))
        xt = tiles.load(hbm_ap(x, t.x_off, t.x_dims()), t.q, t.free, work)
        src = xt
        view, naxes = t.reduce_view(xt)
        part = None
        if pre == "square":
            if naxes and t.kept_free == 1:  # the whole tile reduces to one value per partition
                part = tiles.new(t.q, 1)
                sq = tiles.new(t.q, t.free)
                em.emit("act", "activate", {"dst": sq, "src": xt, "accum": part}, func="square",
                        mode=act_mode)
            else:
                src = tiles.new(t.q, t.free)
                em.emit("act", "activate", {"dst": src, "src": xt}, func="square", mode=act_mode)
                view, naxes = t.reduce_view(src)
        if part is None:
            if naxes:
                part = tiles.new(t.q, t.kept_free, work)
                em.emit("dve", "reduce", {"dst": part, "src": view}, op=op, axes=naxes)
            else:
                part = src
        if plan.reduced_partitions and t.q > 1:
            row = tiles.new(1, t.kept_free, work)
            em.emit("pool", "preduce", {"dst": row, "src": part}, op=op)
            part = row
        if not t.first:
            total = tiles.new(part.pcount, t.kept_free, work)
            em.emit("dve", "tensor_tensor", {"dst": total, "a": acc, "b": part}, op=COMBINE[op])
            part = total
        acc = part
        if not t.last:
            continue
        if finish == "mean":
            em.emit("dve", "tensor_scalar", {"dst": acc, "src": acc}, op0="div", s0=float(count))
        elif finish == "sqrt":
            em.emit("act", "activate", {"dst": acc, "src": acc}, func="sqrt", mode=act_mode)
        em.emit("dma", "dma_copy", {"dst": hbm_ap(out, t.y_off, t.y_dims(not plan.reduced_partitions)),
                                    "src": acc})


def elementwise_act(ctx, x, out, func: str, mode: str = "exact") -> None:
    """out = func(x) elementwise on ACT, in tiles of up to BUDGET elements per partition."""
    size = x.size
    partitions = ctx.arch.partitions
    per = -(-size // partitions)
    per = min(per, BUDGET)
    tiles = Tiles(ctx)
    start = 0
    while start < size:
        rows = min(partitions, (size - start) // per) if size - start >= per else 0
        if rows:
            q, f = rows, per
        else:
            q, f = 1, size - start
        t = tiles.load(hbm_ap(x, start, merge_dims([(f, q), (1, f)])), q, f)
        ctx.em.emit("act", "activate", {"dst": t, "src": t}, func=func, mode=mode)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, start, merge_dims([(f, q), (1, f)])), "src": t})
        start += q * f
