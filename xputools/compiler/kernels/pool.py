"""MaxPool and AveragePool (1-D and 2-D), GlobalAveragePool and GlobalMaxPool.

Images (N*C) on partitions, a band of rows on the free axis. The band is copied into an SBUF tile
whose border (padding, and windows running past the end in ceil_mode) is set to -inf (max) or 0
(average); every window is then one strided access pattern [out rows, out cols, kh, kw] over that
tile, so a single DVE `reduce` pools the band (or two, separably along W then H, when cheaper).
AveragePool divides by a per-position count known at compile time. A 1-D pool runs along the row
axis (W = 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_model.isa import AP

from ..errors import CompileError
from . import kernel
from .common import hbm_ap
from .normalize import Replicated, _rows
from .reduce import BUDGET, Tiles, canonical_dims, merge_dims, reduce_into


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


def pool_axes(node, x_shape, y_shape) -> tuple[Axis, Axis]:
    """(rows axis, cols axis) of the pool; a 1-D pool has a trivial cols axis."""
    spatial = len(x_shape) - 2
    if spatial not in (1, 2):
        raise CompileError(f"{node.name}: {node.op_type} {spatial}-D is not supported (1-D and 2-D)")
    ks = [int(k) for k in node.attrs.get("kernel_shape", [])]
    if len(ks) != spatial:
        raise CompileError(f"{node.name}: {node.op_type} kernel_shape {ks} does not match {spatial} spatial dims")
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


def pool_problem(node, graph) -> str | None:
    """Why the device cannot run this MaxPool/AveragePool node (support rule), or None."""
    x, y = graph.values[node.input(0)].shape, graph.values[node.outputs[0]].shape
    try:
        rows, cols = pool_axes(node, x, y)
    except CompileError as exc:
        return str(exc).split(": ", 1)[-1]
    if not band_rows(rows, cols):
        return f"{node.op_type} windows spanning {rows.span} rows of {cols.size} elements do not fit an SBUF tile"
    if node.op_type == "AveragePool":
        include = bool(node.attrs.get("count_include_pad", 0))
        if not (rows.counts(include).all() and cols.counts(include).all()):
            return "AveragePool output windows that hold no input element (ceil_mode past the padding)"
    return None


@kernel("MaxPool", "AveragePool")
def pool(ctx, node) -> None:
    x = ctx.value(node.inputs[0])
    y = ctx.output(node.outputs[0])
    rows, cols = pool_axes(node, x.shape, y.shape)
    if y.size == 0:
        return
    is_max = node.op_type == "MaxPool"
    per_band = band_rows(rows, cols)
    if not per_band:
        raise CompileError(f"{node.name}: {node.op_type} window rows of {rows.span} x "
                           f"{(cols.out - 1) * cols.s + cols.span} elements do not fit an SBUF tile")
    images = x.shape[0] * x.shape[1]
    count = None
    if not is_max:
        include = bool(node.attrs.get("count_include_pad", 0))
        counts = np.outer(rows.counts(include), cols.counts(include)).astype(np.float32)
        if np.any(counts == 0):
            raise CompileError(f"{node.name}: AveragePool has a window without any counted element")
        count = float(counts.flat[0]) if np.all(counts == counts.flat[0]) else ctx.new_const("count", counts.reshape(-1))
    em = ctx.em
    tiles = Tiles(ctx)
    parts = ctx.arch.partitions
    width = (cols.out - 1) * cols.s + cols.span
    in_plane, out_plane = rows.size * cols.size, rows.out * cols.out
    pad_value = -math.inf if is_max else 0.0
    op = "max" if is_max else "sum"
    for o0 in range(0, rows.out, per_band):
        o1 = min(rows.out, o0 + per_band)
        r_lo, r_hi = rows.needed(o0, o1)
        height = r_hi - r_lo
        v0, v1 = max(r_lo, 0), min(r_hi, rows.size)  # input rows present in the band
        c1 = min(width - cols.begin, cols.size)       # input cols present
        divisor = None
        if isinstance(count, float) or count is None:
            divisor = count
        else:
            divisor = Replicated(ctx, tiles, count, min(parts, images), (o1 - o0) * cols.out, o0 * cols.out)
        for i0 in range(0, images, parts):
            q = min(parts, images - i0)
            band = tiles.new(q, height * width)
            _fill_border(em, band, height, width, v0 - r_lo, v1 - r_lo, cols.begin, cols.begin + c1, pad_value)
            if v1 > v0 and c1 > 0:
                dst = AP("sbuf", band.offset + ((v0 - r_lo) * width + cols.begin) * 4,
                         merge_dims([(width, v1 - v0), (1, c1)]), "f32", 0, q)
                src = hbm_ap(x, i0 * in_plane + v0 * cols.size, merge_dims([(in_plane, q), (cols.size, v1 - v0), (1, c1)]))
                em.emit(tiles.queue, "dma_copy", {"dst": dst, "src": src})
            out = _pool_band(em, tiles, band, q, rows, cols, o1 - o0, width, op)
            if divisor is not None:
                if isinstance(divisor, float):
                    em.emit("dve", "tensor_scalar", {"dst": out, "src": out}, op0="div", s0=divisor)
                else:
                    d = divisor.get(tiles.nbytes(height * width, "f32") + 2 * tiles.nbytes((o1 - o0) * cols.out, "f32"))
                    em.emit("dve", "tensor_tensor", {"dst": out, "a": out, "b": _rows(d, q)}, op="div")
            em.emit("dma", "dma_copy", {"dst": hbm_ap(y, i0 * out_plane + o0 * cols.out,
                                                      merge_dims([(out_plane, q), (1, (o1 - o0) * cols.out)])),
                                        "src": out})


def _fill_border(em, band: AP, height: int, width: int, r0: int, r1: int, c0: int, c1: int, value: float):
    """Set everything outside rows [r0, r1) x cols [c0, c1) of a [height, width] band to `value`."""
    def fill(offset, dims):
        ap = AP("sbuf", band.offset + offset * 4, merge_dims(dims), "f32", 0, band.pcount)
        em.emit("pool", "memset", {"dst": ap}, value=value)

    if r1 <= r0 or c1 <= c0:
        fill(0, [(1, height * width)])
        return
    if r0 > 0:
        fill(0, [(1, r0 * width)])
    if r1 < height:
        fill(r1 * width, [(1, (height - r1) * width)])
    if c0 > 0:
        fill(r0 * width, [(width, r1 - r0), (1, c0)])
    if c1 < width:
        fill(r0 * width + c1, [(width, r1 - r0), (1, width - c1)])


def _pool_band(em, tiles: Tiles, band: AP, q: int, rows: Axis, cols: Axis, out_rows: int, width: int, op: str) -> AP:
    """Reduce every window of the band: [out_rows, cols.out] per partition."""
    height = (out_rows - 1) * rows.s + rows.span
    direct = out_rows * cols.out * rows.k * cols.k
    separable = height * cols.out * cols.k + out_rows * cols.out * rows.k + 64
    out = tiles.new(q, out_rows * cols.out)
    if rows.k > 1 and cols.k > 1 and separable < direct:
        tmp = tiles.new(q, height * cols.out)
        along_w, _ = _window(band, [(width, height), (cols.s, cols.out)], [(cols.d, cols.k)])
        em.emit("dve", "reduce", {"dst": tmp, "src": along_w}, op=op, axes=1)
        along_h, _ = _window(tmp, [(rows.s * cols.out, out_rows), (1, cols.out)], [(rows.d * cols.out, rows.k)])
        em.emit("dve", "reduce", {"dst": out, "src": along_h}, op=op, axes=1)
        return out
    view, naxes = _window(band, [(rows.s * width, out_rows), (cols.s, cols.out)],
                          [(rows.d * width, rows.k), (cols.d, cols.k)])
    if naxes:
        em.emit("dve", "reduce", {"dst": out, "src": view}, op=op, axes=naxes)
    else:  # 1x1 window: a strided copy
        em.emit("dve", "copy", {"dst": out, "src": view})
    return out


def _window(tile: AP, kept, red) -> tuple[AP, int]:
    """A view of `tile` with the kept dims then the window dims (each group merged on its own),
    and the number of window dims."""
    k = [d for d in merge_dims(kept) if d[1] > 1]
    r = [d for d in merge_dims(red) if d[1] > 1]
    return AP(tile.space, tile.offset, tuple(k + r) or ((1, 1),), tile.dtype, tile.pstart, tile.pcount), len(r)


@kernel("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx, node) -> None:
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
