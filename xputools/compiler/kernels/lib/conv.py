"""What Conv, ConvTranspose and the int8 convolution share: attribute geometry, the convolution as
passes of kernel taps (`ConvSpec`), channel units, weight blocks, and the zero-padded input band
loaded into SBUF."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_model.isa import AP

from ...context import DeviceValue, LoweringContext
from ...emitter import Emitter
from ...errors import CompileError
from ...graph import Node
from .ap import hbm_pattern, sub


@dataclass
class Pass:
    """Output pixels (oh0 + osh*q, ow0 + osw*p) for q < qh, p < qw; tap t reads input pixel
    (q*ish + ch, p*isw + cw)."""

    oh0: int
    ow0: int
    qh: int
    qw: int
    taps: list  # (tap index, ch, cw)


@dataclass
class ConvSpec:
    n: int
    cin: int
    h: int
    w: int
    cout: int
    oh: int
    ow: int
    groups: int
    taps: int
    ish: int
    isw: int
    osh: int
    osw: int
    passes: list
    weight: np.ndarray | None  # [groups, taps, cin/group, cout/group] f32, or None (run-time weight)
    weight_value: DeviceValue | None = None  # a run-time weight
    transposed: bool = False
    kernel_hw: tuple = (1, 1)
    kernel_dil: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, left, bottom, right (Conv)


@dataclass
class Unit:
    """Channels computed together: input-channel tiles accumulate into each output-channel tile."""

    cin_tiles: list   # (c0, ct)
    cout_tiles: list  # (o0, ot)
    weights: dict = field(default_factory=dict)  # (j, i) -> HBM DeviceValue or None


def conv_operands(ctx: LoweringContext, node: Node) -> tuple[DeviceValue, tuple[int, ...], DeviceValue]:
    """(input, weight shape, output) of a 1-D or 2-D convolution node; other ranks are not lowered."""
    x = ctx.value(node.inputs[0])
    w_shape = tuple(ctx.graph.values[node.inputs[1]].shape)
    out = ctx.output(node.outputs[0])
    if len(x.shape) not in (3, 4):
        raise CompileError(f"{node.name}: {node.op_type} on rank {len(x.shape)} is not lowered (1-D and 2-D only)")
    return x, w_shape, out


# ---- attributes ---------------------------------------------------------------------------------

def int_attrs(node: Node, name: str, default: list[int]) -> list[int]:
    """An integer-list attribute of `node`, or `default`."""
    v = node.attrs.get(name)
    return list(default) if v is None else [int(x) for x in v]


def auto_pad(node: Node) -> str:
    """The node's auto_pad attribute as text."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def conv_geometry(node: Node, x_shape: tuple[int, ...],
                  w_shape: tuple[int, ...]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, dilations, pads[top, left, bottom, right]) of a Conv in 2-D form."""
    sp = len(x_shape) - 2
    k = list(w_shape[2:])
    strides = int_attrs(node, "strides", [1] * sp)
    dil = int_attrs(node, "dilations", [1] * sp)
    pads = int_attrs(node, "pads", [0] * (2 * sp))
    auto = auto_pad(node)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * sp)
        for i in range(sp):
            out = -(-x_shape[2 + i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - x_shape[2 + i])
            head = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[sp + i] = head, total - head
    elif auto == "VALID":
        pads = [0] * (2 * sp)
    elif auto != "NOTSET":
        raise CompileError(f"{node.name}: unknown auto_pad {auto!r}")
    if sp == 1:
        return [1] + k, [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    return k, strides, dil, [pads[0], pads[1], pads[2], pads[3]]


def check_out(node: Node, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    """The output spatial shape the attributes give must be the graph's."""
    if tuple(got) != tuple(want):
        raise CompileError(f"{node.name}: computed output spatial shape {tuple(got)} differs from the "
                           f"graph's {tuple(want)}")


