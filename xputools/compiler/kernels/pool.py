"""MaxPool and AveragePool (1-D and 2-D), GlobalAveragePool and GlobalMaxPool.

Images (N*C) on partitions, a band of rows on the free axis; when the images are fewer than the
partitions, several bands of each image sit side by side on the partitions. A band is copied into
an SBUF tile whose border (padding, and windows running past the end in ceil_mode) is set to -inf
(max) or 0 (average); all windows are then one strided access pattern [out rows, out cols, kh, kw]
over that tile, so a single DVE `reduce` pools the band (or two, separably along W then H, when
cheaper). AveragePool divides by a per-position count known at compile time. A 1-D pool runs along
the row axis (W = 1). MaxPool of int8/uint8 is exact in the f32 datapath.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..emitter import Emitter
from ..errors import CompileError
from ..graph import Graph, Node
from .lib.ap import hbm_ap
from .lib.dims import ap_dims
from .lib.pools import RingTiles
from .lib.registry import kernel
from .lib.rows import BUDGET, canonical_dims, reduce_into, row_tiles


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a pool: input size, output size, kernel, stride, dilation, pads."""

    size: int
    out: int
    k: int
    s: int
    d: int
    begin: int
    end: int

    @property
    def span(self) -> int:
        return (self.k - 1) * self.d + 1

    def needed(self, o0: int, o1: int) -> tuple[int, int]:
        """[first, last+1) input coordinates (padding included) read by outputs o0..o1-1."""
        return o0 * self.s - self.begin, (o1 - 1) * self.s - self.begin + self.span

    def counts(self, include_pad: bool) -> np.ndarray:
        """Per output position, how many window taps count for the average: taps inside the
        input, or inside the padded input when `include_pad` (never taps past the end padding)."""
        lo, hi = (-self.begin, self.size + self.end) if include_pad else (0, self.size)
        taps = np.arange(self.out)[:, None] * self.s - self.begin + np.arange(self.k)[None, :] * self.d
        return ((taps >= lo) & (taps < hi)).sum(axis=1)


def pool_axes(node: Node, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> tuple[Axis, Axis]:
    """(rows axis, cols axis) of the pool; a 1-D pool has a trivial cols axis."""
    spatial = len(x_shape) - 2
    if spatial not in (1, 2):
        raise CompileError(f"{node.name}: {node.op_type} {spatial}-D is not supported (1-D and 2-D)")
    ks = [int(k) for k in node.attrs.get("kernel_shape", [])]
    if len(ks) != spatial:
        raise CompileError(f"{node.name}: {node.op_type} kernel_shape {ks} does not match {spatial} "
                           "spatial dims")
    strides = [int(s) for s in node.attrs.get("strides", [1] * spatial)]
    dil = [int(d) for d in node.attrs.get("dilations", [1] * spatial)]
    ins, outs = list(x_shape[2:]), list(y_shape[2:])
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(spatial):
            total = max(0, (outs[i] - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 - ins[i])
            small = total // 2
            b = small if auto == "SAME_UPPER" else total - small
            pads_b.append(b)
            pads_e.append(total - b)
    elif auto == "VALID":
        pads_b = pads_e = [0] * spatial
    else:
        pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * spatial)]
        pads_b, pads_e = pads[:spatial], pads[spatial:]
    axes = [Axis(ins[i], outs[i], ks[i], strides[i], dil[i], pads_b[i], pads_e[i]) for i in range(spatial)]
    if spatial == 1:
        axes.append(Axis(1, 1, 1, 1, 1, 0, 0))
    return axes[0], axes[1]


