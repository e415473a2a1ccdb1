"""int8 x int8 -> int32 MatMul and Conv on the PE (the XpuQLinearMatMul / XpuQLinearConv nodes that
quantize.py creates; the node format is documented there).

The PE multiplies the quantized activations q_x (i8) by the quantized weights q_w (i8, symmetric,
one scale per output channel) and accumulates exactly in i32 PSUM. With the activation zero point
z_x the float result is
    y[c] = s_x s_w[c] sum((q_x - z_x) q_w[c]) + bias[c]
         = scale[c] * acc[c] + (bias[c] - scale[c] z_x sum(q_w[c]))
so the zero point costs nothing at run time: it is folded into a per-channel bias at compile time
(a convolution pads with z_x, the quantized zero, so every window sums the same weights). uint8
activations are shifted to int8 (q - 128, and z_x - 128) by one DVE op after the load.

The dequantizing epilogue evacuates PSUM: with output channels on partitions (Conv, and MatMul
with few rows) one ACT instruction computes act(acc * scale + bias) with per-partition scale and
bias; with rows on partitions (MatMul with many rows) two DVE tensor_tensor ops apply the scale and
bias rows. A fused output QuantizeLinear (`fused_quantize`) is folded into the same instructions
where the activation allows it (none or Relu: relu(v)/s = relu(v/s)), the write into an i32/i8 tile
doing the round-half-even and saturation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP
from device_model.numerics import HARDSIGMOID_ALPHA, HARDSIGMOID_BETA

from ..context import DeviceValue, LoweringContext
from ..emitter import Emitter
from ..errors import CompileError
from ..graph import Node
from .lib.ap import hbm_pattern, sbuf_ap, sub
from .lib.conv import Band, channel_units, conv_operands, conv_spec, load_band, output_block, stationary_weights
from .lib.epilogue import act_function
from .lib.pe import Mat, PeLimits, accumulate, load_kmajor, pe_limits
from .lib.pools import SlotPool, padded
from .lib.registry import kernel

PSUM_I32 = 512      # i32 accumulators per PSUM bank row
CP_MAX_ELEMS = 4096  # MatMul outputs up to this size keep channels on partitions (transposed store)


# ---- quantization parameters ------------------------------------------------------------------------

@dataclass
class QParams:
    x_scale: float         # activation scale
    x_zero: int            # activation zero point in the int8 domain (uint8 ones shifted by -128)
    quantize_input: bool   # input 0 is float: quantize it on load (`fused_quantize_input`)
    scale: np.ndarray      # [C] f32: s_x * s_w[c]
    bias: np.ndarray       # [C] f32: bias with the zero-point correction folded in
    act: dict | None
    out_scale: float | None = None   # fused output QuantizeLinear
    out_zero: int = 0
    out_dtype: str = "f32"


def qparams(ctx: LoweringContext, node: Node, w_int: np.ndarray, channel_axis: int) -> QParams:
    """Everything the loads and the epilogue need, from the node's constant inputs. `w_int` is the
    int8 weight, `channel_axis` its output-channel axis."""
    x = ctx.value(node.inputs[0])
    quantize_input = bool(node.attrs.get("fused_quantize_input", 0))
    s_x = _const(ctx, node, 1, "activation scale").astype(np.float32).reshape(-1)
    z_x = _const(ctx, node, 2, "activation zero point", optional=True)
    q_dtype = "u8" if z_x is None or z_x.dtype == np.uint8 else "i8"
    if not quantize_input:
        if x.dtype not in ("i8", "u8"):
            raise CompileError(f"{node.name}: {node.op_type} input must be int8 or uint8, got {x.dtype}")
        q_dtype = x.dtype
    elif x.dtype not in ("f32", "bf16", "f16"):
        raise CompileError(f"{node.name}: {node.op_type} quantizes a float input, got {x.dtype}")
    z_x = 0 if z_x is None else int(np.asarray(z_x).reshape(-1)[0])
    if q_dtype == "u8":
        z_x -= 128
    channels = w_int.shape[channel_axis]
    s_w = np.broadcast_to(_const(ctx, node, 4, "weight scale").astype(np.float64).reshape(-1), (channels,))
    scale = (float(s_x[0]) * s_w).astype(np.float32)
    wsum = np.moveaxis(w_int.astype(np.int64), channel_axis, 0).reshape(channels, -1).sum(axis=1)
    bias = np.zeros(channels, np.float64)
    if node.input(5):
        bias += np.broadcast_to(_const(ctx, node, 5, "bias").astype(np.float64).reshape(-1), (channels,))
    bias -= scale.astype(np.float64) * z_x * wsum
    p = QParams(float(s_x[0]), z_x, quantize_input, scale, bias.astype(np.float32),
                node.attrs.get("fused_activation"))
    fq = node.attrs.get("fused_quantize")
    if fq:
        p.out_scale, p.out_zero = float(fq["scale"]), int(fq.get("zero_point", 0))
        p.out_dtype = {"int8": "i8", "uint8": "u8"}[np.dtype(ctx.graph.values[node.outputs[0]].dtype).name]
    return p


def _const(ctx: LoweringContext, node: Node, index: int, what: str, optional: bool = False) -> np.ndarray | None:
    name = node.input(index)
    if not name:
        if optional:
            return None
        raise CompileError(f"{node.name}: {node.op_type} needs its {what} (input {index})")
    c = ctx.const(name)
    if c is None:
        raise CompileError(f"{node.name}: {node.op_type} {what} must be a constant")
    return np.asarray(c)


def _folds_quantize(p: QParams) -> bool:
    """A fused QuantizeLinear folds into the affine epilogue when the activation commutes with a
    positive scale."""
    return p.out_scale is not None and (not p.act or p.act["name"] == "Relu")


# ---- epilogue pieces ---------------------------------------------------------------------------------

def _dve_act(em: Emitter, tile: AP, act: dict) -> None:
    """The activations the DVE applies in place (Clip, HardSigmoid with other parameters, Relu)."""
    name = act["name"]
    if name == "Relu":
        em.emit("dve", "tensor_scalar", {"dst": tile, "src": tile}, op0="max", s0=0.0)
    elif name == "Clip":
        lo, hi = act.get("min"), act.get("max")
        attrs = {}
        if lo is not None:
            attrs.update(op0="max", s0=float(lo))
        if hi is not None:
            attrs.update({("op1" if attrs else "op0"): "min", ("s1" if attrs else "s0"): float(hi)})
        if attrs:
            em.emit("dve", "tensor_scalar", {"dst": tile, "src": tile}, **attrs)
    elif name == "HardSigmoid":
        alpha, beta = float(act.get("alpha", HARDSIGMOID_ALPHA)), float(act.get("beta", HARDSIGMOID_BETA))
        em.emit("dve", "tensor_scalar", {"dst": tile, "src": tile}, op0="mul", s0=alpha, op1="add", s1=beta)
        em.emit("dve", "tensor_scalar", {"dst": tile, "src": tile}, op0="max", s0=0.0, op1="min", s1=1.0)
    else:
        raise CompileError(f"fused activation {name} is not supported by the int8 epilogue")


def _requantize(em: Emitter, src: AP, dst: AP, scale: float | None, zero: int, mid: AP | None) -> None:
    """dst (i8/u8) = saturate(round(src / scale) + zero); scale None: src is already src/scale
    rounded (an i32 tile)."""
    if scale is None:
        em.emit("dve", "tensor_scalar", {"dst": dst, "src": src}, op0="add", s0=int(zero))
        return
    if zero == 0:
        em.emit("dve", "tensor_scalar", {"dst": dst, "src": src}, op0="div", s0=float(scale))
        return
    em.emit("dve", "tensor_scalar", {"dst": mid, "src": src}, op0="div", s0=float(scale))
    em.emit("dve", "tensor_scalar", {"dst": dst, "src": mid}, op0="add", s0=int(zero))


class ChannelEpilogue:
    """Channels on partitions: act(acc * scale + bias) with per-partition scale and bias, from one
    [C, 2] constant (loaded once per channel tile)."""

    def __init__(self, ctx: LoweringContext, node: Node, p: QParams, channels: int):
        self.ctx, self.em, self.p = ctx, ctx.em, p
        self.mode = ctx.act_mode(node)
        scale, bias = p.scale.astype(np.float64), p.bias.astype(np.float64)
        self.fold = _folds_quantize(p)
        if self.fold:  # relu(v)/s = relu(v/s): the ACT output is already in output quanta
            scale, bias = scale / p.out_scale, bias / p.out_scale
        table = np.stack([scale, bias], axis=1).astype(np.float32)
        self.table = ctx.new_const("scale_bias", np.ascontiguousarray(table))
        self.tiles: dict[tuple[int, int], AP] = {}
        self.pool = None
        self.func, self.attrs = act_function(None if self.fold else p.act)
        if self.fold and p.act:
            self.func = "relu"

    def reserve(self, count: int) -> None:
        self.pool = SlotPool(self.em.sbuf, 8, count)

    def _params(self, o0: int, ot: int) -> AP:
        key = (o0, ot)
        if key not in self.tiles:
            tile = sbuf_ap(self.pool.take(), ot, 2, "f32")
            self.em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(self.table, 2 * o0, ((1, 2 * ot),))})
            self.tiles[key] = tile
        return self.tiles[key]

    def load(self, o0: int, ot: int) -> None:
        self._params(o0, ot)

    def out_dtype(self) -> str:
        return self.p.out_dtype if self.p.out_scale is not None else "f32"

    def emit(self, acc: AP, res: AP, o0: int, mid_pool: SlotPool | None = None) -> None:
        """acc [ot, F] (psum i32) -> res [ot, F] in the output dtype."""
        em, p = self.em, self.p
        ot = acc.pcount
        params = self._params(o0, ot)
        scale_ap, bias_ap = sub(params, ot, 0, ((1, 1),)), sub(params, ot, 1, ((1, 1),))
        quantized = p.out_scale is not None
        free = res.free_size
        direct = not quantized or (self.fold and p.out_zero == 0)  # the write rounds and saturates
        work = res if direct else sbuf_ap(mid_pool.take(), ot, free, "i32" if self.fold else "f32")
        func, attrs = self.func, self.attrs
        dve_act = func is None
        em.emit("act", "activate", {"dst": work, "src": acc, "scale_ap": scale_ap, "bias_ap": bias_ap},
                func="identity" if dve_act else func, mode=self.mode, **attrs)
        if dve_act:
            _dve_act(em, work, p.act)
        if direct:
            return
        if self.fold:
            _requantize(em, work, res, None, p.out_zero, None)
        else:
            mid = sbuf_ap(mid_pool.take(), ot, free, "i32") if p.out_zero else None
            _requantize(em, work, res, p.out_scale, p.out_zero, mid)


# ---- loads ---------------------------------------------------------------------------------------------

def to_int8(em: Emitter, tile: AP, pool: SlotPool, p: QParams, mid_pool: SlotPool | None = None) -> AP:
    """The PE operand for a loaded activation tile: i8 as it is; u8 shifted (q - 128); a float
    tile quantized (round(x / s) + z, saturated: for a uint8 quantization the saturation to
    [0, 255] followed by the shift equals saturating round(x / s) + z - 128 to int8)."""
    if tile.dtype == "i8":
        return tile
    out = AP("sbuf", pool.take(), tile.dims, "i8", tile.pstart, tile.pcount)
    if tile.dtype == "u8":
        em.emit("dve", "tensor_scalar", {"dst": out, "src": tile}, op0="sub", s0=128)
    elif p.x_zero == 0:
        em.emit("dve", "tensor_scalar", {"dst": out, "src": tile}, op0="div", s0=p.x_scale)
    else:
        mid = AP("sbuf", mid_pool.take(), tile.dims, "i32", tile.pstart, tile.pcount)
        em.emit("dve", "tensor_scalar", {"dst": mid, "src": tile}, op0="div", s0=p.x_scale)
        em.emit("dve", "tensor_scalar", {"dst": out, "src": mid}, op0="add", s0=p.x_zero)
    return out


# ---- MatMul ----------------------------------------------------------------------------------------------

@kernel("XpuQLinearMatMul")
def qlinear_matmul(ctx: LoweringContext, node: Node) -> None:
    w = _const(ctx, node, 3, "weight")
    if w.ndim != 2:
        raise CompileError(f"{node.name}: XpuQLinearMatMul weight must be 2-D [K, N], got {w.shape}")
    w = w.astype(np.int8)
    k, n = w.shape
    x = ctx.value(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if x.shape[-1] != k:
        raise CompileError(f"{node.name}: input {x.shape} does not match the weight [K={k}, N={n}]")
    m = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 1
    if out.size == 0:
        return
    p = qparams(ctx, node, w, 1)
    lim = pe_limits(ctx)
    wv = ctx.new_const("w_q", np.ascontiguousarray(w))
    nk = -(-k // lim.k)
    if m * n <= CP_MAX_ELEMS and nk * padded(n) <= lim.sbuf_budget // 3:
        _matmul_channels_on_partitions(ctx, node, p, x, wv, out, m, k, n, lim)
    else:
        _matmul_rows_on_partitions(ctx, node, p, x, wv, out, m, k, n, lim)


class XLoader:
    """X[m0:m0+mt, :]^T as K-major int8 tiles [kt, mt], one per K tile (converted after the load
    when X is uint8 or float). Resident: all K tiles of the current rows stay loaded (reused by
    every output tile); otherwise each use loads its tile."""

    def __init__(self, ctx: LoweringContext, x: DeviceValue, p: QParams, k: int, k_tiles: list[tuple[int, int]],
                 mt_max: int, resident: bool):
        self.ctx, self.x, self.p, self.k, self.k_tiles = ctx, x, p, k, k_tiles
        self.raw = "f32" if p.quantize_input else x.dtype
        self.resident = resident
        count = XLoader.count(len(k_tiles), resident)
        em = ctx.em
        self.pool = SlotPool(em.sbuf, mt_max * itemsize(self.raw), count)
        self.convert = SlotPool(em.sbuf, mt_max, count) if self.raw != "i8" else None
        self.mid = SlotPool(em.sbuf, 4 * mt_max, 2) if p.quantize_input and p.x_zero else None
        self._rows, self._tiles = None, []

    @staticmethod
    def count(nk: int, resident: bool) -> int:
        return 2 * nk if resident else 3

    @staticmethod
    def bytes(p: QParams, x: DeviceValue, nk: int, mt_max: int, resident: bool) -> int:
        raw = 4 if p.quantize_input else itemsize(x.dtype)
        return (XLoader.count(nk, resident) * (padded(mt_max * raw) + padded(mt_max))
                + 2 * padded(4 * mt_max))

    def _load(self, m0: int, mt: int, ki: int) -> AP:
        k0, kt = self.k_tiles[ki]
        tile = sbuf_ap(self.pool.take(), kt, mt, self.raw)
        load_kmajor(self.ctx, Mat(self.x, m0 * self.k + k0, 1, self.k), kt, mt, 1, tile)
        return to_int8(self.ctx.em, tile, self.convert, self.p, self.mid)

    def tile(self, m0: int, mt: int, ki: int) -> AP:
        if not self.resident:
            return self._load(m0, mt, ki)
        if self._rows != (m0, mt):
            self._rows, self._tiles = (m0, mt), [self._load(m0, mt, i) for i in range(len(self.k_tiles))]
        return self._tiles[ki]


def _fit_rows(node: Node, lim: PeLimits, rows_max: int, need: Callable[[int, bool], int]) -> tuple[int, bool]:
    """(rows per tile, X resident) within the SBUF budget: `need(rows, resident)` gives the bytes;
    resident X first, then fewer rows, then X reloaded per use."""
    for resident in (True, False):
        rows = rows_max
        while rows >= 1:
            if need(rows, resident) <= lim.sbuf_budget:
                return rows, resident
            if rows == 1:
                break
            rows = max(1, rows // 2)
    raise CompileError(f"{node.name}: int8 matmul tiles do not fit SBUF ({need(1, False)} bytes per "
                       f"partition, {lim.sbuf_budget} available)")


def _weight_tiles(ctx: LoweringContext, wv: DeviceValue, k_tiles: list[tuple[int, int]], n: int,
                  pool: SlotPool) -> list[AP]:
    tiles = []
    for k0, kt in k_tiles:
        tile = sbuf_ap(pool.take(), kt, n, "i8")
        ctx.em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(wv, k0 * n, ((1, kt * n),))})
        tiles.append(tile)
    return tiles


def _matmul_channels_on_partitions(ctx: LoweringContext, node: Node, p: QParams, x: DeviceValue, wv: DeviceValue,
                                   out: DeviceValue, m: int, k: int, n: int, lim: PeLimits) -> None:
    """out^T[n, m] = W^T X^T: channels on partitions, one ACT epilogue, transposed store (few rows)."""
    em = ctx.em
    k_tiles = [(k0, min(lim.k, k - k0)) for k0 in range(0, k, lim.k)]
    n_tiles = [(n0, min(lim.m, n - n0)) for n0 in range(0, n, lim.m)]
    nk = len(k_tiles)
    mt_max, resident = _fit_rows(node, lim, min(m, PSUM_I32), lambda r, res: (
        nk * padded(n) + XLoader.bytes(p, x, nk, r, res) + 6 * padded(4 * r) + len(n_tiles) * 256))
    m_tiles = [(m0, min(mt_max, m - m0)) for m0 in range(0, m, mt_max)]
    w_tiles = _weight_tiles(ctx, wv, k_tiles, n, SlotPool(em.sbuf, n, nk))
    xload = XLoader(ctx, x, p, k, k_tiles, mt_max, resident)
    out_pool = SlotPool(em.sbuf, 4 * mt_max, 3)
    mid_pool = SlotPool(em.sbuf, 4 * mt_max, 3)
    psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
    epi = ChannelEpilogue(ctx, node, p, n)
    epi.reserve(len(n_tiles))
    for m0, mt in m_tiles:
        for n0, nt in n_tiles:
            acc = AP("psum", psum_pool.take(), ((1, mt),), "i32", 0, nt)
            for ki, (_, kt) in enumerate(k_tiles):
                em.emit("pe", "matmul", {"dst": acc, "stat": sub(w_tiles[ki], kt, n0, ((1, nt),)),
                                         "mov": xload.tile(m0, mt, ki)}, start=1 if ki == 0 else 0)
            res = sbuf_ap(out_pool.take(), nt, mt, epi.out_dtype())
            epi.emit(acc, res, n0, mid_pool)
            em.emit("dma", "dma_copy", {"dst": hbm_pattern(out, m0 * n + n0, ((1, nt), (n, mt))), "src": res})


def _matmul_rows_on_partitions(ctx: LoweringContext, node: Node, p: QParams, x: DeviceValue, wv: DeviceValue,
                               out: DeviceValue, m: int, k: int, n: int, lim: PeLimits) -> None:
    """out[m, n] with rows on partitions: scale and bias vary along the free axis, so they are
    [rows, N] tiles (broadcast over partitions by the loading DMA) applied by the DVE."""
    em = ctx.em
    k_tiles = [(k0, min(lim.k, k - k0)) for k0 in range(0, k, lim.k)]
    nt_max = min(n, PSUM_I32)
    n_tiles = [(n0, min(nt_max, n - n0)) for n0 in range(0, n, nt_max)]
    nk = len(k_tiles)
    fold = _folds_quantize(p)
    scale, bias = p.scale.astype(np.float64), p.bias.astype(np.float64)
    if fold:
        scale, bias = scale / p.out_scale, bias / p.out_scale
    rows = ctx.new_const("scale_bias", np.ascontiguousarray(np.stack([scale, bias]).astype(np.float32)))
    w_resident = nk * padded(n) <= lim.sbuf_budget // 3
    w_bytes = nk * padded(n) if w_resident else 3 * padded(nt_max)
    rows_cached = len(n_tiles) * 2 * padded(4 * nt_max) <= lim.sbuf_budget // 4
    row_bytes = (len(n_tiles) if rows_cached else 2) * 2 * padded(4 * nt_max)
    mt_max, resident = _fit_rows(node, lim, min(m, lim.m), lambda r, res: (
        w_bytes + XLoader.bytes(p, x, nk, r, res) + 7 * padded(4 * nt_max) + row_bytes))
    m_tiles = [(m0, min(mt_max, m - m0)) for m0 in range(0, m, mt_max)]
    w_pool = SlotPool(em.sbuf, n if w_resident else nt_max, nk if w_resident else 3)
    w_tiles = _weight_tiles(ctx, wv, k_tiles, n, w_pool) if w_resident else None
    xload = XLoader(ctx, x, p, k, k_tiles, mt_max, resident)
    out_pool = SlotPool(em.sbuf, 4 * nt_max, 4)
    mid_pool = SlotPool(em.sbuf, 4 * nt_max, 3)
    row_pool = SlotPool(em.sbuf, 4 * nt_max, row_bytes // padded(4 * nt_max))
    psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
    row_tiles = {}

    def scale_bias_rows(n0: int, nt: int) -> list[AP]:
        """Scale and bias for columns [n0, n0+nt), repeated on every partition by the DMA."""
        if n0 not in row_tiles:
            if not rows_cached:
                row_tiles.clear()
            pair = []
            for r in range(2):
                tile = sbuf_ap(row_pool.take(), mt_max, nt, "f32")
                src = hbm_pattern(rows, r * n + n0, ((0, mt_max), (1, nt)))
                em.emit("dma", "dma_copy", {"dst": tile, "src": src})
                pair.append(tile)
            row_tiles[n0] = pair
        return row_tiles[n0]

    func, attrs = act_function(p.act)
    quantized = p.out_scale is not None
    for m0, mt in m_tiles:
        for n0, nt in n_tiles:
            acc = AP("psum", psum_pool.take(), ((1, nt),), "i32", 0, mt)
            for ki, (k0, kt) in enumerate(k_tiles):
                if w_resident:
                    mov = sub(w_tiles[ki], kt, n0, ((1, nt),))
                else:
                    mov = sbuf_ap(w_pool.take(), kt, nt, "i8")
                    em.emit("dma", "dma_copy", {"dst": mov, "src": hbm_pattern(wv, k0 * n + n0, ((n, kt), (1, nt)))})
                em.emit("pe", "matmul", {"dst": acc, "stat": xload.tile(m0, mt, ki), "mov": mov},
                        start=1 if ki == 0 else 0)
            s_row, b_row = (sub(t, mt, 0, ((1, nt),)) for t in scale_bias_rows(n0, nt))
            work = sbuf_ap(out_pool.take(), mt, nt, "f32")
            em.emit("dve", "tensor_tensor", {"dst": work, "a": acc, "b": s_row}, op="mul")
            if fold:  # v/s rounded into an integer tile (relu after rounding is the same)
                res = sbuf_ap(out_pool.take(), mt, nt, p.out_dtype)
                direct = p.out_zero == 0 and not p.act
                rounded = res if direct else sbuf_ap(mid_pool.take(), mt, nt, "i32")
                em.emit("dve", "tensor_tensor", {"dst": rounded, "a": work, "b": b_row}, op="add")
                if not direct:  # relu (in quanta) and the zero point on the integer path
                    stages = dict(op0="add", s0=p.out_zero)
                    if p.act:
                        stages = dict(op0="max", s0=0, op1="add", s1=p.out_zero)
                    em.emit("dve", "tensor_scalar", {"dst": res, "src": rounded}, **stages)
            else:
                em.emit("dve", "tensor_tensor", {"dst": work, "a": work, "b": b_row}, op="add")
                if p.act:
                    if func is None or func == "relu":
                        _dve_act(em, work, p.act)
                    else:
                        em.emit("act", "activate", {"dst": work, "src": work}, func=func,
                                mode=ctx.act_mode(node), **attrs)
                res = work
                if quantized:
                    res = sbuf_ap(out_pool.take(), mt, nt, p.out_dtype)
                    mid = sbuf_ap(mid_pool.take(), mt, nt, "i32") if p.out_zero else None
                    _requantize(em, work, res, p.out_scale, p.out_zero, mid)
            em.emit("dma", "dma_copy", {"dst": hbm_pattern(out, m0 * n + n0, ((n, mt), (1, nt))), "src": res})


# ---- Conv -------------------------------------------------------------------------------------------

@kernel("XpuQLinearConv")
def qlinear_conv(ctx: LoweringContext, node: Node) -> None:
    x, _, out = conv_operands(ctx, node)
    w = _const(ctx, node, 3, "weight").astype(np.int8)
    if out.size == 0:
        return
    QConvLowering(ctx, node, x, w, out).run()


@dataclass
class Pack:
    """Kernel rows [row0, row0 + rows) of every kernel column, contracted by one matmul: partition
    c * taps + t holds channel c shifted by tap t (channel-major), stacked by one SBUF-to-SBUF DMA."""

    row0: int
    rows: int
    taps: list  # tap indices (row-major inside the pack)


class QConvLowering:
    """Implicit GEMM per output block: a zero-point-padded band of input rows in SBUF (quantized on
    the way in when the node takes a float input), then per output-channel tile either one matmul
    per kernel tap and input-channel tile, or, for few input channels, one matmul per pack of taps
    stacked on partitions; i32 PSUM; the channel epilogue; one store."""

    def __init__(self, ctx: LoweringContext, node: Node, x: DeviceValue, w: np.ndarray, out: DeviceValue):
        self.ctx, self.node, self.em, self.x, self.out = ctx, node, ctx.em, x, out
        self.lim = pe_limits(ctx)
        self.spec = conv_spec(node, x.shape, w.shape, out.shape, w)
        sp = self.spec
        self.k, self.s, self.d, self.pads = sp.kernel_hw, (sp.ish, sp.isw), sp.kernel_dil, sp.pads
        self.p = qparams(ctx, node, w, 0)
        self.units = channel_units(self.spec, self.lim.k, self.lim.m)
        self.packs = self._packs()

    # -- planning ---------------------------------------------------------------------------------
    def _packs(self) -> list[Pack] | None:
        """Tap packs when every unit has one input-channel tile, columns are not strided, and the PE
        time saved outweighs the stacking DMA."""
        sp, (kh, kw) = self.spec, self.k
        if sp.taps == 1 or self.s[1] != 1 or any(len(u.cin_tiles) != 1 for u in self.units):
            return None
        ct = max(u.cin_tiles[0][1] for u in self.units)
        if ct * kw > self.lim.k:
            return None
        rows = min(kh, self.lim.k // (ct * kw))
        packs = [Pack(r0, min(rows, kh - r0), list(range(r0 * kw, min(r0 + rows, kh) * kw)))
                 for r0 in range(0, kh, rows)]
        npix = min(PSUM_I32, sp.oh * sp.ow)
        row_len = min(sp.ow, PSUM_I32)
        dma = self.ctx.arch.raw["dma"]
        per_cycle = self.ctx.arch.raw["hbm"]["bandwidth_gbps"] / self.ctx.arch.clock_ghz
        stack = ct * sp.taps * (npix + (npix // row_len) * dma["run_overhead_bytes"]) / per_cycle
        saved = (sp.taps - len(packs)) * (self.lim_fixed() + npix)
        return packs if saved > stack else None

    def lim_fixed(self) -> int:
        return int(self.ctx.arch.raw["pe"]["fixed_cycles"])

    def _blocks(self, cap: int) -> list[tuple[int, int, int, int, int, int]]:
        """(n0, nb, r0, rt, c0, ct) output blocks of at most `cap` pixels (<= one PSUM bank; one
        image per block with tap packs: the stacking DMA has no dim left for images)."""
        sp = self.spec
        if sp.oh * sp.ow <= cap:
            nb = 1 if self.packs else min(sp.n, cap // (sp.oh * sp.ow))
            return [(n0, min(nb, sp.n - n0), 0, sp.oh, 0, sp.ow) for n0 in range(0, sp.n, nb)]
        if sp.ow <= cap:
            rt = cap // sp.ow
            return [(n0, 1, r0, min(rt, sp.oh - r0), 0, sp.ow)
                    for n0 in range(sp.n) for r0 in range(0, sp.oh, rt)]
        return [(n0, 1, r0, 1, c0, min(cap, sp.ow - c0))
                for n0 in range(sp.n) for r0 in range(sp.oh) for c0 in range(0, sp.ow, cap)]

    def _band_size(self, rt: int, ct: int) -> tuple[int, int]:
        return ((rt - 1) * self.s[0] + (self.k[0] - 1) * self.d[0] + 1,
                (ct - 1) * self.s[1] + (self.k[1] - 1) * self.d[1] + 1)

    def _weight_const(self, ui: int, j: int, i: int) -> np.ndarray:
        """int8 stationary blocks of one (cout tile, cin tile): [ct, taps*ot] (a block per tap), or
        [ct*taps of the largest pack, packs*ot] (a block per pack)."""
        u = self.units[ui]
        packs = None if self.packs is None else [pk.taps for pk in self.packs]
        return stationary_weights(self.spec, u.cin_tiles[i], u.cout_tiles[j], packs).astype(np.int8)

    # -- main -------------------------------------------------------------------------------------
    def run(self) -> None:
        em, sp, lim, p = self.em, self.spec, self.lim, self.p
        w_keys = [(ui, j, i) for ui, u in enumerate(self.units) for j in range(len(u.cout_tiles))
                  for i in range(len(u.cin_tiles))]
        w_consts = {key: self._weight_const(*key) for key in w_keys}
        w_bytes = padded(max(a.shape[1] for a in w_consts.values()))
        n_bands = max(len(u.cin_tiles) for u in self.units)
        w_resident = len(w_keys) * w_bytes <= lim.sbuf_budget // 3
        raw_isz = 4 if p.quantize_input else itemsize(self.x.dtype)
        convert = p.quantize_input or self.x.dtype == "u8"
        fixed = ((len(w_keys) if w_resident else 2 * n_bands) * w_bytes
                 + sum(len(u.cout_tiles) for u in self.units) * 256)
        cap = PSUM_I32
        while True:  # output pixels per block: as many as one PSUM bank holds, fewer if SBUF is short
            blocks = self._blocks(cap)
            band_max = max(nb * int(np.prod(self._band_size(rt, ct))) for _, nb, _, rt, _, ct in blocks)
            out_max = max(nb * rt * ct for _, nb, _, rt, _, ct in blocks)
            need = (fixed + 2 * n_bands * padded(band_max * raw_isz)
                    + (2 * n_bands * padded(band_max) if convert else 0)
                    + (padded(4 * band_max) if p.quantize_input and p.x_zero else 0)
                    + (3 * padded(out_max) if self.packs else 0) + 6 * padded(out_max * 4))
            if need <= lim.sbuf_budget:
                break
            if cap == 1:
                raise CompileError(f"{self.node.name}: int8 convolution tiles need {need} bytes of SBUF "
                                   f"per partition ({lim.sbuf_budget} available)")
            cap //= 2
        w_pool = SlotPool(em.sbuf, w_bytes, len(w_keys) if w_resident else 2 * n_bands)
        band_pool = SlotPool(em.sbuf, band_max * raw_isz, 2 * n_bands)
        self.convert_pool = SlotPool(em.sbuf, band_max, 2 * n_bands) if convert else None
        self.mid_pool = SlotPool(em.sbuf, 4 * band_max, 1) if p.quantize_input and p.x_zero else None
        stack_pool = SlotPool(em.sbuf, out_max, 3) if self.packs else None
        out_pool = SlotPool(em.sbuf, out_max * 4, 3)
        mid_pool = SlotPool(em.sbuf, out_max * 4, 3)
        psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
        epi = ChannelEpilogue(self.ctx, self.node, p, sp.cout)
        epi.reserve(sum(len(u.cout_tiles) for u in self.units))
        w_values = {key: self.ctx.new_const(f"w{n}", np.ascontiguousarray(a))
                    for n, (key, a) in enumerate(w_consts.items())}

        def load_weight(key: tuple[int, int, int]) -> AP:
            rows, cols = w_consts[key].shape
            tile = sbuf_ap(w_pool.take(), rows, cols, "i8")
            em.emit("dma", "dma_copy", {"dst": tile, "src": w_values[key].flat()})
            return tile

        resident = {key: load_weight(key) for key in w_keys} if w_resident else None
        for u in self.units:
            for o0, ot in u.cout_tiles:
                epi.load(o0, ot)
        for n0, nb, r0, rt, c0, ct in blocks:
            br, bc = self._band_size(rt, ct)
            npix = nb * rt * ct
            window = ((br * bc, nb), (self.s[0] * bc, rt), (self.s[1], ct))
            for ui, u in enumerate(self.units):
                bands = [self._load_band(band_pool, n0, nb, r0, rt, c0, ct, ci0, cit, br, bc)
                         for ci0, cit in u.cin_tiles]
                stacks = None
                if self.packs:  # the same stacked windows serve every output-channel tile
                    cit = u.cin_tiles[0][1]
                    stacks = []
                    for pk in self.packs:
                        tile = sbuf_ap(stack_pool.take(), cit * len(pk.taps), npix, "i8")
                        taps = ((self.d[0] * bc, pk.rows), (self.d[1], self.k[1]))
                        em.emit("dma", "dma_copy", {"dst": tile, "src": sub(
                            bands[0], cit, pk.row0 * self.d[0] * bc, taps + window[1:])})
                        stacks.append(tile)
                for j, (o0, ot) in enumerate(u.cout_tiles):
                    acc = AP("psum", psum_pool.take(), ((1, npix),), "i32", 0, ot)
                    steps = []
                    for i, (_, cit) in enumerate(u.cin_tiles):
                        wt = resident[(ui, j, i)] if w_resident else load_weight((ui, j, i))
                        if stacks is not None:
                            steps += [(sub(wt, cit * len(pk.taps), kp * ot, ((1, ot),)), st)
                                      for kp, (pk, st) in enumerate(zip(self.packs, stacks))]
                            continue
                        for t, ch, cw in sp.passes[0].taps:
                            off = (ch + self.pads[0]) * bc + (cw + self.pads[1])
                            steps.append((sub(wt, cit, t * ot, ((1, ot),)), sub(bands[i], cit, off, window)))
                    accumulate(em, acc, steps)
                    res = sbuf_ap(out_pool.take(), ot, npix, epi.out_dtype())
                    epi.emit(acc, res, o0, mid_pool)
                    dst = output_block(self.out, sp, n0, nb, o0, ot, r0, rt, c0, ct)
                    em.emit("dma", "dma_copy", {"dst": dst, "src": res})

    def _load_band(self, pool: SlotPool, n0: int, nb: int, r0: int, rt: int, c0: int, ct: int, ci0: int, cit: int,
                   br: int, bc: int) -> AP:
        """Input rows/columns of the block for channels [ci0, ci0+cit) as an int8 tile, the outside
        of the image holding the activation's zero point (0.0 for a float input, which quantizes
        to it)."""
        sp, em, p = self.spec, self.em, self.p
        raw_dtype = "f32" if p.quantize_input else self.x.dtype
        tile = sbuf_ap(pool.take(), cit, nb * br * bc, raw_dtype)
        r_lo, c_lo = r0 * self.s[0] - self.pads[0], c0 * self.s[1] - self.pads[1]
        zero = 0.0 if p.quantize_input else p.x_zero + (128 if self.x.dtype == "u8" else 0)  # as stored
        load_band(em, tile, self.x, sp, Band(n0, nb, ci0, cit, r_lo, c_lo, br, bc), zero, raw_dtype)
        return self._to_int8(tile)

    def _to_int8(self, tile: AP) -> AP:
        return to_int8(self.em, tile, self.convert_pool, self.p, self.mid_pool)
