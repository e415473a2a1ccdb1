"""Conv and ConvTranspose (1-D/2-D; groups, strides, pads, auto_pad, dilations, output_padding,
output_shape) as implicit GEMMs on the PE.

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

Few input channels (a first layer) would leave most PE rows idle and pay one matmul per tap:
then a SBUF-to-SBUF DMA stacks the windows of several taps on partitions so that one matmul
contracts over (channel, tap) pairs ("tap packing"; with a column stride the band is first
de-interleaved by column phase on ACT/DVE so the stacking DMA moves whole rows). A cost estimate
decides. Bands of the next block are emitted before the current block's compute so loads overlap
the PE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import DeviceValue, LoweringContext
from ..errors import CompileError
from ..graph import Node
from .lib.ap import hbm_pattern, sbuf_ap, sub
from .lib.conv import (
    Band,
    ConvSpec,
    Pass,
    Unit,
    auto_pad,
    channel_units,
    check_out,
    conv_operands,
    conv_spec,
    int_attrs,
    load_band,
    output_block,
    stationary_weights,
)
from .lib.epilogue import epilogue_for
from .lib.pe import accumulate, device_cast, operand_dtype, pe_limits
from .lib.pools import SlotPool, padded
from .lib.registry import kernel


@dataclass
class Pack:
    """Taps contracted by one matmul: partitions hold (channel, tap) pairs, channel-major. The
    taps are `rows` kernel rows of `per_row` taps, `col_step` band columns apart."""

    taps: list
    rows: int
    per_row: int
    col_step: int


# ---- kernels ------------------------------------------------------------------------------------

@kernel("Conv")
def conv(ctx: LoweringContext, node: Node) -> None:
    x, w_shape, out = conv_operands(ctx, node)
    run_conv(ctx, node, _conv_spec(ctx, node, x, w_shape, out), x, out)


@kernel("ConvTranspose")
def conv_transpose(ctx: LoweringContext, node: Node) -> None:
    x, w_shape, out = conv_operands(ctx, node)
    run_conv(ctx, node, _transpose_spec(ctx, node, x, w_shape, out), x, out)


def _conv_spec(ctx: LoweringContext, node: Node, x: DeviceValue, w_shape, out: DeviceValue) -> ConvSpec:
    wc = ctx.const(node.inputs[1])
    return conv_spec(node, x.shape, w_shape, out.shape, wc, None if wc is not None else ctx.value(node.inputs[1]))


def _transpose_spec(ctx: LoweringContext, node: Node, x: DeviceValue, w_shape, out: DeviceValue) -> ConvSpec:
    """ConvTranspose as phases of stride-1 correlations (module docstring)."""
    sp = len(x.shape) - 2
    n, cin = x.shape[:2]
    g = int(node.attrs.get("group", 1))
    cout = w_shape[1] * g
    k = list(w_shape[2:])
    strides = int_attrs(node, "strides", [1] * sp)
    dil = int_attrs(node, "dilations", [1] * sp)
    opad = int_attrs(node, "output_padding", [0] * sp)
    pads = int_attrs(node, "pads", [0] * (2 * sp))
    out_sp = tuple(out.shape[2:])
    auto = auto_pad(node)
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
    check_out(node, (oh, ow) if sp == 2 else (ow,), out_sp)
    if cin % g or w_shape[0] != cin:
        raise CompileError(f"{node.name}: weight {w_shape} does not match {cin} input channels "
                           f"in {g} groups")
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
    return ConvSpec(n, cin, h, w, cout, oh, ow, g, k[0] * k[1], 1, 1, strides[0], strides[1], passes,
                    weight, None if wc is not None else ctx.value(node.inputs[1]), transposed=True,
                    kernel_hw=(k[0], k[1]), kernel_dil=(dil[0], dil[1]))


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
    phase_elems: int = 0  # de-interleaved band: elements per column phase region


def _extent(spec: ConvSpec, axis: int) -> tuple[int, int]:
    """(min, max) input offset over all taps of all passes along rows (0) or columns (1)."""
    vals = [t[1 + axis] for ps in spec.passes for t in ps.taps] or [0]
    return min(vals), max(vals)


class ConvLowering:
    """Emits one Conv/ConvTranspose node: weights and biases resident (or streamed when large), then
    per block of output pixels: input bands per channel tile, matmuls per PSUM tile, epilogue into
    an output tile, one store."""

    def __init__(self, ctx: LoweringContext, node: Node, spec: ConvSpec, x: DeviceValue, out: DeviceValue):
        self.ctx, self.node, self.spec, self.x, self.out = ctx, node, spec, x, out
        self.em = ctx.em
        self.lim = pe_limits(ctx)
        self.dtype = operand_dtype(ctx, node)
        self.isz = itemsize(self.dtype)
        self.cpc = ctx.arch.raw["pe"]["cycles_per_column"].get(self.dtype, 4)
        self.units = channel_units(spec, self.lim.k, self.lim.m)
        self.qh = max(ps.qh for ps in spec.passes)
        self.qw = max(ps.qw for ps in spec.passes)
        (self.ch_lo, self.ch_hi), (self.cw_lo, self.cw_hi) = _extent(spec, 0), _extent(spec, 1)
        self.n_bands = max(len(u.cin_tiles) for u in self.units)
        self.packs, self.deint = None, 1

    # -- planning ---------------------------------------------------------------------------------
    def _plan(self, rows_per_tile: int, tiles_per_block: int, max_images: int) -> Plan:
        spec, nmax, qh, qw = self.spec, self.lim.n, self.qh, self.qw
        if qh * qw <= nmax and rows_per_tile >= qh:  # whole images per PSUM tile
            nb = min(spec.n, max_images, max(1, nmax // (qh * qw)))
            p = Plan(nb, qh, qw, qh, qw)
        elif qw <= nmax:
            qt = min(qh, rows_per_tile)
            p = Plan(1, min(qh, qt * tiles_per_block), qw, qt, qw)
        else:
            p = Plan(1, 1, min(qw, nmax), 1, min(qw, nmax))
        p.br = (p.qb - 1) * spec.ish + self.ch_hi - self.ch_lo + 1
        p.bc = (p.pb - 1) * spec.isw + self.cw_hi - self.cw_lo + 1
        p.bc = -(-p.bc // self.deint) * self.deint  # whole column phases
        p.band_bytes = p.nb * p.br * p.bc * self.isz
        if self.deint > 1:  # de-interleaved copy: one 256-byte aligned region per column phase
            p.phase_elems = padded(p.nb * p.br * (p.bc // self.deint) * self.isz) // self.isz
            p.band_bytes = max(p.band_bytes, self.deint * p.phase_elems * self.isz)
        p.out_bytes = p.nb * min(p.qb * spec.osh, spec.oh) * min(p.pb * spec.osw, spec.ow) * 4
        return p

    def _fit_plan(self, w_bytes: int, max_images: int, stack_bytes: int) -> Plan | int:
        """The largest blocks that fit the SBUF budget, or (an int) the bytes one output row needs."""
        nmax, budget = self.lim.n, self.lim.sbuf_budget
        rows_per_tile = max(1, nmax // self.qw) if self.qw <= nmax else 1
        tiles_per_block = 1 if len(self.spec.passes) > 1 else 4
        bias_tiles = sum(len(u.cout_tiles) for u in self.units) if self.node.input(2) else 0
        while True:
            p = self._plan(rows_per_tile, tiles_per_block, max_images)
            bands = 2 * self.n_bands * p.band_bytes * (2 if self.deint > 1 else 1)
            need = w_bytes + bands + 3 * p.out_bytes + 256 * (bias_tiles + 1) + stack_bytes
            if need <= budget:
                return p
            if tiles_per_block > 1:
                tiles_per_block //= 2
            elif rows_per_tile > 1:
                rows_per_tile //= 2
            else:
                return need

    def _tap_packs(self) -> tuple[list[Pack] | None, int]:
        """Taps grouped so that one matmul contracts over (channel, tap) pairs, their windows stacked
        on partitions by one SBUF-to-SBUF DMA per pack. Only for a conv with constant weights whose
        input channels fit one tile, and only when it pays (PE time saved against DMA time). With
        a column stride the band is first de-interleaved by column phase (an ACT copy) so that the
        stacking DMA moves whole rows; a pack then holds the taps of one phase.
        Returns (packs, de-interleave factor)."""
        spec = self.spec
        kh, kw = spec.kernel_hw
        dh, dw = spec.kernel_dil
        if spec.transposed or spec.taps == 1 or self.n_bands != 1 or spec.weight is None:
            return None, 1
        ct = max(u.cin_tiles[0][1] for u in self.units)
        isw = spec.isw
        phases: dict[int, list[int]] = {}
        for j in range(kw):
            phases.setdefault((j * dw) % isw, []).append(j)
        taps = spec.passes[0].taps
        packs = []
        for _, js in sorted(phases.items()):
            step = (js[1] - js[0]) * dw // isw if isw > 1 and len(js) > 1 else dw
            if ct * len(js) <= self.lim.k:  # whole kernel rows of this phase
                rows = min(kh, self.lim.k // (ct * len(js)))
                for i0 in range(0, kh, rows):
                    r = min(rows, kh - i0)
                    pack_taps = [taps[i * kw + j] for i in range(i0, i0 + r) for j in js]
                    packs.append(Pack(pack_taps, r, len(js), step))
                continue
            per = max(1, self.lim.k // ct)  # pieces of kernel rows
            for i in range(kh):
                for j0 in range(0, len(js), per):
                    piece = js[j0:j0 + per]
                    packs.append(Pack([taps[i * kw + j] for j in piece], 1, len(piece), step))
        # time per PSUM tile with and without stacking
        npix = min(self.lim.n, self.qh * self.qw)
        rows_per_tile = max(1, npix // self.qw)
        dma = self.ctx.arch.raw["dma"]
        per_cycle = self.ctx.arch.raw["hbm"]["bandwidth_gbps"] / self.ctx.arch.clock_ghz
        stacked = sum(ct * len(pk.taps) for pk in packs if len(pk.taps) > 1)
        runs = stacked * rows_per_tile  # whole rows (de-interleaved when strided)
        dma_time = (stacked * npix * self.isz + runs * dma["run_overhead_bytes"]) / per_cycle
        band = ((rows_per_tile - 1) * spec.ish + (kh - 1) * dh + 1) * (self.qw * isw + (kw - 1) * dw)
        deint_time = band + 224 if isw > 1 else 0
        packed = max(len(packs) * (64 + npix * self.cpc), dma_time, deint_time) + dma["latency_cycles"] / 2
        unpacked = spec.taps * (64 + npix * self.cpc)
        if packed >= 0.75 * unpacked:  # the estimate ignores DMA contention: demand a clear gain
            return None, 1
        return packs, isw

    # -- weights ----------------------------------------------------------------------------------
    def _weight_layout(self, ct: int) -> tuple[int, int]:
        """(partitions, stationary blocks of `ot` columns) of a weight tile: one block per tap, or
        one per pack with its (channel, tap) pairs on partitions."""
        if self.packs is None:
            return ct, self.spec.taps
        return ct * max(len(pk.taps) for pk in self.packs), len(self.packs)

    def _weight_const(self, ci: tuple[int, int], co: tuple[int, int]) -> np.ndarray:
        packs = None if self.packs is None else [[t for t, _, _ in pk.taps] for pk in self.packs]
        return stationary_weights(self.spec, ci, co, packs)

    def _load_weight(self, u: Unit, j: int, i: int) -> AP:
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
        src = hbm_pattern(wv, base, ((s_ci, ct), (1, t), (s_co, ot)))  # packs need constant weights
        self.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
        return tile

    # -- main -------------------------------------------------------------------------------------
    def _candidates(self):
        """(packs, de-interleave, output channels per tile) to try, fastest first: tap packing if it
        pays, then the unpacked path; each with output-channel tiles halved until the weights fit."""
        mmaxes = [self.lim.m >> i for i in range(self.lim.m.bit_length())]
        packs = self._tap_packs()
        if packs[0] is not None:
            yield from ((*packs, m) for m in mmaxes)
        yield from ((None, 1, m) for m in mmaxes)

    def _sizes(self) -> tuple[list[int], bool, int, int]:
        """(weight tile bytes, weights resident, weight bytes in SBUF, stacking slots) for the current
        units and packs."""
        lim = self.lim
        w_tiles = [padded(self._weight_layout(ct)[1] * ot * self.isz)
                   for u in self.units for _, ot in u.cout_tiles for _, ct in u.cin_tiles]
        w_total = sum(w_tiles)
        w_resident = w_total <= lim.sbuf_budget // 4
        w_bytes = w_total if w_resident else 2 * self.n_bands * max(w_tiles)
        # stacked windows of two PSUM tiles in flight, so stacking overlaps the previous tile's matmuls
        stacks = 2 * sum(len(pk.taps) > 1 for pk in self.packs) if self.packs else 0
        return w_tiles, w_resident, w_bytes, stacks

    def choose_plan(self) -> Plan:
        """The first candidate (`_candidates`) whose blocks fit the SBUF budget; it sets the units,
        packs and de-interleave factor the emission uses. The same call answers `xpu check`."""
        need = 0
        for packs, deint, mmax in self._candidates():
            self.packs, self.deint = packs, deint
            self.units = channel_units(self.spec, self.lim.k, mmax)
            _, _, w_bytes, stacks = self._sizes()
            plan = self._fit_plan(w_bytes, 1 if packs else self.spec.n, stacks * padded(self.lim.n * self.isz))
            if isinstance(plan, Plan):
                return plan
            need = plan if not need else min(need, plan)
        raise CompileError(f"{self.node.name}: one output row of this convolution needs {need} bytes of SBUF "
                           f"per partition ({self.lim.sbuf_budget} available)")

    def run(self) -> None:
        spec, em, lim = self.spec, self.em, self.lim
        if self.out.size == 0:
            return
        plan = self.choose_plan()
        w_tiles, w_resident, _, stacks = self._sizes()
        self.plan = plan

        if spec.weight is not None:
            for u in self.units:
                for j, co in enumerate(u.cout_tiles):
                    for i, ci in enumerate(u.cin_tiles):
                        arr = device_cast(self._weight_const(ci, co), self.dtype)
                        u.weights[(j, i)] = self.ctx.new_const(f"w{len(u.weights)}", arr)
        self.w_pool = SlotPool(em.sbuf, max(w_tiles), len(w_tiles) if w_resident else 2 * self.n_bands)
        self.band_pool = SlotPool(em.sbuf, plan.band_bytes, 2 * self.n_bands * (2 if self.deint > 1 else 1))
        self.out_pool = SlotPool(em.sbuf, plan.out_bytes, 3)
        self.stack_pool = SlotPool(em.sbuf, lim.n * self.isz, stacks) if stacks else None
        self.psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
        bias = {}
        if self.node.input(2):
            bias_pool = SlotPool(em.sbuf, 4, sum(len(u.cout_tiles) for u in self.units))
            bv = self.ctx.value(self.node.input(2))
            for ui, u in enumerate(self.units):
                for j, (o0, ot) in enumerate(u.cout_tiles):
                    tile = sbuf_ap(bias_pool.take(), ot, 1, "f32")
                    em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(bv, o0, ((1, ot), (1, 1)))})
                    bias[(ui, j)] = tile
        resident = {}
        if w_resident:
            for ui, u in enumerate(self.units):
                for j in range(len(u.cout_tiles)):
                    for i in range(len(u.cin_tiles)):
                        resident[(ui, j, i)] = self._load_weight(u, j, i)
        self.epi = epilogue_for(self.ctx, self.node)

        blocks = [Block(n0, min(plan.nb, spec.n - n0), q0, min(plan.qb, self.qh - q0),
                        p0, min(plan.pb, self.qw - p0))
                  for n0 in range(0, spec.n, plan.nb) for q0 in range(0, self.qh, plan.qb)
                  for p0 in range(0, self.qw, plan.pb)]
        work = [(blk, ui, u) for blk in blocks for ui, u in enumerate(self.units)]
        # the bands of the next (block, unit) are emitted before this one's compute: engines run
        # their streams in order, so this is what lets the loads overlap the matmuls
        loaded = self._load_bands(*work[0][::2])
        for step, (blk, ui, u) in enumerate(work):
            bands = loaded
            if step + 1 < len(work):
                loaded = self._load_bands(*work[step + 1][::2])
            for j, (o0, ot) in enumerate(u.cout_tiles):
                wts = [resident[(ui, j, i)] if w_resident else self._load_weight(u, j, i)
                       for i in range(len(u.cin_tiles))]
                self._block_outputs(blk, u, bands, wts, o0, ot, bias.get((ui, j)))

    def _load_bands(self, blk: Block, u: Unit) -> list[AP]:
        return [self._load_band(blk, c0, ct) for c0, ct in u.cin_tiles]

    def _band_origin(self, blk: Block) -> tuple[int, int]:
        return blk.q0 * self.spec.ish + self.ch_lo, blk.p0 * self.spec.isw + self.cw_lo

    def _load_band(self, blk: Block, c0: int, ct: int) -> AP:
        """Input rows x columns a block reads, of channels [c0, c0+ct) of its images, zero outside
        the image, as an SBUF tile [ct, nb*br*bc]."""
        spec, p = self.spec, self.plan
        r_lo, c_lo = self._band_origin(blk)
        br, bc = p.br, p.bc
        tile = sbuf_ap(self.band_pool.take(), ct, blk.nb * br * bc, self.dtype)
        if not load_band(self.em, tile, self.x, spec, Band(blk.n0, blk.nb, c0, ct, r_lo, c_lo, br, bc), 0.0):
            return tile
        if self.deint == 1:
            return tile
        # one region per column phase a holding columns a, a+s, a+2s, ... (copies alternate ACT/DVE)
        s_, wa = self.deint, bc // self.deint
        phased = sbuf_ap(self.band_pool.take(), ct, s_ * p.phase_elems, self.dtype)
        for a in range(s_):
            self.em.emit(("act", "dve")[a % 2], "copy", {
                "dst": sub(phased, ct, a * p.phase_elems, ((1, blk.nb * br * wa),)),
                "src": sub(tile, ct, a, ((br * bc, blk.nb), (bc, br), (s_, wa)))})
        return phased

    def _row(self) -> int:
        """Elements between two rows of a band as the matmuls read it."""
        return self.plan.bc // self.deint

    def _col(self, c: int) -> int:
        """Element offset inside a band row of band column `c` (after de-interleaving)."""
        s_ = self.deint
        return c if s_ == 1 else (c % s_) * self.plan.phase_elems + c // s_

    def _block_outputs(self, blk: Block, u: Unit, bands: list[AP], wts: list[AP], o0: int, ot: int,
                       bias: AP | None) -> None:
        """All output pixels of a block for output channels [o0, o0+ot): PSUM tiles, epilogues
        into one SBUF tile (phases interleaved), one store."""
        spec, em, plan = self.spec, self.em, self.plan
        oh_lo, ow_lo = blk.q0 * spec.osh, blk.p0 * spec.osw
        rows_out = min((blk.q0 + blk.qb) * spec.osh, spec.oh) - oh_lo
        cols_out = min((blk.p0 + blk.pb) * spec.osw, spec.ow) - ow_lo
        res = sbuf_ap(self.out_pool.take(), ot, blk.nb * rows_out * cols_out, "f32")
        for ps in spec.passes:
            q_end, p_end = min(blk.q0 + blk.qb, ps.qh), min(blk.p0 + blk.pb, ps.qw)
            for qs in range(blk.q0, q_end, plan.qt):
                qn = min(plan.qt, q_end - qs)
                for pss in range(blk.p0, p_end, plan.pt):
                    pn = min(plan.pt, p_end - pss)
                    acc = AP("psum", self.psum_pool.take(), ((1, blk.nb * qn * pn),), "f32", 0, ot)
                    steps = self._steps(blk, u, bands, wts, ot, ps, qs, qn, pss, pn)
                    accumulate(em, acc, steps)
                    if not steps:  # no tap lands on this phase: the output is the bias alone
                        em.emit("dve", "memset", {"dst": acc}, value=0.0)
                    dst_off = (ps.oh0 + qs * spec.osh - oh_lo) * cols_out + (ps.ow0 + pss * spec.osw - ow_lo)
                    dims = ((rows_out * cols_out, blk.nb), (spec.osh * cols_out, qn), (spec.osw, pn))
                    self.epi.emit(self.ctx, acc, sub(res, ot, dst_off, dims), row_bias=bias)
        dst = output_block(self.out, spec, blk.n0, blk.nb, o0, ot, oh_lo, rows_out, ow_lo, cols_out)
        em.emit("dma", "dma_copy", {"dst": dst, "src": res})

    def _steps(self, blk: Block, u: Unit, bands: list[AP], wts: list[AP], ot: int, ps: Pass, qs: int, qn: int,
               pss: int, pn: int) -> list[tuple[AP, AP]]:
        """(stationary, moving) operand pairs accumulated into one PSUM tile: sub-grid rows
        [qs, qs+qn) x columns [pss, pss+pn) of pass `ps`."""
        spec, em = self.spec, self.em
        br, row = self.plan.br, self._row()
        r_lo, c_lo = self._band_origin(blk)
        window = ((br * row, blk.nb), (spec.ish * row, qn), (1 if self.deint > 1 else spec.isw, pn))

        def at(ch: int, cw: int) -> int:  # element offset in the band of the window of the tap reading (ch, cw)
            return (qs * spec.ish + ch - r_lo) * row + self._col(pss * spec.isw + cw - c_lo)

        steps = []
        for (_, ct), band, wt in zip(u.cin_tiles, bands, wts):
            if self.packs is None:
                for t, ch, cw in ps.taps:
                    steps.append((sub(wt, ct, t * ot, ((1, ot),)), sub(band, ct, at(ch, cw), window)))
                continue
            for k, pk in enumerate(self.packs):
                stat = sub(wt, ct * len(pk.taps), k * ot, ((1, ot),))
                _, ch, cw = pk.taps[0]
                if len(pk.taps) == 1:
                    steps.append((stat, sub(band, ct, at(ch, cw), window)))
                    continue
                stacked = sbuf_ap(self.stack_pool.take(), ct * len(pk.taps), blk.nb * qn * pn, self.dtype)
                taps = ((spec.kernel_dil[0] * row, pk.rows), (pk.col_step, pk.per_row))
                em.emit("dma", "dma_copy", {"dst": stacked, "src": sub(band, ct, at(ch, cw), taps + window)})
                steps.append((stat, stacked))
        return steps


def run_conv(ctx: LoweringContext, node: Node, spec: ConvSpec, x: DeviceValue, out: DeviceValue) -> None:
    """Emit a Conv or ConvTranspose described by `spec`."""
    ConvLowering(ctx, node, spec, x, out).run()


def conv_plan_problem(ctx: LoweringContext, node: Node) -> str | None:
    """Why this Conv/ConvTranspose cannot be planned on the device (None: it can), by the planner the
    lowering uses, on a throwaway context: `xpu check` says "supported" only for what compiles."""
    try:
        x, w_shape, out = conv_operands(ctx, node)
        spec = (_transpose_spec if node.op_type == "ConvTranspose" else _conv_spec)(ctx, node, x, w_shape, out)
        if out.size == 0:
            return None
        ConvLowering(ctx, node, spec, x, out).choose_plan()
    except CompileError as exc:
        return str(exc)
    return None