def conv_spec(node: Node, x_shape: tuple[int, ...], w_shape: tuple[int, ...], out_shape: tuple[int, ...],
              weight: np.ndarray | None, weight_value: DeviceValue | None = None) -> ConvSpec:
    """The ConvSpec of a (1-D or 2-D) Conv: one pass over all taps; `weight` is the ONNX weight
    [cout, cin/group, kh, kw] (rearranged here) or None with `weight_value` for a run-time weight."""
    k, s, d, p = conv_geometry(node, x_shape, w_shape)
    n, cin = x_shape[:2]
    h, w = (1, x_shape[2]) if len(x_shape) == 3 else x_shape[2:]
    cout = w_shape[0]
    g = int(node.attrs.get("group", 1))
    oh = (h + p[0] + p[2] - (k[0] - 1) * d[0] - 1) // s[0] + 1
    ow = (w + p[1] + p[3] - (k[1] - 1) * d[1] - 1) // s[1] + 1
    check_out(node, (oh, ow) if len(x_shape) == 4 else (ow,), out_shape[2:])
    if cin % g or cout % g or w_shape[1] * g != cin:
        raise CompileError(f"{node.name}: channels {cin} -> {cout} do not split into {g} groups "
                           f"(weight {w_shape})")
    taps = [(i * k[1] + j, i * d[0] - p[0], j * d[1] - p[1]) for i in range(k[0]) for j in range(k[1])]
    arranged = None
    if weight is not None:
        arr = np.asarray(weight, dtype=np.float32).reshape(g, cout // g, cin // g, k[0] * k[1])
        arranged = np.ascontiguousarray(arr.transpose(0, 3, 2, 1))  # [g, tap, cin/g, cout/g]
    return ConvSpec(n, cin, h, w, cout, oh, ow, g, k[0] * k[1], s[0], s[1], 1, 1,
                    [Pass(0, 0, oh, ow, taps)], arranged, weight_value,
                    kernel_hw=(k[0], k[1]), kernel_dil=(d[0], d[1]), pads=tuple(p))


# ---- channel units ------------------------------------------------------------------------------

def channel_units(spec: ConvSpec, pmax: int, mmax: int) -> list[Unit]:
    """The channel units of a convolution: small groups packed side by side into one tile of at
    most `pmax` input and `mmax` output channels (block-diagonal weights), large ones alone."""
    g, cpi, cpo = spec.groups, spec.cin // spec.groups, spec.cout // spec.groups

    def tiles(start: int, count: int, size: int) -> list[tuple[int, int]]:
        return [(c, min(size, start + count - c)) for c in range(start, start + count, size)]

    if g == 1:
        return [Unit(tiles(0, spec.cin, pmax), tiles(0, spec.cout, mmax))]
    if cpi <= pmax and cpo <= mmax:
        per = min(pmax // cpi, mmax // cpo)
        if spec.weight is None:
            per = 1  # run-time weights are loaded one group block per DMA
        return [Unit([(g0 * cpi, min(per, g - g0) * cpi)], [(g0 * cpo, min(per, g - g0) * cpo)])
                for g0 in range(0, g, per)]
    return [Unit(tiles(gi * cpi, cpi, pmax), tiles(gi * cpo, cpo, mmax)) for gi in range(g)]


def weight_block(spec: ConvSpec, ci: tuple[int, int], co: tuple[int, int]) -> np.ndarray:
    """[cin tile, taps, cout tile] f32, zero where input and output channels are in different groups."""
    (c0, ct), (o0, ot) = ci, co
    cpi, cpo = spec.cin // spec.groups, spec.cout // spec.groups
    block = np.zeros((ct, spec.taps, ot), np.float32)
    for gi in range(c0 // cpi, (c0 + ct - 1) // cpi + 1):
        ci_lo, ci_hi = max(c0, gi * cpi), min(c0 + ct, (gi + 1) * cpi)
        co_lo, co_hi = max(o0, gi * cpo), min(o0 + ot, (gi + 1) * cpo)
        if ci_lo >= ci_hi or co_lo >= co_hi:
            continue
        part = spec.weight[gi, :, ci_lo - gi * cpi:ci_hi - gi * cpi, co_lo - gi * cpo:co_hi - gi * cpo]
        block[ci_lo - c0:ci_hi - c0, :, co_lo - o0:co_hi - o0] = part.transpose(1, 0, 2)
    return block


def stationary_weights(spec: ConvSpec, ci: tuple[int, int], co: tuple[int, int],
                       packs: list[list[int]] | None) -> np.ndarray:
    """The f32 weight tile of one (cin tile, cout tile): [ct, taps*ot], one stationary block per
    tap; or, with `packs` (lists of tap indices contracted by one matmul), [ct * the largest pack,
    packs*ot], one block per pack with its (channel, tap) pairs channel-major on partitions."""
    block = weight_block(spec, ci, co)  # [ct, taps, ot]
    ct, _, ot = block.shape
    if packs is None:
        return block.reshape(ct, -1)
    arr = np.zeros((ct * max(len(taps) for taps in packs), len(packs) * ot), np.float32)
    for k, taps in enumerate(packs):
        arr[:ct * len(taps), k * ot:(k + 1) * ot] = block[:, taps, :].reshape(-1, ot)
    return arr


def output_block(out: DeviceValue, spec: ConvSpec, n0: int, nb: int, o0: int, ot: int, r0: int, rows: int,
                 c0: int, cols: int) -> AP:
    """The NCHW output pixels [r0, r0+rows) x [c0, c0+cols) of channels [o0, o0+ot) of images
    [n0, n0+nb), channels first (the order of an output tile with channels on partitions)."""
    ohw = spec.oh * spec.ow
    return hbm_pattern(out, n0 * spec.cout * ohw + o0 * ohw + r0 * spec.ow + c0,
                       ((ohw, ot), (spec.cout * ohw, nb), (spec.ow, rows), (1, cols)))


# ---- input bands ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Band:
    """Input rows [r_lo, r_lo+rows) x columns [c_lo, c_lo+cols) of images [n0, n0+nb) and channels
    [c0, c0+ct); rows and columns outside the image are padding."""

    n0: int
    nb: int
    c0: int
    ct: int
    r_lo: int
    c_lo: int
    rows: int
    cols: int


def load_band(em: Emitter, tile: AP, x: DeviceValue, spec: ConvSpec, band: Band, fill: float | int,
              dtype: str | None = None) -> bool:
    """Fill `tile` ([ct, nb*rows*cols] SBUF) with `band` of the NCHW input `x`, `fill` where the
    band lies outside the image (memsets of the padding strips, one DMA of the image part, read as
    `dtype`). Returns False when the band lies wholly outside the image (the tile is all `fill`)."""
    b, br, bc = band, band.rows, band.cols
    r0, r1 = max(b.r_lo, 0), min(b.r_lo + br, spec.h)
    w0, w1 = max(b.c_lo, 0), min(b.c_lo + bc, spec.w)
    if r0 >= r1 or w0 >= w1:
        em.emit("dve", "memset", {"dst": tile}, value=fill)
        return False
    # the padding: rows above and below the image, then columns left and right of it
    img = (br * bc, b.nb)
    top, bottom, left, right = r0 - b.r_lo, b.r_lo + br - r1, w0 - b.c_lo, b.c_lo + bc - w1
    inner = (bc, r1 - r0)
    strips = [(0, (img, (1, top * bc))), ((br - bottom) * bc, (img, (1, bottom * bc))),
              (top * bc, (img, inner, (1, left))), (top * bc + bc - right, (img, inner, (1, right)))]
    for off, dims in strips:
        if dims[-1][1] > 0:
            em.emit("dve", "memset", {"dst": sub(tile, b.ct, off, dims)}, value=fill)
    hw = spec.h * spec.w
    src = hbm_pattern(x, b.n0 * spec.cin * hw + b.c0 * hw + r0 * spec.w + w0,
                      ((hw, b.ct), (spec.cin * hw, b.nb), (spec.w, r1 - r0), (1, w1 - w0)), dtype)
    dst = sub(tile, b.ct, top * bc + left, ((br * bc, b.nb), (bc, r1 - r0), (1, w1 - w0)))
    em.emit("dma", "dma_copy", {"dst": dst, "src": src})
    return True
