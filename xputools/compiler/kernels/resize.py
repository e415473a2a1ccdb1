"""Resize: nearest as strided DMA copies (an integer upscale is a stride-0 repeat, staged through
SBUF so the stores stay contiguous); linear on NCHW as two PE matmuls per group of images with
constant interpolation matrices: Y1ᵀ = Xᵀ·Whᵀ (rows), then out = Y1·Wwᵀ (columns).

Coordinates and weights follow ONNX Runtime's float32 arithmetic exactly, so nearest picks the
same pixels (ties included) and linear uses the same weights."""
from __future__ import annotations

import itertools

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..emitter import SBUF_BLOCK
from ..errors import CompileError
from ..graph import Node
from .lib.ap import hbm_ap, new_tile
from .lib.datamove import copy_region, progressions
from .lib.dims import count_stride_dims, row_major_strides
from .lib.pools import SlotPool
from .lib.registry import kernel

F32 = np.float32
LINEAR_DTYPES = ("f32", "bf16", "f16")


def _attr(node: Node, name: str, default: str) -> str:
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def resize_scales(ctx: LoweringContext, node: Node, in_shape: tuple[int, ...],
                  out_shape: tuple[int, ...]) -> list[np.float32]:
    """Per-axis float32 scale as ORT uses it: the given scales, or out/in when sizes are given."""
    rank = len(in_shape)
    axes = node.attrs.get("axes")
    axes = [a + rank if a < 0 else a for a in axes] if axes else list(range(rank))
    scales = [F32(1.0)] * rank
    given = ctx.const(node.input(2)) if node.input(2) else None
    if given is not None and np.size(given):
        for a, s in zip(axes, np.asarray(given, dtype=F32).reshape(-1)):
            scales[a] = F32(s)
        return scales
    if node.input(3) and ctx.const(node.input(3)) is None:
        raise CompileError(f"{node.name}: Resize sizes must be a constant on the device")
    if node.input(2) and given is None:
        raise CompileError(f"{node.name}: Resize scales must be a constant on the device")
    for a in range(rank):
        scales[a] = F32(out_shape[a]) / F32(in_shape[a])
    return scales


def original_coords(coord_mode: str, in_len: int, out_len: int, scale: np.float32) -> np.ndarray:
    """x_original for every output index, in float32 like ORT's get_original_coordinate."""
    x = np.arange(out_len, dtype=F32)
    half = F32(0.5)
    if coord_mode == "asymmetric":
        return x / scale
    if coord_mode == "half_pixel":
        return (x + half) / scale - half
    if coord_mode == "pytorch_half_pixel":
        return (x + half) / scale - half if out_len > 1 else np.zeros(out_len, F32)
    if coord_mode == "align_corners":
        if out_len == 1:
            return np.zeros(out_len, F32)
        return x * F32(in_len - 1) / F32(out_len - 1)
    raise CompileError(f"Resize coordinate_transformation_mode {coord_mode!r} is not supported on the device")


def nearest_map(coord_mode: str, nearest_mode: str, in_len: int, out_len: int, scale: np.float32) -> list[int]:
    x = original_coords(coord_mode, in_len, out_len, scale).astype(np.float64)  # exact widening
    if nearest_mode == "round_prefer_floor":
        tie = x == np.trunc(x) + 0.5
        idx = np.where(tie, np.floor(x), np.sign(x) * np.floor(np.abs(x) + 0.5))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.sign(x) * np.floor(np.abs(x) + 0.5)  # std::round: half away from zero
    elif nearest_mode == "floor":
        idx = np.floor(x)
    elif nearest_mode == "ceil":
        idx = np.ceil(x)
    else:
        raise CompileError(f"Resize nearest_mode {nearest_mode!r} is not supported on the device")
    return [int(v) for v in np.clip(idx, 0, in_len - 1)]


def linear_matrix(coord_mode: str, in_len: int, out_len: int, scale: np.float32) -> np.ndarray:
    """W[out, in]: out = W @ in along one axis, with ORT's bilinear weights."""
    x = np.clip(original_coords(coord_mode, in_len, out_len, scale), F32(0), F32(in_len - 1))
    x1 = np.minimum(x.astype(np.int64), in_len - 1)
    x2 = np.minimum(x1 + 1, in_len - 1)
    d1 = np.abs(x - x1.astype(F32))
    d2 = np.abs(x - x2.astype(F32))
    same = x1 == x2
    d1[same], d2[same] = F32(0.5), F32(0.5)
    w = np.zeros((out_len, in_len), F32)
    rows = np.arange(out_len)
    np.add.at(w, (rows, x1), d2)
    np.add.at(w, (rows, x2), d1)
    return w