def band_rows(rows: Axis, cols: Axis, budget: int = BUDGET) -> int:
    """Output rows per band so the band's padded input tile fits `budget` elements (0: none fits)."""
    width = (cols.out - 1) * cols.s + cols.span
    if rows.span * width > budget:
        return 0
    return max(1, min(rows.out, (budget // width - rows.span) // rows.s + 1))


def pool_problem(node: Node, graph: Graph) -> str | None:
    """Why the device cannot run this MaxPool/AveragePool node (support rule), or None."""
    x, y = graph.values[node.input(0)].shape, graph.values[node.outputs[0]].shape
    try:
        rows, cols = pool_axes(node, x, y)
    except CompileError as exc:
        return str(exc).split(": ", 1)[-1]
    if not band_rows(rows, cols):
        return (f"{node.op_type} windows spanning {rows.span} rows of {cols.size} elements do not fit "
                "an SBUF tile")
    if node.op_type == "AveragePool":
        include = bool(node.attrs.get("count_include_pad", 0))
        if not (rows.counts(include).all() and cols.counts(include).all()):
            return "AveragePool output windows that hold no input element (ceil_mode past the padding)"
    return None


PIPELINE = 4      # passes wanted over a large pool
MIN_TILE = 2048   # elements per partition worth a pass


@dataclass(frozen=True)
class Work:
    """One pass of the pooling instructions: bands of `rows_out` output rows starting at
    `band_starts`, for images i0..i0+images-1; partition g*images + i holds band g of image i0+i."""

    band_starts: tuple[int, ...]
    rows_out: int
    i0: int
    images: int

    @property
    def partitions(self) -> int:
        return len(self.band_starts) * self.images


def pool_work(rows: Axis, cols: Axis, images: int, partitions: int) -> list[Work]:
    """Bands of output rows and which partitions they go to. When the images fill few partitions,
    an image is cut into several bands side by side on the partitions, so all of them work; a
    large pool is cut into a few passes so loads overlap compute."""
    # a pass holds the band, its output and (separable / average) as much again: half a tile each
    cap = band_rows(rows, cols, BUDGET // 2) or band_rows(rows, cols)
    width = (cols.out - 1) * cols.s + cols.span
    image_tiles = -(-images // partitions)
    spread = partitions // images if images < partitions else 1
    passes = max(1, -(-PIPELINE // image_tiles))
    floor = max(1, -(-(-(-MIN_TILE // width) - rows.span) // rows.s) + 1)  # rows worth a pass
    per_band = min(cap, -(-rows.out // spread), max(-(-rows.out // (spread * passes)), floor))
    bands = -(-rows.out // per_band)
    bands = -(-bands // min(spread, bands)) * min(spread, bands)  # whole groups of bands
    per_band = -(-rows.out // bands)
    work = []
    for i0 in range(0, images, partitions):
        n = min(partitions, images - i0)
        group = max(1, partitions // n)
        full = rows.out // per_band
        starts = [b * per_band for b in range(full)]
        for g0 in range(0, full, group):
            work.append(Work(tuple(starts[g0:g0 + group]), per_band, i0, n))
        if rows.out % per_band:
            work.append(Work((full * per_band,), rows.out % per_band, i0, n))
    return work


@kernel("MaxPool", "AveragePool")
def pool(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    y = ctx.output(node.outputs[0])
    rows, cols = pool_axes(node, x.shape, y.shape)
    if y.size == 0:
        return
    is_max = node.op_type == "MaxPool"
    if not band_rows(rows, cols):
        raise CompileError(f"{node.name}: {node.op_type} window rows of {rows.span} x "
                           f"{(cols.out - 1) * cols.s + cols.span} elements do not fit an SBUF tile")
    count = None
    if not is_max:
        include = bool(node.attrs.get("count_include_pad", 0))
        counts = np.outer(rows.counts(include), cols.counts(include)).astype(np.float32)
        if np.any(counts == 0):
            raise CompileError(f"{node.name}: AveragePool has a window without any counted element")
        uniform = np.all(counts == counts.flat[0])
        count = float(counts.flat[0]) if uniform else ctx.new_const("count", counts.reshape(-1))
    em = ctx.em
    tiles = row_tiles(ctx)
    width = (cols.out - 1) * cols.s + cols.span
    out_plane = rows.out * cols.out
    for w in pool_work(rows, cols, x.shape[0] * x.shape[1], ctx.arch.partitions):
        height = (w.rows_out - 1) * rows.s + rows.span
        band = tiles.new(w.partitions, height * width)
        _load_bands(em, tiles, x, band, w, rows, cols, width, -math.inf if is_max else 0.0)
        out = _pool_band(em, tiles, band, rows, cols, w.rows_out, width, "max" if is_max else "sum")
        size = w.rows_out * cols.out
        if isinstance(count, float):
            em.emit("dve", "tensor_scalar", {"dst": out, "src": out}, op0="div", s0=count)
        elif count is not None:  # counts per output position, for each band
            div = tiles.new(w.partitions, size)
            src = ((size, len(w.band_starts)), (0, w.images), (1, size))
            em.emit("dma", "dma_copy", {"dst": div, "src": hbm_ap(count, w.band_starts[0] * cols.out, src)})
            em.emit("dve", "tensor_tensor", {"dst": out, "a": out, "b": div}, op="div")
        dst = ap_dims([(size, len(w.band_starts)), (out_plane, w.images), (1, size)])
        em.emit("dma", "dma_copy", {"dst": hbm_ap(y, w.i0 * out_plane + w.band_starts[0] * cols.out, dst),
                                    "src": out})


def _load_bands(em: Emitter, tiles: RingTiles, x: DeviceValue, band: AP, w: Work, rows: Axis, cols: Axis, width: int,
                pad: float) -> None:
    """Copy each band's input rows into its partitions of `band` ([height, width] per partition)
    and set the padding around them to `pad`. Bands with the same padding share instructions."""
    height = (w.rows_out - 1) * rows.s + rows.span
    in_plane = rows.size * cols.size
    c1 = min(width - cols.begin, cols.size)  # input cols present
    if cols.begin > 0 or c1 < width - cols.begin:
        right = width - cols.begin - c1
        _memset(em, band, 0, w.partitions, 0, [(width, height), (1, cols.begin)], pad)
        _memset(em, band, 0, w.partitions, cols.begin + c1, [(width, height), (1, right)], pad)
    segments = []  # (first band index, bands, top pad rows, first pad row below the data, first input row)
    for g, o0 in enumerate(w.band_starts):
        r_lo = rows.needed(o0, o0 + w.rows_out)[0]
        v0, v1 = max(r_lo, 0), min(r_lo + height, rows.size)
        key = (v0 - r_lo, max(v1 - r_lo, v0 - r_lo))
        if segments and tuple(segments[-1][2:4]) == key:
            segments[-1][1] += 1
        else:
            segments.append([g, 1, *key, v0])
    for g, nb, top, bottom, v0 in segments:
        p0, pn = g * w.images, nb * w.images
        if top > 0:
            _memset(em, band, p0, pn, 0, [(1, top * width)], pad)
        if bottom < height:
            _memset(em, band, p0, pn, bottom * width, [(1, (height - bottom) * width)], pad)
        if bottom > top and c1 > 0:
            dst = AP("sbuf", band.offset + (top * width + cols.begin) * 4,
                     ap_dims([(width, bottom - top), (1, c1)]), "f32", p0, pn)
            band_stride = w.rows_out * rows.s * cols.size
            src = ap_dims([(band_stride, nb), (in_plane, w.images), (cols.size, bottom - top), (1, c1)])
            src = hbm_ap(x, w.i0 * in_plane + v0 * cols.size, src)
            em.emit(tiles.queue, "dma_copy", {"dst": dst, "src": src})


def _memset(em: Emitter, band: AP, p0: int, pn: int, offset: int, dims: list[tuple[int, int]], value: float) -> None:
    if any(n <= 0 for _, n in dims):
        return
    ap = AP("sbuf", band.offset + offset * 4, ap_dims(dims), "f32", p0, pn)
    em.emit("pool", "memset", {"dst": ap}, value=value)


def _pool_band(em: Emitter, tiles: RingTiles, band: AP, rows: Axis, cols: Axis, out_rows: int, width: int,
               op: str) -> AP:
    """Reduce every window of the band: [out_rows, cols.out] per partition."""
    q = band.pcount
    height = (out_rows - 1) * rows.s + rows.span
    direct = out_rows * cols.out * rows.k * cols.k
    separable = height * cols.out * cols.k + out_rows * cols.out * rows.k + 64
    out = tiles.new(q, out_rows * cols.out)
    if rows.k > 1 and cols.k > 1 and separable < direct:
        tmp = tiles.new(q, height * cols.out)
        along_w, _ = _window(band, [(width, height), (cols.s, cols.out)], [(cols.d, cols.k)])
        em.emit("dve", "reduce", {"dst": tmp, "src": along_w}, op=op, axes=1)
        along_h, _ = _window(tmp, [(rows.s * cols.out, out_rows), (1, cols.out)],
                             [(rows.d * cols.out, rows.k)])
        em.emit("dve", "reduce", {"dst": out, "src": along_h}, op=op, axes=1)
        return out
    view, naxes = _window(band, [(rows.s * width, out_rows), (cols.s, cols.out)],
                          [(rows.d * width, rows.k), (cols.d, cols.k)])
    if naxes:
        em.emit("dve", "reduce", {"dst": out, "src": view}, op=op, axes=naxes)
    else:  # 1x1 window: a strided copy
        em.emit("dve", "copy", {"dst": out, "src": view})
    return out


def _window(tile: AP, kept: list[tuple[int, int]], red: list[tuple[int, int]]) -> tuple[AP, int]:
    """A view of `tile` with the kept dims then the window dims (each group merged on its own),
    and the number of window dims."""
    k = [d for d in ap_dims(kept) if d[1] > 1]
    r = [d for d in ap_dims(red) if d[1] > 1]
    view = AP(tile.space, tile.offset, tuple(k + r) or ((1, 1),), tile.dtype, tile.pstart, tile.pcount)
    return view, len(r)


@kernel("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: LoweringContext, node: Node) -> None:
    x = ctx.value(node.inputs[0])
    rank = len(x.shape)
    dims = canonical_dims(x.shape, range(2, rank))
    if not any(d.red for d in dims):  # 1x1 spatial: the output is the input
        ctx.alias(node.outputs[0], node.inputs[0])
        return
    out = ctx.output(node.outputs[0])
    is_avg = node.op_type == "GlobalAveragePool"
    reduce_into(ctx, x, out, dims, "sum" if is_avg else "max", finish="mean" if is_avg else None,
                count=math.prod(x.shape[2:]))
