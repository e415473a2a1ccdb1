"""The PE's operands: its size limits, the dtype it multiplies in, and K-major matrix loads.

The PE computes psum[M, N] = stat[K, M]^T @ mov[K, N] with K on partitions, so both operands must
have K on partitions:
- B [K, N] (row-major) already has it: one contiguous run per partition;
- A [M, K] has K innermost. Constant operands are rearranged at compile time (free at run time).
  Activations are loaded with a DMA whose runs are 32 elements long into a tile laid out so that
  one DVE `transpose32` (32x32 block transposes) finishes the transpose; ragged edges (sizes not
  multiples of 32) and tiles smaller than 32 use a transposing DMA (one run per element, cheap
  only because there are few elements). This keeps the PE free for matmuls.
Operands are cast to the compute dtype by the loading DMA (constants are stored pre-cast). An "i8"
compute dtype runs the float kernels in bf16 (int8 kernels quantize their operands themselves).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from device_model.isa import AP
from device_model.numerics import cast
from device_model.timing import contiguous_runs

from ...context import DeviceValue, LoweringContext
from ...emitter import Emitter
from ...graph import Node
from .ap import dims_fit, hbm_pattern, new_tile, sub

BLOCK = 32  # transpose32 block size


@dataclass(frozen=True)
class PeLimits:
    k: int       # contraction rows (partitions)
    m: int       # stationary columns = output partitions
    n: int       # moving columns per matmul = f32 elements in one PSUM bank
    sbuf_budget: int  # bytes per partition one node may keep live (half the SBUF)
    psum_banks: int   # PSUM banks one node may use (half the PSUM)
    bank_bytes: int


def pe_limits(ctx: LoweringContext) -> PeLimits:
    """The PE's sizes and the share of SBUF/PSUM one node may use, from the arch."""
    pe = ctx.arch.raw["pe"]
    bank = ctx.em.psum.align
    return PeLimits(k=min(pe["rows"], ctx.arch.partitions), m=min(pe["cols"], ctx.arch.partitions),
                    n=min(pe["max_n"], bank // 4), sbuf_budget=ctx.em.sbuf.size // 2,
                    psum_banks=max(1, (ctx.em.psum.size // 2) // bank), bank_bytes=bank)


def operand_dtype(ctx: LoweringContext, node: Node) -> str:
    """The PE input dtype for this node: the compute dtype, with int8 run as bf16 (see module doc)."""
    dt = ctx.compute_dtype(node)
    return "bf16" if dt == "i8" else dt


def device_cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """A compile-time constant converted exactly as the device's DMA would convert it."""
    return cast(np.asarray(array, dtype=np.float32), dtype)


@dataclass(frozen=True)
class Mat:
    """A batch of matrices in HBM: element (g, r, c) is at element `off + g*sg + r*sr + c*sc` of
    `value` (a DeviceValue)."""

    value: DeviceValue
    off: int
    sr: int
    sc: int
    sg: int = 0

    def t(self) -> "Mat":
        """The transposed matrices."""
        return replace(self, sr=self.sc, sc=self.sr)

    def shift(self, elems: int) -> "Mat":
        """The same matrices `elems` elements further on."""
        return replace(self, off=self.off + elems)

    def at(self, g: int = 0, r: int = 0, c: int = 0) -> "Mat":
        """The matrices starting at element (g, r, c)."""
        return replace(self, off=self.off + g * self.sg + r * self.sr + c * self.sc)

    def ap(self, rows: int, groups: int, cols: int, dtype: str | None = None) -> AP:
        """[rows, groups, cols] from (0, 0, 0), in that element order."""
        return hbm_pattern(self.value, self.off, ((self.sr, rows), (self.sg, groups), (self.sc, cols)), dtype)


def accumulate(em: Emitter, acc: AP, steps: list[tuple[AP, AP]]) -> None:
    """PE matmuls summing stat^T @ mov over `steps` into the PSUM tile `acc` (the first starts it)."""
    for idx, (stat, mov) in enumerate(steps):
        em.emit("pe", "matmul", {"dst": acc, "stat": stat, "mov": mov}, start=1 if idx == 0 else 0)


def load_kmajor(ctx: LoweringContext, mat: Mat, rows: int, cols: int, groups: int, tile: AP) -> None:
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
    _ragged_columns_by_block(ctx, mat, rows, cols, groups, tile)


def _ragged_columns_by_block(ctx: LoweringContext, mat: Mat, rows: int, cols: int, groups: int, tile: AP) -> None:
    """The columns beyond the last full block, rows [0, kf): the last 32 columns (overlapping the
    previous block) are loaded with 32-row runs into a scratch tile, block-transposed there and the
    ragged ones copied into place, instead of one DMA run per element: a 112-row batch then costs no
    more than a 128-row one. (Transposing in place over the overlap would chain the DMA behind the
    first transpose.)"""
    kf, xf = rows // BLOCK * BLOCK, cols // BLOCK * BLOCK
    if cols == xf or xf == 0 or kf == 0:
        return
    em, ragged = ctx.em, cols - xf
    scratch = new_tile(ctx, kf, groups * BLOCK, tile.dtype, tile.pstart)
    square = sub(scratch, kf, 0, ((BLOCK, groups), (1, BLOCK)))
    last = mat.at(c=cols - BLOCK)
    inner = ((mat.sc, BLOCK), (mat.sg, groups), (1, BLOCK))
    whole = ((BLOCK, kf // BLOCK),) + inner
    if dims_fit(whole):
        em.emit("dma", "dma_copy", {"dst": square, "src": hbm_pattern(mat.value, last.off, whole)})
    else:
        for a in range(kf // BLOCK):
            em.emit("dma", "dma_copy", {"dst": sub(scratch, BLOCK, 0, ((BLOCK, groups), (1, BLOCK)), a * BLOCK),
                                        "src": hbm_pattern(mat.value, last.off + a * BLOCK, inner)})
    em.emit("dve", "transpose32", {"dst": square, "src": square})
    em.emit("dve", "copy", {"dst": sub(tile, kf, xf, ((cols, groups), (1, ragged))),
                            "src": sub(scratch, kf, BLOCK - ragged, ((BLOCK, groups), (1, ragged)))})


def _block_transpose_plan(mat: Mat, rows: int, cols: int, groups: int,
                          tile: AP) -> tuple[list[tuple[AP, AP]], AP] | None:
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
    # columns without a full block: `_ragged_columns_by_block`, after the square's transpose
    whole = ((BLOCK, kf // BLOCK),) + inner
    if dims_fit(whole):
        dmas.append((sub(tile, kf, 0, region), hbm_pattern(mat.value, mat.off, whole)))
    else:
        for a in range(kf // BLOCK):
            dmas.append((sub(tile, BLOCK, 0, region, a * BLOCK), hbm_pattern(mat.value, mat.off + a * BLOCK, inner)))
    return dmas, sub(tile, kf, 0, region)


def _dma_cost(ctx: LoweringContext, dmas: list[tuple[AP, AP]]) -> float:
    """Cycles for DMAs that write one tile (the emitter serialises them: they share its blocks)."""
    dma = ctx.arch.raw["dma"]
    per_cycle = ctx.arch.raw["hbm"]["bandwidth_gbps"] / ctx.arch.clock_ghz
    total = 0.0
    for dst, src in dmas:
        runs = max(contiguous_runs(dst), contiguous_runs(src))
        nbytes = max(dst.nbytes, src.nbytes) + runs * dma["run_overhead_bytes"]
        total += dma["latency_cycles"] + nbytes / per_cycle
    return total
