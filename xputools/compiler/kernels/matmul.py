"""MatMul and Gemm on the PE: a tiled GEMM with resident or streamed operands and a fused
bias/activation epilogue (operand loads in lib/pe.py, the epilogue in lib/epilogue.py).

An output tile keeps M rows on partitions and N columns on the free axis, so it leaves for
row-major HBM with one contiguous run per partition.

Buffers: every SBUF/PSUM buffer a node needs is allocated once, up front, in pools that hand their
slots out round-robin; the emitter orders each reuse after the previous user, so loads of the next
tile overlap compute on the current one while long-lived tiles (resident weights) are never
overwritten by the ring allocator wrapping around.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..errors import CompileError
from ..graph import Node
from .lib.ap import hbm_pattern, sbuf_ap, sub
from .lib.dims import broadcast_strides, coalesce, row_major_strides
from .lib.epilogue import Epilogue, epilogue_for
from .lib.pe import Mat, PeLimits, device_cast, load_kmajor, operand_dtype, pe_limits
from .lib.pools import SlotPool, padded
from .lib.registry import kernel

STORE_COLS = 2048  # f32 columns of results gathered before one store


# ---- the tiled GEMM ------------------------------------------------------------------------------


class BatchGroup(NamedTuple):
    """`count` consecutive matrices of a batch, with the element offsets of the first one in each
    operand."""

    a: int
    b: int
    out: int
    bias: int
    count: int


ONE_MATRIX = [BatchGroup(0, 0, 0, 0, 1)]


@dataclass
class GemmProblem:
    """out[g] = epilogue(a[g] @ b[g]) for each group of a batch.

    `ka`: A as a K-major matrix (rows K, cols M); `kb`: B (rows K, cols N); `out` rows M, cols N.
    `batches`: the batch groups; inside a group the matrices are `sg` apart in each
    Mat. `bias`: a Mat over [M, N] (strides may be 0) or None.
    """

    ka: Mat
    kb: Mat
    out: Mat
    m: int
    n: int
    k: int
    batches: list[BatchGroup]
    bias: Mat | None = None
    epilogue: Epilogue | None = None


def run_gemm(ctx: LoweringContext, node: Node, p: GemmProblem, dtype: str) -> None:
    """Emit the tiled GEMM of `p` with operands in `dtype`."""
    lim = pe_limits(ctx)
    em = ctx.em
    isz = itemsize(dtype)
    gmax = max(b.count for b in p.batches)
    mt_max = min(p.m, lim.m)
    nt_max = min(p.n * gmax, lim.n) // gmax if gmax > 1 else min(p.n, lim.n)
    k_tiles = [(k0, min(lim.k, p.k - k0)) for k0 in range(0, p.k, lim.k)]
    m_tiles = [(m0, min(mt_max, p.m - m0)) for m0 in range(0, p.m, mt_max)]
    n_tiles = [(n0, min(nt_max, p.n - n0)) for n0 in range(0, p.n, nt_max)]
    nk = len(k_tiles)
    budget = lim.sbuf_budget
    # results of consecutive N tiles leave in one store: the emitter orders all writes to one
    # HBM tensor, so fewer, larger stores overlap better with compute
    chunk_cols = nt_max if gmax > 1 else max(nt_max, min(p.n, STORE_COLS) // nt_max * nt_max)
    out_bytes = padded(gmax * chunk_cols * 4)
    bias_kind = _bias_kind(p.bias)
    bias_bytes = padded(gmax * nt_max * 4) if bias_kind == "tile" else (64 if bias_kind == "row" else 0)
    fixed = 3 * out_bytes + 2 * bias_bytes
    a_tile = padded(gmax * mt_max * isz)
    b_full = padded(gmax * p.n * isz)
    # residency: B for the whole batch group, then A per M tile, if they fit; else stream per tile
    b_resident = 2 * nk * b_full <= (budget - fixed) // 2
    b_bytes = 2 * nk * b_full if b_resident else 3 * padded(gmax * nt_max * isz)
    a_resident = 2 * nk * a_tile <= budget - fixed - b_bytes
    a_bytes = 2 * nk * a_tile if a_resident else 3 * a_tile
    if fixed + a_bytes + b_bytes > budget:
        raise CompileError(f"{node.name}: matmul tiles need {fixed + a_bytes + b_bytes} bytes of SBUF per "
                           f"partition ({budget} available)")
    a_pool = SlotPool(em.sbuf, a_tile, 2 * nk if a_resident else 3)
    b_pool = SlotPool(em.sbuf, b_full if b_resident else padded(gmax * nt_max * isz), 2 * nk if b_resident else 3)
    out_pool = SlotPool(em.sbuf, out_bytes, 3)
    # a bias that varies only along N is loaded once per N tile (broadcast over partitions)
    cached_bias = bias_kind == "tile" and p.bias.sr == 0 and p.bias.sg == 0 and \
        len(n_tiles) * bias_bytes <= budget - fixed - a_bytes - b_bytes + 2 * bias_bytes
    bias_pool = SlotPool(em.sbuf, bias_bytes, len(n_tiles) if cached_bias else 2) if bias_kind else None
    bias_cache = {}
    psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))

    def load(mat: Mat, extra: int, k0: int, kt: int, x0: int, xt: int, g: int, pool: SlotPool) -> AP:
        tile = sbuf_ap(pool.take(), kt, g * xt, dtype)
        load_kmajor(ctx, mat.shift(extra).at(r=k0, c=x0), kt, xt, g, tile)
        return tile

    work = [(bi, m0, mt) for bi in range(len(p.batches)) for m0, mt in m_tiles]

    def resident_tiles(step: int) -> tuple[list[AP] | None, list[AP] | None]:
        """Loads of the resident operands of work item `step`: B when its batch group starts, A."""
        bi, m0, mt = work[step]
        grp = p.batches[bi]
        a_off, b_off, g = grp.a, grp.b, grp.count
        b_tiles = None
        if b_resident and (step == 0 or work[step - 1][0] != bi):
            b_tiles = [load(p.kb, b_off, k0, kt, 0, p.n, g, b_pool) for k0, kt in k_tiles]
        a_tiles = [load(p.ka, a_off, k0, kt, m0, mt, g, a_pool) for k0, kt in k_tiles] if a_resident else None
        return b_tiles, a_tiles

    # the next item's loads are emitted before this item's compute (engines run in order)
    upcoming = resident_tiles(0)
    for step, (bi, m0, mt) in enumerate(work):
        grp = p.batches[bi]
        a_off, b_off, o_off, c_off, g = grp.a, grp.b, grp.out, grp.bias, grp.count
        new_b, a_tiles = upcoming
        if new_b is not None:
            b_tiles = new_b
        if step + 1 < len(work):
            upcoming = resident_tiles(step + 1)
        for n0, nt in n_tiles:
            if (n0 % chunk_cols) == 0:
                res_n0, res_cols = n0, min(chunk_cols, p.n - n0)
                res_tile = sbuf_ap(out_pool.take(), mt, g * res_cols, "f32")
            ps = AP("psum", psum_pool.take(), ((1, g * nt),), "f32", 0, mt)
            for ki, (k0, kt) in enumerate(k_tiles):
                at = a_tiles[ki] if a_resident else load(p.ka, a_off, k0, kt, m0, mt, g, a_pool)
                if b_resident:
                    bt, bw = b_tiles[ki], p.n
                    bcol = n0
                else:
                    bt, bw, bcol = load(p.kb, b_off, k0, kt, n0, nt, g, b_pool), nt, 0
                for gi in range(g):
                    em.emit("pe", "matmul", {
                        "dst": sub(ps, mt, gi * nt, ((1, nt),)),
                        "stat": sub(at, kt, gi * mt, ((1, mt),)),
                        "mov": sub(bt, kt, gi * bw + bcol, ((1, nt),)),
                    }, start=1 if ki == 0 else 0)
            res = sub(res_tile, mt, n0 - res_n0, ((1, g * nt),))
            row_bias = tile_bias = None
            if bias_kind:
                bmat = p.bias.shift(c_off).at(r=m0, c=n0)
                if bias_kind == "row":
                    row_bias = sbuf_ap(bias_pool.take(), mt, 1, "f32")
                    em.emit("dma", "dma_copy", {"dst": row_bias, "src": bmat.ap(mt, 1, 1)})
                elif cached_bias:
                    if n0 not in bias_cache:
                        bias_cache[n0] = sbuf_ap(bias_pool.take(), mt_max, gmax * nt, "f32")
                        em.emit("dma", "dma_copy", {"dst": bias_cache[n0],
                                                    "src": p.bias.at(c=n0).ap(mt_max, gmax, nt)})
                    tile_bias = sub(bias_cache[n0], mt, 0, ((1, g * nt),))
                else:
                    tile_bias = sbuf_ap(bias_pool.take(), mt, g * nt, "f32")
                    em.emit("dma", "dma_copy", {"dst": tile_bias, "src": bmat.ap(mt, g, nt)})
            p.epilogue.emit(ctx, ps, res, row_bias=row_bias, tile_bias=tile_bias)
            if n0 + nt == res_n0 + res_cols:
                omat = p.out.shift(o_off).at(r=m0, c=res_n0)
                em.emit("dma", "dma_copy", {"dst": omat.ap(mt, g, res_cols), "src": res_tile})


def _bias_kind(bias: Mat | None) -> str | None:
    if bias is None:
        return None
    if bias.sc == 0 and bias.sg == 0:
        return "row"
    return "tile"


# ---- MatMul / Gemm -------------------------------------------------------------------------------


def _const_mat(ctx: LoweringContext, hint: str, array: np.ndarray, dtype: str) -> DeviceValue:
    """Place a kernel-arranged constant (already in its final layout) in the compute dtype."""
    return ctx.new_const(hint, device_cast(np.ascontiguousarray(array), dtype))


def _group_size(lim: PeLimits, m: int, n: int, k: int, inner: int, isz: int) -> int:
    """How many matrices of a batch share one load/evacuation/store (each gets its own matmuls)."""
    if m > lim.m or n > lim.n // 2:
        return 1
    g = min(inner, lim.n // n)
    nk = -(-k // lim.k)
    # keep the double-buffered resident operands small (each group's tiles hold g*m and g*n columns)
    while g > 1 and 4 * nk * g * (m + n) * isz > lim.sbuf_budget // 2:
        g //= 2
    return max(g, 1)


def _batch_groups(out_batch: tuple[int, ...], strides: list[tuple[int, ...]],
                  group_size: Callable[[int], int]) -> tuple[list[BatchGroup], tuple[int, ...]]:
    """(a, b, out, bias offsets, group size) for every group of consecutive matrices along the
    innermost (coalesced) batch dim, and the per-operand strides inside a group; `strides` = per
    operand (a, b, out, bias) element strides per batch dim; `group_size(count)` picks the size."""
    shape, strides = coalesce(tuple(out_batch), [tuple(s) for s in strides])
    if not shape:
        return ONE_MATRIX, (0, 0, 0, 0)
    outer, inner = shape[:-1], shape[-1]
    g = group_size(inner)
    inner_strides = tuple(s[-1] for s in strides)
    groups = []
    for idx in np.ndindex(*outer):
        base = [sum(i * s for i, s in zip(idx, st[:-1])) for st in strides]
        for j0 in range(0, inner, g):
            groups.append(BatchGroup(*(b + j0 * s for b, s in zip(base, inner_strides)), min(g, inner - j0)))
    return groups, inner_strides


def _matrix_bias(ctx: LoweringContext, name: str, m: int, n: int, batch_rank: int,
                 beta: float = 1.0) -> float | tuple[Mat, tuple[int, ...]]:
    """A bias C broadcast to [.., M, N] as (Mat, its batch strides), or a Python float when it is a
    single constant value. A constant is pre-scaled by `beta` in f32 (a run-time C is scaled by
    the caller)."""
    c = ctx.const(name)
    if c is not None:
        arr = np.asarray(c, dtype=np.float32)
        if beta != 1.0:
            arr = (arr * np.float32(beta)).astype(np.float32)
        if arr.size == 1:
            return float(arr.reshape(-1)[0])
        value = ctx.new_const("bias", arr) if beta != 1.0 else ctx.value(name)
    else:
        value = ctx.value(name)
    shape = tuple(value.shape)
    if len(shape) > 2 + batch_rank:
        raise CompileError(f"bias {name} of shape {shape} has more dims than the output")
    full = (1,) * (2 + batch_rank - len(shape)) + shape
    for d, want in ((full[-2], m), (full[-1], n)):
        if d not in (1, want):
            raise CompileError(f"bias {name} of shape {shape} does not broadcast to [{m}, {n}]")
    rm = row_major_strides(full)
    strides = tuple(s if d > 1 else 0 for s, d in zip(rm, full))
    return Mat(value, 0, strides[-2], strides[-1]), strides[:-2]


@kernel("MatMul")
def matmul(ctx: LoweringContext, node: Node) -> None:
    dtype = operand_dtype(ctx, node)
    lim = pe_limits(ctx)
    a_name, b_name = node.inputs[0], node.inputs[1]
    a_shape = tuple(ctx.graph.values[a_name].shape)
    b_shape = tuple(ctx.graph.values[b_name].shape)
    out = ctx.output(node.outputs[0])
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    m, k = a2[-2:]
    n = b2[-1]
    if b2[-2] != k:
        raise CompileError(f"{node.name}: MatMul inner dims differ: {a_shape} x {b_shape}")
    if out.size == 0:
        return
    if k == 0:
        raise CompileError(f"{node.name}: MatMul with an empty contraction (K = 0) is not lowered")
    batch_a, batch_b = a2[:-2], b2[:-2]
    out_batch = tuple(np.broadcast_shapes(batch_a, batch_b))
    rank = len(out_batch)
    sa = tuple(s * m * k for s in broadcast_strides(batch_a, out_batch)) if rank else ()
    sb = tuple(s * k * n for s in broadcast_strides(batch_b, out_batch)) if rank else ()
    so = tuple(s * m * n for s in row_major_strides(out_batch))

    bias, bias_strides, const_bias = None, (0,) * rank, 0.0
    if node.input(2):  # a fused bias along N
        got = _matrix_bias(ctx, node.input(2), m, n, rank)
        if isinstance(got, float):
            const_bias = got
        else:
            bias, bias_strides = got
    # with one B for the whole batch, the batch of A is just more rows (unless the bias differs)
    fold = all(s == 0 for s, d in zip(sb, out_batch) if d > 1) and (
        bias is None or (bias.sr == 0 and not any(bias_strides)))
    m_eff = m * int(np.prod(out_batch)) if fold else m

    a_const, b_const = ctx.const(a_name), ctx.const(b_name)
    if a_const is not None:
        arr = np.asarray(a_const, dtype=np.float32).reshape(a2)
        if fold:
            ka = Mat(_const_mat(ctx, "a_t", arr.reshape(m_eff, k).T, dtype), 0, m_eff, 1)
        else:
            ka = Mat(_const_mat(ctx, "a_t", np.swapaxes(arr, -1, -2), dtype), 0, m, 1)
    else:
        ka = Mat(ctx.value(a_name), 0, 1, k)
    if b_const is not None:
        kb = Mat(_const_mat(ctx, "b", np.asarray(b_const, dtype=np.float32).reshape(b2), dtype), 0, n, 1)
    else:
        kb = Mat(ctx.value(b_name), 0, n, 1)
    outm = Mat(out, 0, n, 1)
    if fold:
        batches = ONE_MATRIX
        m_run = m_eff
    else:
        def group_size(count: int) -> int:
            return _group_size(lim, m, n, k, count, itemsize(dtype))

        batches, inner = _batch_groups(out_batch, [sa, sb, so, bias_strides], group_size)
        ka, kb, outm = replace(ka, sg=inner[0]), replace(kb, sg=inner[1]), replace(outm, sg=inner[2])
        if bias is not None:
            bias = replace(bias, sg=inner[3])
        m_run = m
    epilogue = epilogue_for(ctx, node, const_bias=const_bias)
    run_gemm(ctx, node, GemmProblem(ka, kb, outm, m_run, n, k, batches, bias, epilogue), dtype)


@kernel("Gemm")
def gemm(ctx: LoweringContext, node: Node) -> None:
    dtype = operand_dtype(ctx, node)
    a_name, b_name = node.inputs[0], node.inputs[1]
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    a_shape = tuple(ctx.graph.values[a_name].shape)
    b_shape = tuple(ctx.graph.values[b_name].shape)
    m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
    k2, n = (b_shape[1], b_shape[0]) if trans_b else b_shape
    if k != k2:
        raise CompileError(f"{node.name}: Gemm inner dims differ: A {a_shape} (transA={trans_a}) x "
                           f"B {b_shape} (transB={trans_b})")
    out = ctx.output(node.outputs[0])
    if out.size == 0:
        return
    if k == 0:
        raise CompileError(f"{node.name}: Gemm with an empty contraction (K = 0) is not lowered")
    scale = alpha
    a_const, b_const = ctx.const(a_name), ctx.const(b_name)
    if b_const is not None:
        arr = np.asarray(b_const, dtype=np.float32)
        arr = arr.T if trans_b else arr
        if scale != 1.0:
            arr, scale = (arr.astype(np.float64) * alpha).astype(np.float32), 1.0
        kb = Mat(_const_mat(ctx, "b", arr, dtype), 0, n, 1)
    else:
        bv = ctx.value(b_name)
        kb = Mat(bv, 0, 1, k) if trans_b else Mat(bv, 0, n, 1)
    if a_const is not None:
        arr = np.asarray(a_const, dtype=np.float32)
        arr = arr if trans_a else arr.T  # K-major [K, M]
        if scale != 1.0:
            arr, scale = (arr.astype(np.float64) * alpha).astype(np.float32), 1.0
        ka = Mat(_const_mat(ctx, "a_t", arr, dtype), 0, m, 1)
    else:
        av = ctx.value(a_name)
        ka = Mat(av, 0, m, 1) if trans_a else Mat(av, 0, 1, k)
    bias, const_bias = None, 0.0
    c_name = node.input(2)
    if c_name and beta != 0.0:
        got = _matrix_bias(ctx, c_name, m, n, 0, beta if ctx.const(c_name) is not None else 1.0)
        if isinstance(got, float):
            const_bias = got
        else:
            bias = got[0]
            if ctx.const(c_name) is None and beta != 1.0:
                bias = _scaled_runtime_bias(ctx, node, bias, m, n, beta)
    problem = GemmProblem(ka, kb, Mat(out, 0, n, 1), m, n, k, ONE_MATRIX, bias,
                          epilogue_for(ctx, node, scale=scale, const_bias=const_bias))
    run_gemm(ctx, node, problem, dtype)


def _scaled_runtime_bias(ctx: LoweringContext, node: Node, bias: Mat, m: int, n: int, beta: float) -> Mat:
    """beta * C for a C computed at run time, materialised in HBM scratch as a full [M, N]
    (rows on partitions, one DVE multiply per tile)."""
    lim = pe_limits(ctx)
    scaled = ctx.scratch("beta_c", (m, n), "f32")
    em = ctx.em
    for m0 in range(0, m, lim.m):
        mt = min(lim.m, m - m0)
        for n0 in range(0, n, 2048):
            nt = min(2048, n - n0)
            tile = sbuf_ap(em.sbuf.alloc(nt * 4), mt, nt, "f32")
            em.emit("dma", "dma_copy", {"dst": tile, "src": bias.at(r=m0, c=n0).ap(mt, 1, nt)})
            em.emit("dve", "tensor_scalar", {"dst": tile, "src": tile}, op0="mul", s0=float(beta))
            em.emit("dma", "dma_copy", {"dst": hbm_pattern(scaled, m0 * n + n0, ((n, mt), (1, nt))), "src": tile})
    return Mat(scaled, 0, n, 1)