def axis_pieces(m: list[int]) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """An index map as few pieces as possible: (out start, in start, dims of (count, out step,
    in step)). A repeat-f / step-s map is one piece of two dims (the repeat has input step 0)."""
    n = len(m)
    f = 1
    while f < n and m[f] == m[0]:
        f += 1
    s = m[f] - m[0] if f < n else 0
    if s >= 0 and all(m[o] == m[0] + (o // f) * s for o in range(n)):
        pieces = [(0, m[0], [(n // f, f, s), (f, 1, 0)])] if n // f else []
        if n % f:
            pieces.append((n - n % f, m[0] + (n // f) * s, [(n % f, 1, 0)]))
        return pieces
    for period in range(2, min(16, n // 2) + 1):
        step = m[period] - m[0]
        if step >= 0 and all(m[o + period] == m[o] + step for o in range(n - period)):
            return [(r, m[r], [(len(range(r, n, period)), period, step)]) for r in range(period)]
    return [(pos, first, [(count, 1, step)]) for pos, count, first, step in progressions(m)]


@kernel("Resize")
def resize(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if out.size == 0:
        return
    mode = _attr(node, "mode", "nearest")
    coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
    scales = resize_scales(ctx, node, x.shape, out.shape)
    if mode == "nearest":
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        maps = [nearest_map(coord, nearest, x.shape[a], out.shape[a], scales[a]) for a in range(len(x.shape))]
        _copy_maps(ctx, x, out, maps)
    elif mode == "linear":
        if len(x.shape) != 4 or tuple(x.shape[:2]) != tuple(out.shape[:2]):
            raise CompileError(f"{node.name}: linear Resize runs on the device for NCHW over H and W only")
        wh = linear_matrix(coord, x.shape[2], out.shape[2], scales[2])
        ww = linear_matrix(coord, x.shape[3], out.shape[3], scales[3])
        _LinearResize(ctx, node, x, out, wh, ww).emit()
    else:
        raise CompileError(f"{node.name}: Resize mode {mode!r} is not supported on the device")


def _copy_maps(ctx: LoweringContext, x: DeviceValue, out: DeviceValue, maps: list[list[int]]) -> None:
    xs, os_ = row_major_strides(x.shape), row_major_strides(out.shape)
    per_axis = [axis_pieces(m) for m in maps]
    for cell in itertools.product(*per_axis):
        dst_off = sum(p[0] * s for p, s in zip(cell, os_))
        src_off = sum(p[1] * s for p, s in zip(cell, xs))
        dims = [(c, o * s, i * t) for p, s, t in zip(cell, os_, xs) for c, o, i in p[2]]
        copy_region(ctx, out, dst_off, x, src_off, dims)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(size, n - i)) for i in range(0, n, size)]


class _LinearResize:
    """Per group of g images (g·W <= 128 partitions, g·Wo <= 512 columns), per chunk of <= 128
    output rows ho:
    step 1 (contract H):  Y1ᵀ[(g,w), ho] = Σ_h X[h, (g,w)] · Whᵀ[h, ho]    (stat = X, mov = Whᵀ)
    step 2 (contract W):  out[ho, (g,wo)] = Σ_(g,w) Y1ᵀ[(g,w), ho] · BD[(g,w), (g,wo)]
    with BD the block-diagonal of g copies of Wwᵀ. Wide images (W > 128 or Wo > 512) take g = 1 and
    accumulate over W chunks; tall ones accumulate step 1 over H chunks. Every tile lives for one
    chunk only, except the matrices when they are small: those stay in SBUF, reloaded before the
    ring allocator can come back to them."""

    RESIDENT_BYTES = 16 * 1024  # per partition: matrices up to this size stay in SBUF

    def __init__(self, ctx: LoweringContext, node: Node, x: DeviceValue, out: DeviceValue, wh: np.ndarray,
                 ww: np.ndarray):
        self.ctx, self.x, self.out = ctx, x, out
        cd = ctx.compute_dtype(node)
        self.cd = cd if cd in LINEAR_DTYPES else "bf16"
        self.isz = itemsize(self.cd)
        n, c, self.H, self.W = x.shape
        self.Ho, self.Wo = out.shape[2], out.shape[3]
        self.images = n * c
        pe = ctx.arch.raw["pe"]
        self.kmax = min(pe["rows"], ctx.arch.partitions)
        self.mmax, self.nmax = pe["cols"], pe["max_n"]
        if self.W <= self.kmax and self.Wo <= self.nmax:
            self.g = max(1, min(self.images, self.kmax // self.W, self.nmax // self.Wo))
            self.wk, self.wok = [(0, self.W)], [(0, self.Wo)]
        else:
            self.g = 1
            self.wk, self.wok = _chunks(self.W, self.kmax), _chunks(self.Wo, self.nmax)
        self.hk = _chunks(self.H, self.kmax)
        self.hom = _chunks(self.Ho, self.mmax)
        g = self.g
        bd = np.zeros((g * self.W, g * self.Wo), F32)
        for i in range(g):
            bd[i * self.W:(i + 1) * self.W, i * self.Wo:(i + 1) * self.Wo] = ww.T
        self.cols = g * self.Wo  # row length of the column matrix
        self.whT = ctx.new_const("resize_rows", np.ascontiguousarray(wh.T))
        self.bd = ctx.new_const("resize_cols", bd)
        # every tile comes from memory taken once: the ring allocator never wraps onto live data
        self.resident = None
        if (len(self.hk) * self.Ho + len(self.wk) * self.cols) * self.isz <= self.RESIDENT_BYTES:
            self.resident = {}
            for r0, rc in self.hk:
                t = new_tile(ctx, rc, self.Ho, self.cd)
                self.resident[("h", r0)] = self._load(t, self.whT, r0, rc, self.Ho, 0, self.Ho)
            for r0, rc in _chunks(g * self.W, self.kmax):
                t = new_tile(ctx, rc, self.cols, self.cd)
                self.resident[("w", r0)] = self._load(t, self.bd, r0, rc, self.cols, 0, self.cols)
        y1_bytes = 2 * len(self.wk) * -(-self.mmax * self.isz // SBUF_BLOCK) * SBUF_BLOCK
        if y1_bytes > ctx.arch.sbuf_bytes // 4:
            raise CompileError(f"{node.name}: linear Resize of width {self.W} needs {y1_bytes} bytes of SBUF "
                               "per partition for partial results; too wide for the device")
        # X and matrix tiles (<= 512 columns), one matmul each; one row chunk's Y1ᵀ, double-buffered
        self.loads = SlotPool.block(ctx, 16, max(self.mmax, self.nmax, self.kmax) * self.isz)
        self.y1 = SlotPool.block(ctx, 2 * len(self.wk), self.mmax * self.isz)

    def _load(self, tile: AP, matrix: DeviceValue, row0: int, rows: int, row_len: int, col0: int, cols: int) -> AP:
        src = hbm_ap(matrix, row0 * row_len + col0, count_stride_dims([(rows, row_len), (cols, 1)]))
        self.ctx.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
        return tile

    def _matrix(self, which: str, row0: int, rows: int, col0: int, cols: int) -> AP:
        """Rows [row0, row0+rows) x columns [col0, col0+cols) of Whᵀ ("h") or BD ("w")."""
        matrix, row_len, chunks = (self.whT, self.Ho, self.hk) if which == "h" else \
            (self.bd, self.cols, _chunks(self.g * self.W, self.kmax))
        if self.resident is None:
            return self._load(self.loads.tile(rows, cols, self.cd), matrix, row0, rows, row_len, col0, cols)
        base = next(r0 for r0, rc in chunks if r0 <= row0 < r0 + rc)
        t = self.resident[(which, base)]
        return AP("sbuf", t.offset + col0 * self.isz, ((1, cols),), self.cd, row0 - base, rows)

    def emit(self) -> None:
        em, H, W, Ho, Wo = self.ctx.em, self.H, self.W, self.Ho, self.Wo
        for img0 in range(0, self.images, self.g):
            gn = min(self.g, self.images - img0)
            for ho0, hoc in self.hom:
                y1 = {}
                for w0, wc in self.wk:
                    m = gn * wc
                    ps = em.psum.alloc(hoc * 4)
                    dst = AP("psum", ps, ((1, hoc),), "f32", 0, m)
                    for i, (h0, hc) in enumerate(self.hk):
                        xt = self.loads.tile(hc, m, self.cd)  # X[h, (g, w)]: rows on partitions
                        em.emit("dma", "dma_copy", {"dst": xt, "src": hbm_ap(
                            self.x, img0 * H * W + h0 * W + w0, count_stride_dims([(hc, W), (gn, H * W), (wc, 1)]))})
                        mov = self._matrix("h", h0, hc, ho0, hoc)
                        em.emit("pe", "matmul", {"dst": dst, "stat": xt, "mov": mov}, start=int(i == 0))
                    y1[w0] = self.y1.tile(m, hoc, self.cd)
                    em.emit("act", "copy", {"dst": y1[w0], "src": dst})
                for wo0, woc in self.wok:
                    n_cols = gn * woc
                    ps = em.psum.alloc(n_cols * 4)
                    dst = AP("psum", ps, ((1, n_cols),), "f32", 0, hoc)
                    for i, (w0, wc) in enumerate(self.wk):
                        mov = self._matrix("w", w0, gn * wc, wo0, n_cols)
                        em.emit("pe", "matmul", {"dst": dst, "stat": y1[w0], "mov": mov}, start=int(i == 0))
                    em.emit("dma", "dma_copy", {
                        "dst": hbm_ap(self.out, img0 * Ho * Wo + ho0 * Wo + wo0,
                                      count_stride_dims([(hoc, Wo), (gn, Ho * Wo), (woc, 1)])),
                        "src": dst})
