"""MatMul and Gemm on the PE, plus what conv.py shares: buffer pools, K-major operand loads and the
fused bias/activation epilogue.

The PE computes psum[M, N] = stat[K, M]^T @ mov[K, N] with K on partitions. An output tile keeps M
rows on partitions and N columns on the free axis, so it leaves for row-major HBM with one
contiguous run per partition. Both operands must have K on partitions:
- B [K, N] (row-major) already has it: one contiguous run per partition;
- A [M, K] has K innermost. Constant operands are rearranged at compile time (free at run time).
  Activations are loaded with a DMA whose runs are 32 elements long into a tile laid out so that
  one DVE `transpose32` (32x32 block transposes) finishes the transpose; ragged edges (sizes not
  multiples of 32) and tiles smaller than 32 use a transposing DMA (one run per element, cheap
  only because there are few elements). This keeps the PE free for matmuls.
Operands are cast to the compute dtype by the loading DMA (constants are stored pre-cast). int8
compute is not done here yet (that needs quantized operands and i32 PSUM): an "i8" compute dtype
runs these kernels in bf16.

Buffers: every SBUF/PSUM buffer a node needs is allocated once, up front, in pools that hand their
slots out round-robin; the emitter orders each reuse after the previous user, so loads of the next
tile overlap compute on the current one while long-lived tiles (resident weights) are never
overwritten by the ring allocator wrapping around.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP, MAX_FREE_DIMS
from device_model.numerics import HARDSIGMOID_ALPHA, HARDSIGMOID_BETA, cast
from device_model.timing import contiguous_runs

from ..emitter import SBUF_BLOCK
from ..errors import CompileError
from ..tiling import broadcast_strides, coalesce, row_major_strides
from . import kernel

BLOCK = 32  # transpose32 block size
STORE_COLS = 2048  # f32 columns of results gathered before one store

# ---- sizes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeLimits:
    k: int       # contraction rows (partitions)
    m: int       # stationary columns = output partitions
    n: int       # moving columns per matmul = f32 elements in one PSUM bank
    sbuf_budget: int  # bytes per partition one node may keep live (half the SBUF)
    psum_banks: int   # PSUM banks one node may use (half the PSUM)
    bank_bytes: int


def pe_limits(ctx) -> PeLimits:
    pe = ctx.arch.raw["pe"]
    bank = ctx.em.psum.align
    return PeLimits(k=min(pe["rows"], ctx.arch.partitions), m=min(pe["cols"], ctx.arch.partitions),
                    n=min(pe["max_n"], bank // 4), sbuf_budget=ctx.em.sbuf.size // 2,
                    psum_banks=max(1, (ctx.em.psum.size // 2) // bank), bank_bytes=bank)


def operand_dtype(ctx, node) -> str:
    """The PE input dtype for this node: the compute dtype, with int8 run as bf16 (see module doc)."""
    dt = ctx.compute_dtype(node)
    return "bf16" if dt == "i8" else dt


def device_cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """A compile-time constant converted exactly as the device's DMA would convert it."""
    return cast(np.asarray(array, dtype=np.float32), dtype)


# ---- buffers -------------------------------------------------------------------------------------


class Pool:
    """`count` buffers of `nbytes` per partition, allocated once, handed out round-robin. Sizes are
    rounded up to the emitter's hazard-tracking block so that two buffers never share a block
    (which would serialise their users)."""

    def __init__(self, allocator, nbytes: int, count: int):
        self.nbytes = padded(nbytes, SBUF_BLOCK)
        self.offsets = [allocator.alloc(self.nbytes) for _ in range(max(count, 1))]
        self._next = 0

    def take(self) -> int:
        off = self.offsets[self._next % len(self.offsets)]
        self._next += 1
        return off


