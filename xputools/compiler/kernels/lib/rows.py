"""The row planner of reductions, shared by ReduceSum/Mean/Max/Min/L2, Softmax, LayerNorm and the
global pools, and the tiled reduction itself.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from device_model.arch import Arch
from device_model.dtypes import itemsize
from device_model.isa import AP
from device_model.timing import contiguous_runs

from ...context import DeviceValue, LoweringContext
from ...errors import CompileError
from .ap import hbm_ap, is_float, strided
from .dims import ap_dims, row_major_strides
from .pools import RingTiles

BUDGET = 8192  # elements per partition in one input tile (32 KiB of f32)
COMBINE = {"sum": "add", "max": "max", "min": "min"}


def row_tiles(ctx: LoweringContext) -> RingTiles:
    """Ring tiles for the row kernels (their largest tile is a BUDGET-element f32 tile)."""
    return RingTiles(ctx, BUDGET * 4)


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


def canonical_dims(shape: Sequence[int], reduced: Iterable[int]) -> list[Dim]:
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

    def x_dims(self) -> tuple[tuple[int, int], ...]:
        """The tile's input elements in HBM: (stride, count) dims, partitions first."""
        return ap_dims([(self.ps, self.q)] + [(d.s, d.n) for d in self.dims])

    def y_dims(self, partitions: bool = True) -> tuple[tuple[int, int], ...]:
        """The tile's output elements in HBM (the partition dim first unless `partitions` is False)."""
        head = [(self.po, self.q)] if partitions else []
        return ap_dims(head + [(d.o, d.n) for d in self.dims if not d.red])

    def reduce_view(self, tile: AP) -> tuple[AP, int]:
        """`tile` (this tile's data, contiguous in HBM order) seen with its kept dims first and its
        reduced dims innermost; also the number of reduced dims of the view."""
        strides = row_major_strides([d.n for d in self.dims])
        kept = ap_dims([(s, d.n) for s, d in zip(strides, self.dims) if not d.red])
        red = ap_dims([(s, d.n) for s, d in zip(strides, self.dims) if d.red])
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


def _partition_steps(n: int, m: int, partitions: int) -> list[tuple[int, int, int]]:
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


def _cost(plan: Plan, elem_bytes: int, passes: float, arch: Arch) -> float:
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


def best_plan(dims: list[Dim], ctx: LoweringContext, budget: int = BUDGET, whole_reduced: bool = False,
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


def reduce_into(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, dims: list[Dim], op: str,
                pre: str | None = None, finish: str | None = None,
                count: int = 1, act_mode: str = "exact") -> None:
    """out = finish(reduce_op(pre(x))) over the reduced dims of `dims` (see module docstring).
    finish: None, "mean" (divide by `count`) or "sqrt"."""
    em = ctx.em
    work = work_dtype(x.dtype)
    dims, plan = best_plan(dims, ctx, elem_bytes=itemsize(x.dtype))
    tiles = row_tiles(ctx)
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


def elementwise_act(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, func: str, mode: str = "exact") -> None:
    """out = func(x) elementwise on ACT, in tiles of up to BUDGET elements per partition."""
    size = x.size
    partitions = ctx.arch.partitions
    per = -(-size // partitions)
    per = min(per, BUDGET)
    tiles = row_tiles(ctx)
    start = 0
    while start < size:
        rows = min(partitions, (size - start) // per) if size - start >= per else 0
        if rows:
            q, f = rows, per
        else:
            q, f = 1, size - start
        t = tiles.load(hbm_ap(x, start, ap_dims([(f, q), (1, f)])), q, f)
        ctx.em.emit("act", "activate", {"dst": t, "src": t}, func=func, mode=mode)
        ctx.em.emit("dma", "dma_copy", {"dst": hbm_ap(out, start, ap_dims([(f, q), (1, f)])), "src": t})
        start += q * f
