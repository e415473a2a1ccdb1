"""Conv (1-D/2-D, groups, strides, pads, auto_pad, dilations) and ConvTranspose (2-D) as implicit
GEMMs on the PE.

For every output tile the PE accumulates, over kernel taps and input-channel tiles,
    psum[cout, pixels] += W_tap[cin, cout]^T @ window_tap[cin, pixels]
where W_tap is a stationary slice of the weights (rearranged at compile time to [cin, tap, cout]
and stored in the compute dtype) and window_tap is an access pattern straight into a zero-padded
band of input rows in SBUF (strides and dilations are just strides of that pattern). The output
tile is [cout on partitions, pixels], i.e. NCHW rows, and the epilogue adds the per-channel bias
(a per-partition operand) and the fused activation while evacuating PSUM.

Groups: groups small enough are packed side by side into one 128-channel tile with block-diagonal
weights (a depthwise conv becomes one matmul per tap over up to 128 channels); larger groups are
separate GEMMs. ConvTranspose is decomposed by output phase (oh mod stride, ow mod stride): each
phase is a stride-1 correlation of the input with the taps that land on it, so no multiply is
spent on inserted zeros; the phases are evacuated interleaved into one output tile.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..errors import CompileError
from . import kernel
from .matmul import Pool, device_cast, epilogue_for, hbm, operand_dtype, pe_limits, sbuf_ap, sub


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
    weight_value: object = None  # DeviceValue of a run-time weight
    transposed: bool = False
    kernel_hw: tuple = (1, 1)
    kernel_dil: tuple = (1, 1)


@dataclass
class Unit:
    """Channels computed together: input-channel tiles accumulate into each output-channel tile."""

    cin_tiles: list   # (c0, ct)
    cout_tiles: list  # (o0, ot)
    weights: dict = field(default_factory=dict)  # (j, i) -> HBM DeviceValue or None


# ---- attributes ---------------------------------------------------------------------------------

def _ints(node, name, n, default):
    v = node.attrs.get(name)
    return list(default) if v is None else [int(x) for x in v]


def _pads_1d_to_2d(v):
    return [0, v[0], 0, v[1]]


def _conv_geometry(node, x_shape, w_shape):
    """(kernel, strides, dilations, pads[top, left, bottom, right]) in 2-D form."""
    sp = len(x_shape) - 2
    k = list(w_shape[2:])
    strides = _ints(node, "strides", sp, [1] * sp)
    dil = _ints(node, "dilations", sp, [1] * sp)
    pads = _ints(node, "pads", 2 * sp, [0] * (2 * sp))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
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


def _check_out(node, got, want):
    if tuple(got) != tuple(want):
        raise CompileError(f"{node.name}: computed output spatial shape {tuple(got)} differs from the "
                           f"graph's {tuple(want)}")


# ---- kernels ------------------------------------------------------------------------------------

@kernel("Conv")
def conv(ctx, node) -> None:
    x = ctx.value(node.inputs[0])
    w_shape = tuple(ctx.graph.values[node.inputs[1]].shape)
    out = ctx.output(node.outputs[0])
    if len(x.shape) not in (3, 4):
        raise CompileError(f"{node.name}: Conv on rank {len(x.shape)} is not lowered (1-D and 2-D only)")
    k, s, d, p = _conv_geometry(node, x.shape, w_shape)
    n, cin = x.shape[:2]
    h, w = (1, x.shape[2]) if len(x.shape) == 3 else x.shape[2:]
    cout = w_shape[0]
    g = int(node.attrs.get("group", 1))
    oh = (h + p[0] + p[2] - (k[0] - 1) * d[0] - 1) // s[0] + 1
    ow = (w + p[1] + p[3] - (k[1] - 1) * d[1] - 1) // s[1] + 1
    _check_out(node, (oh, ow) if len(x.shape) == 4 else (ow,), out.shape[2:])
    if cin % g or cout % g or w_shape[1] * g != cin:
        raise CompileError(f"{node.name}: channels {cin} -> {cout} do not split into {g} groups (weight {w_shape})")
    taps = [(i * k[1] + j, i * d[0] - p[0], j * d[1] - p[1]) for i in range(k[0]) for j in range(k[1])]
    wc = ctx.const(node.inputs[1])
    weight = None
    if wc is not None:
        arr = np.asarray(wc, dtype=np.float32).reshape(g, cout // g, cin // g, k[0] * k[1])
        weight = np.ascontiguousarray(arr.transpose(0, 3, 2, 1))  # [g, tap, cin/g, cout/g]
    spec = ConvSpec(n, cin, h, w, cout, oh, ow, g, k[0] * k[1], s[0], s[1], 1, 1,
                    [Pass(0, 0, oh, ow, taps)], weight, None if wc is not None else ctx.value(node.inputs[1]),
                    kernel_hw=(k[0], k[1]), kernel_dil=(d[0], d[1]))
    run_conv(ctx, node, spec, x, out)


@kernel("ConvTranspose")
def conv_transpose(ctx, node) -> None:
    x = ctx.value(node.inputs[0])
    w_shape = tuple(ctx.graph.values[node.inputs[1]].shape)
    out = ctx.output(node.outputs[0])
    if len(x.shape) not in (3, 4):
        raise CompileError(f"{node.name}: ConvTranspose on rank {len(x.shape)} is not lowered (1-D and 2-D only)")
    sp = len(x.shape) - 2
    n, cin = x.shape[:2]
    g = int(node.attrs.get("group", 1))
    cout = w_shape[1] * g
    k = list(w_shape[2:])
    strides = _ints(node, "strides", sp, [1] * sp)
    dil = _ints(node, "dilations", sp, [1] * sp)
    opad = _ints(node, "output_padding", sp, [0] * sp)
    pads = _ints(node, "pads", 2 * sp, [0] * (2 * sp))
    out_sp = tuple(out.shape[2:])
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto == "VALID":
        pads = [0] * (2 * sp)
    if "output_shape" in node.attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = ([int(v) for v in node.attrs["output_shape"]][-sp:] if "output_shape" in node.attrs
                  else [x.shape[2 + i] * strides[i] for i in range(sp)])
        for i in range(sp):
            total = strides[i] * (x.shape[2 + i] - 1) + opad[i] + (k[i] - 1) * dil[i] + 1 - target[i]
            head = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[sp + i] = head, total - head
    if sp == 1:
        k, strides, dil, opad = [1] + k, [1] + strides, [1] + dil, [0] + opad
        pads = [0, pads[0], 0, pads[1]]
    h, w = (1, x.shape[2]) if sp == 1 else x.shape[2:]
    oh = strides[0] * (h - 1) + opad[0] + (k[0] - 1) * dil[0] + 1 - pads[0] - pads[2]
    ow = strides[1] * (w - 1) + opad[1] + (k[1] - 1) * dil[1] + 1 - pads[1] - pads[3]
    _check_out(node, (oh, ow) if sp == 2 else (ow,), out_sp)
    if cin % g or w_shape[0] != cin:
        raise CompileError(f"{node.name}: weight {w_shape} does not match {cin} input channels in {g} groups")
    passes = []
    for rh in range(min(strides[0], oh)):
        for rw in range(min(strides[1], ow)):
            taps = []
            for i in range(k[0]):
                eh = rh + pads[0] - i * dil[0]
                if eh % strides[0]:
                    continue
                for j in range(k[1]):
                    ew = rw + pads[1] - j * dil[1]
                    if ew % strides[1]:
                        continue
                    taps.append((i * k[1] + j, eh // strides[0], ew // strides[1]))
            passes.append(Pass(rh, rw, -(-(oh - rh) // strides[0]), -(-(ow - rw) // strides[1]), taps))
    wc = ctx.const(node.inputs[1])
    weight = None
    if wc is not None:
        arr = np.asarray(wc, dtype=np.float32).reshape(g, cin // g, cout // g, k[0] * k[1])
        weight = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # [g, tap, cin/g, cout/g]
    spec = ConvSpec(n, cin, h, w, cout, oh, ow, g, k[0] * k[1], 1, 1, strides[0], strides[1], passes, weight,
                    None if wc is not None else ctx.value(node.inputs[1]), transposed=True, kernel_hw=(k[0], k[1]))
    run_conv(ctx, node, spec, x, out)


# ---- channel units ------------------------------------------------------------------------------

def _units(spec: ConvSpec, pmax: int, mmax: int) -> list[Unit]:
    g, cpi, cpo = spec.groups, spec.cin // spec.groups, spec.cout // spec.groups
    tiles = lambda start, count, size: [(c, min(size, start + count - c)) for c in range(start, start + count, size)]
    if g == 1:
        return [Unit(tiles(0, spec.cin, pmax), tiles(0, spec.cout, mmax))]
    if cpi <= pmax and cpo <= mmax:
        per = min(pmax // cpi, mmax // cpo)
        if spec.weight is None:
            per = 1  # run-time weights are loaded one group block per DMA
        return [Unit([(g0 * cpi, min(per, g - g0) * cpi)], [(g0 * cpo, min(per, g - g0) * cpo)])
                for g0 in range(0, g, per)]
    return [Unit(tiles(gi * cpi, cpi, pmax), tiles(gi * cpo, cpo, mmax)) for gi in range(g)]


def _weight_block(spec: ConvSpec, ci: tuple, co: tuple) -> np.ndarray:
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


# ---- the driver ---------------------------------------------------------------------------------

@dataclass
class Block:
    """Images [n0, n0+nb) x sub-grid rows [q0, q0+qb) x sub-grid columns [p0, p0+pb)."""

    n0: int
    nb: int
    q0: int
    qb: int
    p0: int
    pb: int


@dataclass
class Plan:
    nb: int      # images per block
    qb: int      # sub-grid rows per block
    pb: int      # sub-grid columns per block
    qt: int      # rows per PSUM tile
    pt: int      # columns per PSUM tile
    br: int = 0  # band rows / columns (input pixels a block reads, padding included)
    bc: int = 0
    band_bytes: int = 0
    out_bytes: int = 0


def _extent(spec: ConvSpec, axis: int):
    """(min, max) input offset over all taps of all passes along rows (0) or columns (1)."""
    vals = [t[1 + axis] for ps in spec.passes for t in ps.taps] or [0]
    return min(vals), max(vals)


class ConvLowering:
    """Emits one Conv/ConvTranspose node: weights and biases resident (or streamed when large), then
    per block of output pixels: input bands per channel tile, matmuls per PSUM tile, epilogue into
    an output tile, one store."""

    def __init__(self, ctx, node, spec: ConvSpec, x, out):
        self.ctx, self.node, self.spec, self.x, self.out = ctx, node, spec, x, out
        self.em = ctx.em
        self.lim = pe_limits(ctx)
        self.dtype = operand_dtype(ctx, node)
        self.isz = itemsize(self.dtype)
        self.cpc = ctx.arch.raw["pe"]["cycles_per_column"].get(self.dtype, 4)
        self.units = _units(spec, self.lim.k, self.lim.m)
        self.qh = max(ps.qh for ps in spec.passes)
        self.qw = max(ps.qw for ps in spec.passes)
        (self.ch_lo, self.ch_hi), (self.cw_lo, self.cw_hi) = _extent(spec, 0), _extent(spec, 1)
        self.n_bands = max(len(u.cin_tiles) for u in self.units)

    # -- planning ---------------------------------------------------------------------------------
    def _plan(self, rows_per_tile: int, tiles_per_block: int, max_images: int) -> Plan:
        spec, nmax, qh, qw = self.spec, self.lim.n, self.qh, self.qw
        if qh * qw <= nmax:
            nb = min(spec.n, max_images, max(1, nmax // (qh * qw)))
            p = Plan(nb, qh, qw, qh, qw)
        elif qw <= nmax:
            qt = min(qh, rows_per_tile)
            p = Plan(1, min(qh, qt * tiles_per_block), qw, qt, qw)
        else:
            p = Plan(1, 1, min(qw, nmax), 1, min(qw, nmax))
        p.br = (p.qb - 1) * spec.ish + self.ch_hi - self.ch_lo + 1
        p.bc = (p.pb - 1) * spec.isw + self.cw_hi - self.cw_lo + 1
        p.band_bytes = p.nb * p.br * p.bc * self.isz
        p.out_bytes = p.nb * min(p.qb * spec.osh, spec.oh) * min(p.pb * spec.osw, spec.ow) * 4
        return p

    def _fit_plan(self, w_bytes: int, max_images: int, stack_bytes: int) -> Plan:
        nmax, budget = self.lim.n, self.lim.sbuf_budget
        rows_per_tile = max(1, nmax // self.qw) if self.qw <= nmax else 1
        tiles_per_block = 1 if len(self.spec.passes) > 1 else 4
        bias_tiles = sum(len(u.cout_tiles) for u in self.units) if self.node.input(2) else 0
        while True:
            p = self._plan(rows_per_tile, tiles_per_block, max_images)
            need = (w_bytes + 2 * self.n_bands * p.band_bytes + 3 * p.out_bytes + 256 * (bias_tiles + 1)
                    + stack_bytes)
            if need <= budget:
                return p
            if tiles_per_block > 1:
                tiles_per_block //= 2
            elif rows_per_tile > 1:
                rows_per_tile //= 2
            else:
                raise CompileError(f"{self.node.name}: one output row of this convolution needs {need} "
                                   f"bytes of SBUF per partition ({budget} available)")

    def _tap_packs(self):
        """Taps grouped so that one matmul contracts over (channel, tap) pairs: whole kernel rows
        whose windows a SBUF-to-SBUF DMA stacks on partitions. Only for a conv whose input
        channels fit one tile; None when stacking does not pay (PE time saved vs DMA time)."""
        spec = self.spec
        kh, kw = spec.kernel_hw
        if len(spec.passes) > 1 or spec.taps == 1 or self.n_bands != 1:
            return None
        ct = max(u.cin_tiles[0][1] for u in self.units)
        if ct * kw > self.lim.k:
            return None
        rows = min(kh, self.lim.k // (ct * kw))
        taps = spec.passes[0].taps
        packs = [taps[i0 * kw:(i0 + rows) * kw] for i0 in range(0, kh, rows)]
        # compare PE + DMA time for one image's output, with and without stacking
        npix = self.qh * self.qw
        tiles = -(-npix // self.lim.n)
        dma = self.ctx.arch.raw["dma"]
        per_cycle = self.ctx.arch.raw["hbm"]["bandwidth_gbps"] / self.ctx.arch.clock_ghz
        runs = ct * spec.taps * (self.qh if spec.isw == 1 else npix)
        stack_cost = len(packs) * tiles * dma["latency_cycles"] / 2 + (
            ct * spec.taps * npix * self.isz + runs * dma["run_overhead_bytes"]) / per_cycle
        unpacked_images = max(1, min(spec.n, self.lim.n // npix)) if npix <= self.lim.n else 1
        unpacked = spec.taps * (tiles * 64 / unpacked_images + npix * self.cpc)
        packed = len(packs) * (tiles * 64 + npix * self.cpc) + stack_cost
        return packs if packed < unpacked else None

    # -- weights ----------------------------------------------------------------------------------
    def _weight_layout(self, ct: int):
        """(partitions, stationary blocks of `ot` columns) of a weight tile: one block per tap, or
        one per pack with its (channel, tap) pairs on partitions."""
        if self.packs is None:
            return ct, self.spec.taps
        return ct * max(len(pk) for pk in self.packs), len(self.packs)

    def _weight_const(self, ci, co):
        block = _weight_block(self.spec, ci, co)  # [ct, taps, ot]
        if self.packs is None:
            return block.reshape(ci[1], -1)
        rows, cols = self._weight_layout(ci[1])
        ct, ot = ci[1], co[1]
        arr = np.zeros((rows, cols * ot), np.float32)
        for k, pk in enumerate(self.packs):
            idx = [t for t, _, _ in pk]
            arr[:ct * len(pk), k * ot:(k + 1) * ot] = block[:, idx, :].reshape(ct * len(pk), ot)
        return arr

    def _load_weight(self, u: Unit, j: int, i: int):
        (c0, ct), (o0, ot) = u.cin_tiles[i], u.cout_tiles[j]
        rows, cols = self._weight_layout(ct)
        tile = sbuf_ap(self.w_pool.take(), rows, cols * ot, self.dtype)
        spec = self.spec
        if spec.weight is not None:
            self.em.emit("dma", "dma_copy", {"dst": tile, "src": u.weights[(j, i)].flat()})
            return tile
        # run-time weight (e.g. dequantized): one element per run, once per node
        wv, t = spec.weight_value, spec.taps
        cpi, cpo = spec.cin // spec.groups, spec.cout // spec.groups
        gi = c0 // cpi
        if spec.transposed:  # [cin, cout/g, taps]
            base, s_ci, s_co = c0 * cpo * t + (o0 - gi * cpo) * t, cpo * t, t
        else:  # [cout, cin/g, taps]
            base, s_ci, s_co = o0 * cpi * t + (c0 - gi * cpi) * t, t, cpi * t
        if self.packs is None:
            self.em.emit("dma", "dma_copy", {"dst": tile, "src": hbm(wv, base, ((s_ci, ct), (1, t), (s_co, ot)))})
            return tile
        for k, pk in enumerate(self.packs):
            src = hbm(wv, base + pk[0][0], ((s_ci, ct), (1, len(pk)), (s_co, ot)))
            self.em.emit("dma", "dma_copy", {"dst": sub(tile, ct * len(pk), k * ot, ((1, ot),)), "src": src})
        return tile

    # -- main -------------------------------------------------------------------------------------
    def run(self) -> None:
        spec, em, lim = self.spec, self.em, self.lim
        if self.out.size == 0:
            return
        self.packs = self._tap_packs()
        w_tiles = []
        for ui, u in enumerate(self.units):
            for j, (_, ot) in enumerate(u.cout_tiles):
                for i, (_, ct) in enumerate(u.cin_tiles):
                    w_tiles.append(-(-self._weight_layout(ct)[1] * ot * self.isz // 256) * 256)
        w_total = sum(w_tiles)
        w_resident = w_total <= lim.sbuf_budget // 4
        w_bytes = w_total if w_resident else 2 * self.n_bands * max(w_tiles)
        stack_bytes = 3 * lim.n * self.isz if self.packs else 0
        plan = self._fit_plan(w_bytes, 1 if self.packs else spec.n, stack_bytes)
        self.plan = plan

        if spec.weight is not None:
            for u in self.units:
                for j, co in enumerate(u.cout_tiles):
                    for i, ci in enumerate(u.cin_tiles):
                        u.weights[(j, i)] = self.ctx.new_const(f"w{len(u.weights)}",
                                                               device_cast(self._weight_const(ci, co), self.dtype))
        self.w_pool = Pool(em.sbuf, max(w_tiles), len(w_tiles) if w_resident else 2 * self.n_bands)
        self.band_pool = Pool(em.sbuf, plan.band_bytes, 2 * self.n_bands)
        self.out_pool = Pool(em.sbuf, plan.out_bytes, 3)
        self.stack_pool = Pool(em.sbuf, lim.n * self.isz, 3) if self.packs else None
        self.psum_pool = Pool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
        bias = {}
        if self.node.input(2):
            bias_pool = Pool(em.sbuf, 4, sum(len(u.cout_tiles) for u in self.units))
            bv = self.ctx.value(self.node.input(2))
            for ui, u in enumerate(self.units):
                for j, (o0, ot) in enumerate(u.cout_tiles):
                    tile = sbuf_ap(bias_pool.take(), ot, 1, "f32")
                    em.emit("dma", "dma_copy", {"dst": tile, "src": hbm(bv, o0, ((1, ot), (1, 1)))})
                    bias[(ui, j)] = tile
        resident = {}
        if w_resident:
            for ui, u in enumerate(self.units):
                for j in range(len(u.cout_tiles)):
                    for i in range(len(u.cin_tiles)):
                        resident[(ui, j, i)] = self._load_weight(u, j, i)
        self.epi = epilogue_for(self.ctx, self.node)

        for n0 in range(0, spec.n, plan.nb):
            for q0 in range(0, self.qh, plan.qb):
                for p0 in range(0, self.qw, plan.pb):
                    blk = Block(n0, min(plan.nb, spec.n - n0), q0, min(plan.qb, self.qh - q0),
                                p0, min(plan.pb, self.qw - p0))
                    for ui, u in enumerate(self.units):
                        bands = [self._load_band(blk, c0, ct) for c0, ct in u.cin_tiles]
                        for j, (o0, ot) in enumerate(u.cout_tiles):
                            wts = [resident[(ui, j, i)] if w_resident else self._load_weight(u, j, i)
                                   for i in range(len(u.cin_tiles))]
                            self._block_outputs(blk, u, bands, wts, o0, ot, bias.get((ui, j)))

    def _band_origin(self, blk: Block):
        return blk.q0 * self.spec.ish + self.ch_lo, blk.p0 * self.spec.isw + self.cw_lo

    def _load_band(self, blk: Block, c0: int, ct: int):
        """Input rows x columns a block reads, of channels [c0, c0+ct) of its images, zero outside
        the image, as an SBUF tile [ct, nb*br*bc]."""
        spec, p = self.spec, self.plan
        r_lo, c_lo = self._band_origin(blk)
        br, bc = p.br, p.bc
        tile = sbuf_ap(self.band_pool.take(), ct, blk.nb * br * bc, self.dtype)
        r0, r1 = max(r_lo, 0), min(r_lo + br, spec.h)
        w0, w1 = max(c_lo, 0), min(c_lo + bc, spec.w)
        if r0 >= r1 or w0 >= w1 or (r0, w0, r1, w1) != (r_lo, c_lo, r_lo + br, c_lo + bc):
            self.em.emit("dve", "memset", {"dst": tile}, value=0.0)
        if r0 >= r1 or w0 >= w1:
            return tile
        hw = spec.h * spec.w
        src = hbm(self.x, blk.n0 * spec.cin * hw + c0 * hw + r0 * spec.w + w0,
                  ((hw, ct), (spec.cin * hw, blk.nb), (spec.w, r1 - r0), (1, w1 - w0)))
        dst = sub(tile, ct, (r0 - r_lo) * bc + (w0 - c_lo), ((br * bc, blk.nb), (bc, r1 - r0), (1, w1 - w0)))
        self.em.emit("dma", "dma_copy", {"dst": dst, "src": src})
        return tile

    def _block_outputs(self, blk: Block, u: Unit, bands, wts, o0: int, ot: int, bias) -> None:
        spec, em, plan = self.spec, self.em, self.plan
        br, bc = plan.br, plan.bc
        r_lo, c_lo = self._band_origin(blk)
        oh_lo, ow_lo = blk.q0 * spec.osh, blk.p0 * spec.osw
        rows_out = min((blk.q0 + blk.qb) * spec.osh, spec.oh) - oh_lo
        cols_out = min((blk.p0 + blk.pb) * spec.osw, spec.ow) - ow_lo
        res = sbuf_ap(self.out_pool.take(), ot, blk.nb * rows_out * cols_out, "f32")
        kh, kw = spec.kernel_hw
        for ps in spec.passes:
            q_end, p_end = min(blk.q0 + blk.qb, ps.qh), min(blk.p0 + blk.pb, ps.qw)
            for qs in range(blk.q0, q_end, plan.qt):
                qn = min(plan.qt, q_end - qs)
                for pss in range(blk.p0, p_end, plan.pt):
                    pn = min(plan.pt, p_end - pss)
                    acc = AP("psum", self.psum_pool.take(), ((1, blk.nb * qn * pn),), "f32", 0, ot)
                    window = ((br * bc, blk.nb), (spec.ish * bc, qn), (spec.isw, pn))
                    steps = []  # (stationary, moving)
                    for (c0, ct), band, wt in zip(u.cin_tiles, bands, wts):
                        def at(ch, cw):
                            return (qs * spec.ish + ch - r_lo) * bc + (pss * spec.isw + cw - c_lo)
                        if self.packs is None:
                            for t, ch, cw in ps.taps:
                                steps.append((sub(wt, ct, t * ot, ((1, ot),)), sub(band, ct, at(ch, cw), window)))
                            continue
                        for k, pk in enumerate(self.packs):
                            stat = sub(wt, ct * len(pk), k * ot, ((1, ot),))
                            _, ch, cw = pk[0]
                            if len(pk) == 1:
                                steps.append((stat, sub(band, ct, at(ch, cw), window)))
                                continue
                            rows = len(pk) // kw
                            stacked = sbuf_ap(self.stack_pool.take(), ct * len(pk), blk.nb * qn * pn, self.dtype)
                            src = sub(band, ct, at(ch, cw), ((spec.kernel_dil[0] * bc, rows), (spec.kernel_dil[1], kw))
                                      + window)
                            em.emit("dma", "dma_copy", {"dst": stacked, "src": src})
                            steps.append((stat, stacked))
                    for idx, (stat, mov) in enumerate(steps):
                        em.emit("pe", "matmul", {"dst": acc, "stat": stat, "mov": mov}, start=1 if idx == 0 else 0)
                    if not steps:  # no tap lands on this phase: the output is the bias alone
                        em.emit("dve", "memset", {"dst": acc}, value=0.0)
                    dst_off = (ps.oh0 + qs * spec.osh - oh_lo) * cols_out + (ps.ow0 + pss * spec.osw - ow_lo)
                    dst = sub(res, ot, dst_off, ((rows_out * cols_out, blk.nb), (spec.osh * cols_out, qn),
                                                  (spec.osw, pn)))
                    self.epi.emit(self.ctx, acc, dst, row_bias=bias)
        ohw = spec.oh * spec.ow
        dst = hbm(self.out, blk.n0 * spec.cout * ohw + o0 * ohw + oh_lo * spec.ow + ow_lo,
                  ((ohw, ot), (spec.cout * ohw, blk.nb), (spec.ow, rows_out), (1, cols_out)))
        em.emit("dma", "dma_copy", {"dst": dst, "src": res})


def run_conv(ctx, node, spec: ConvSpec, x, out) -> None:
    ConvLowering(ctx, node, spec, x, out).run()