def padded(nbytes: int, align: int = SBUF_BLOCK) -> int:
    return -(-max(nbytes, 1) // align) * align


def sbuf_ap(offset: int, partitions: int, free: int, dtype: str, pstart: int = 0) -> AP:
    return AP("sbuf", offset, ((1, free),), dtype, pstart, partitions)


def sub(ap: AP, partitions: int, elem_offset: int, dims, pstart: int = 0) -> AP:
    """A region of an SBUF/PSUM tile: partitions [pstart, pstart+partitions), free dims from an
    element offset."""
    return AP(ap.space, ap.offset + elem_offset * itemsize(ap.dtype), simplify(dims), ap.dtype,
              ap.pstart + pstart, partitions)


def simplify(pairs) -> tuple[tuple[int, int], ...]:
    """(stride, count) dims, outermost first, with count-1 dims dropped and neighbours that continue
    each other merged (the element order is unchanged)."""
    out: list[tuple[int, int]] = []
    for s, c in pairs:
        if c == 1:
            continue
        if out and out[-1][0] == s * c:
            out[-1] = (s, out[-1][1] * c)
        else:
            out.append((s, c))
    return tuple(out) or ((1, 1),)


def hbm(value, elem_offset: int, pairs, dtype: str | None = None) -> AP:
    dims = simplify(pairs)
    if len(dims) > MAX_FREE_DIMS:
        raise CompileError(f"internal: access pattern with {len(dims)} dims {dims} for {value.name}")
    return AP("hbm", value.offset + elem_offset * itemsize(value.dtype), dims, dtype or value.dtype)


def dims_fit(pairs) -> bool:
    return len(simplify(pairs)) <= MAX_FREE_DIMS


# ---- matrices in HBM -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mat:
    """A batch of matrices in HBM: element (g, r, c) is at element `off + g*sg + r*sr + c*sc` of
    `value` (a DeviceValue)."""

    value: object
    off: int
    sr: int
    sc: int
    sg: int = 0

    def t(self) -> "Mat":
        return replace(self, sr=self.sc, sc=self.sr)

    def shift(self, elems: int) -> "Mat":
        return replace(self, off=self.off + elems)

    def at(self, g: int = 0, r: int = 0, c: int = 0) -> "Mat":
        return replace(self, off=self.off + g * self.sg + r * self.sr + c * self.sc)

    def ap(self, rows: int, groups: int, cols: int, dtype: str | None = None) -> AP:
        """[rows, groups, cols] from (0, 0, 0), in that element order."""
        return hbm(self.value, self.off, ((self.sr, rows), (self.sg, groups), (self.sc, cols)), dtype)


def load_kmajor(ctx, mat: Mat, rows: int, cols: int, groups: int, tile: AP) -> None:
    """Fill `tile` ([rows partitions, groups*cols] SBUF) with mat[g, r, c] at partition r, free
    g*cols + c, converting to the tile's dtype in the DMA. Rows are the K (contraction) axis."""
    em = ctx.em
    if mat.sc == 1 or cols == 1 or mat.sr != 1:
        em.emit("dma", "dma_copy", {"dst": tile, "src": mat.ap(rows, groups, cols)})
        return
    # K is the contiguous axis: transpose on the way in
    whole = [(tile, mat.ap(rows, groups, cols))]
    plan = _block_transpose_plan(mat, rows, cols, groups, tile)
    if plan is None or _dma_cost(ctx, whole) <= _dma_cost(ctx, plan[0]):
        em.emit("dma", "dma_copy", {"dst": tile, "src": whole[0][1]})
        return
    dmas, square = plan
    for dst, src in dmas:
        em.emit("dma", "dma_copy", {"dst": dst, "src": src})
    em.emit("dve", "transpose32", {"dst": square, "src": square})


def _block_transpose_plan(mat: Mat, rows: int, cols: int, groups: int, tile: AP):
    """DMAs with 32-element runs that leave X[32a + c, (g, 32b + r)] = mat[g, 32a + r, 32b + c] in
    the tile, so that transpose32 of that square region gives the K-major layout; ragged edges
    (rows or columns beyond the last full block) come with one-run-per-element DMAs. Returns
    (dmas, square region) or None when there is no full 32x32 block."""
    kf, xf = rows // BLOCK * BLOCK, cols // BLOCK * BLOCK
    if kf == 0 or xf == 0:
        return None
    region = ((cols, groups), (1, xf))
    inner = ((mat.sc, BLOCK), (mat.sg, groups), (BLOCK * mat.sc, xf // BLOCK), (1, BLOCK))
    dmas = []
    if rows > kf:  # rows without a full block
        dmas.append((sub(tile, rows - kf, 0, ((cols, groups), (1, cols)), kf),
                     mat.at(r=kf).ap(rows - kf, groups, cols)))
    if cols > xf:  # columns without a full block
        dmas.append((sub(tile, kf, xf, ((cols, groups), (1, cols - xf))),
                     mat.at(c=xf).ap(kf, groups, cols - xf)))
    whole = ((BLOCK, kf // BLOCK),) + inner
    if dims_fit(whole):
        dmas.append((sub(tile, kf, 0, region), hbm(mat.value, mat.off, whole)))
    else:
        for a in range(kf // BLOCK):
            dmas.append((sub(tile, BLOCK, 0, region, a * BLOCK), hbm(mat.value, mat.off + a * BLOCK, inner)))
    return dmas, sub(tile, kf, 0, region)


def _dma_cost(ctx, dmas) -> float:
    """Cycles for DMAs that write one tile (the emitter serialises them: they share its blocks)."""
    dma = ctx.arch.raw["dma"]
    per_cycle = ctx.arch.raw["hbm"]["bandwidth_gbps"] / ctx.arch.clock_ghz
    total = 0.0
    for dst, src in dmas:
        runs = max(contiguous_runs(dst), contiguous_runs(src))
        nbytes = max(dst.nbytes, src.nbytes) + runs * dma["run_overhead_bytes"]
        total += dma["latency_cycles"] + nbytes / per_cycle
    return total


# ---- epilogue: bias, scale, activation -----------------------------------------------------------

ACT_FUNCS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish",
             "LeakyRelu": "leaky_relu"}


@dataclass
class Epilogue:
    """dst = act(src * scale + bias) where bias is a per-partition [P,1] AP (`row_bias`), a tile of
    the same shape as src (`tile_bias`) or a number (`const_bias`)."""

    scale: float = 1.0
    const_bias: float = 0.0
    act: dict | None = None
    mode: str = "exact"

    def emit(self, ctx, src: AP, dst: AP, row_bias: AP | None = None, tile_bias: AP | None = None) -> None:
        em = ctx.em
        cur = src
        if tile_bias is not None:
            if self.scale != 1.0:
                em.emit("dve", "tensor_scalar", {"dst": dst, "src": cur}, op0="mul", s0=self.scale)
                cur = dst
            em.emit("dve", "tensor_tensor", {"dst": dst, "a": cur, "b": tile_bias}, op="add")
            self._activation(ctx, dst, dst, 1.0, None, 0.0)
            return
        self._activation(ctx, cur, dst, self.scale, row_bias, self.const_bias)

    def _activation(self, ctx, src, dst, scale, row_bias, const_bias) -> None:
        em, act = ctx.em, self.act
        name = act["name"] if act else None
        func = _act_func(act)
        affine = []  # tensor_scalar stages for x*scale + bias
        if scale != 1.0:
            affine.append(("mul", scale, None))
        if row_bias is not None:
            affine.append(("add", None, row_bias))
        elif const_bias != 0.0:
            affine.append(("add", const_bias, None))
        if name is None or name == "Relu":
            stages = affine + ([("max", 0.0, None)] if name == "Relu" else [])
            if len(stages) <= 2:
                _tensor_scalar(em, src, dst, stages)
                return
        if func is not None:
            attrs = {"func": func, "mode": self.mode}
            if func == "leaky_relu":
                attrs["alpha"] = float(act.get("alpha", 0.01))
            operands = {"dst": dst, "src": src}
            if scale != 1.0:
                attrs["scale"] = float(scale)
            if row_bias is not None:
                operands["bias_ap"] = row_bias
            elif const_bias != 0.0:
                attrs["bias"] = float(const_bias)
            em.emit("act", "activate", operands, **attrs)
            return
        # DVE-only tails: Clip and HardSigmoid with non-default parameters
        if affine or src != dst:
            _tensor_scalar(em, src, dst, affine)
        if name == "Clip":
            clip = [(op, float(v), None) for op, v in (("max", act.get("min")), ("min", act.get("max")))
                    if v is not None]
            if clip:
                _tensor_scalar(em, dst, dst, clip)
        elif name == "HardSigmoid":
            _tensor_scalar(em, dst, dst, [("mul", float(act.get("alpha", HARDSIGMOID_ALPHA)), None),
                                          ("add", float(act.get("beta", HARDSIGMOID_BETA)), None)])
            _tensor_scalar(em, dst, dst, [("max", 0.0, None), ("min", 1.0, None)])
        else:
            raise CompileError(f"fused activation {name} is not supported by the matmul/conv epilogue")


def _act_func(act) -> str | None:
    """The ACT function computing `act` exactly, or None."""
    if not act:
        return "identity"
    name = act["name"]
    if name in ACT_FUNCS:
        return ACT_FUNCS[name]
    if name == "Gelu":
        return "gelu_tanh" if act.get("approximate", "none") == "tanh" else "gelu"
    if name == "HardSigmoid" and _same_f32(act.get("alpha", HARDSIGMOID_ALPHA), HARDSIGMOID_ALPHA) \
            and _same_f32(act.get("beta", HARDSIGMOID_BETA), HARDSIGMOID_BETA):
        return "hardsigmoid"  # the device's fixed parameters (ONNX attributes are float32)
    return None


def _same_f32(a, b) -> bool:
    return np.float32(a) == np.float32(b)


def _tensor_scalar(em, src, dst, stages) -> None:
    if not stages:
        em.emit("dve", "copy", {"dst": dst, "src": src})
        return
    attrs, operands = {}, {"dst": dst, "src": src}
    for i, (op, value, ap) in enumerate(stages):
        attrs[f"op{i}"] = op
        if ap is not None:
            operands[f"s{i}_ap"] = ap
        else:
            attrs[f"s{i}"] = float(value)
    em.emit("dve", "tensor_scalar", operands, **attrs)


def epilogue_for(ctx, node, scale: float = 1.0, const_bias: float = 0.0) -> Epilogue:
    return Epilogue(scale=scale, const_bias=const_bias, act=node.attrs.get("fused_activation"),
                    mode=ctx.act_mode(node))


# ---- the tiled GEMM ------------------------------------------------------------------------------


@dataclass
class GemmProblem:
    """out[g] = epilogue(a[g] @ b[g]) for each group of a batch.

    `ka`: A as a K-major matrix (rows K, cols M); `kb`: B (rows K, cols N); `out` rows M, cols N.
    `batches`: (a offset, b offset, out offset, bias offset, G) per batch group; inside a group
    the G matrices are `sg` apart in each Mat. `bias`: a Mat over [M, N] (strides may be 0) or None.
    """

    ka: Mat
    kb: Mat
    out: Mat
    m: int
    n: int
    k: int
    batches: list
    bias: Mat | None = None
    epilogue: Epilogue | None = None


def run_gemm(ctx, node, p: GemmProblem, dtype: str) -> None:
    lim = pe_limits(ctx)
    em = ctx.em
    isz = itemsize(dtype)
    gmax = max(b[4] for b in p.batches)
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
    a_pool = Pool(em.sbuf, a_tile, 2 * nk if a_resident else 3)
    b_pool = Pool(em.sbuf, b_full if b_resident else padded(gmax * nt_max * isz), 2 * nk if b_resident else 3)
    out_pool = Pool(em.sbuf, out_bytes, 3)
    # a bias that varies only along N is loaded once per N tile (broadcast over partitions)
    cached_bias = bias_kind == "tile" and p.bias.sr == 0 and p.bias.sg == 0 and \
        len(n_tiles) * bias_bytes <= budget - fixed - a_bytes - b_bytes + 2 * bias_bytes
    bias_pool = Pool(em.sbuf, bias_bytes, len(n_tiles) if cached_bias else 2) if bias_kind else None
    bias_cache = {}
    psum_pool = Pool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))

    def load(mat, extra, k0, kt, x0, xt, g, pool):
        tile = sbuf_ap(pool.take(), kt, g * xt, dtype)
        load_kmajor(ctx, mat.shift(extra).at(r=k0, c=x0), kt, xt, g, tile)
        return tile

    work = [(bi, m0, mt) for bi in range(len(p.batches)) for m0, mt in m_tiles]

    def resident_tiles(step):
        """Loads of the resident operands of work item `step`: B when its batch group starts, A."""
        bi, m0, mt = work[step]
        a_off, b_off, _, _, g = p.batches[bi]
        b_tiles = None
        if b_resident and (step == 0 or work[step - 1][0] != bi):
            b_tiles = [load(p.kb, b_off, k0, kt, 0, p.n, g, b_pool) for k0, kt in k_tiles]
        a_tiles = [load(p.ka, a_off, k0, kt, m0, mt, g, a_pool) for k0, kt in k_tiles] if a_resident else None
        return b_tiles, a_tiles

    # the next item's loads are emitted before this item's compute (engines run in order)
    upcoming = resident_tiles(0)
    for step, (bi, m0, mt) in enumerate(work):
        a_off, b_off, o_off, c_off, g = p.batches[bi]
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


def _const_mat(ctx, hint: str, array: np.ndarray, dtype: str):
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


def _batch_groups(out_batch, strides, group_size):
    """(a, b, out, bias offsets, group size) for every group of consecutive matrices along the
    innermost (coalesced) batch dim, and the per-operand strides inside a group; `strides` = per
    operand (a, b, out, bias) element strides per batch dim; `group_size(count)` picks the size."""
    shape, strides = coalesce(tuple(out_batch), [tuple(s) for s in strides])
    if not shape:
        return [(0, 0, 0, 0, 1)], (0, 0, 0, 0)
    outer, inner = shape[:-1], shape[-1]
    g = group_size(inner)
    inner_strides = tuple(s[-1] for s in strides)
    groups = []
    for idx in np.ndindex(*outer):
        base = [sum(i * s for i, s in zip(idx, st[:-1])) for st in strides]
        for j0 in range(0, inner, g):
            groups.append(tuple(b + j0 * s for b, s in zip(base, inner_strides)) + (min(g, inner - j0),))
    return groups, inner_strides


def _matrix_bias(ctx, name: str, m: int, n: int, batch_rank: int, beta: float = 1.0):
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
def matmul(ctx, node) -> None:
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
        batches = [(0, 0, 0, 0, 1)]
        m_run = m_eff
    else:
        def group_size(count):
            return _group_size(lim, m, n, k, count, itemsize(dtype))

        batches, inner = _batch_groups(out_batch, [sa, sb, so, bias_strides], group_size)
        ka, kb, outm = replace(ka, sg=inner[0]), replace(kb, sg=inner[1]), replace(outm, sg=inner[2])
        if bias is not None:
            bias = replace(bias, sg=inner[3])
        m_run = m
    epilogue = epilogue_for(ctx, node, const_bias=const_bias)
    run_gemm(ctx, node, GemmProblem(ka, kb, outm, m_run, n, k, batches, bias, epilogue), dtype)


@kernel("Gemm")
def gemm(ctx, node) -> None:
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
    problem = GemmProblem(ka, kb, Mat(out, 0, n, 1), m, n, k, [(0, 0, 0, 0, 1)], bias,
                          epilogue_for(ctx, node, scale=scale, const_bias=const_bias))
    run_gemm(ctx, node, problem, dtype)


def _scaled_runtime_bias(ctx, node, bias: Mat, m: int, n: int, beta: float) -> Mat:
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
            em.emit("dma", "dma_copy", {"dst": hbm(scaled, m0 * n + n0, ((n, mt), (1, nt))), "src": tile})
    return Mat(scaled, 0, n, 1)
