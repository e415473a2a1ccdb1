"""ONNX LSTM (forward, reverse, bidirectional; layout 0 or 1; optional bias, initial states and
clip) with the default activations sigmoid / tanh / tanh.

State lives transposed in SBUF: hidden units on partitions, batch on the free axis, so that h_{t-1}
is directly the moving operand of the next step's recurrent matmuls (K = hidden units).

- Up front, per time chunk: the input projection of every step, xp[gate] = W_gate · X_t + (Wb + Rb),
  as one matmul per gate over the whole chunk (N = steps x batch), evacuated with the bias added.
- Per step and direction: PSUM gates[H, 4·B] = I · xp_t (an identity matmul, exact in f32) plus
  R_gate · h_{t-1} for the four gates (each lands on the same partitions, in its own column range),
  one ACT sigmoid over all four gates, then on the DVE (and POOL for f·c, in parallel):
  g = 2·s - 1, c_t = f·c_{t-1} + i·g, h_t = o · tanh(c_t) (ACT tanh).
  The cell gate uses tanh(x) = 2·sigmoid(2x) - 1: its weights and bias are pre-scaled by 2 at compile
  time (exact), which saves an ACT instruction per step; the result differs from tanh by at most a
  few f32 ulps of 0.5 (absolute ~1e-7).
- h_t is written into a chunk tile [H, steps·B] that later becomes Y with one store.
The two directions of a bidirectional LSTM are emitted step by step interleaved, so one
direction's ACT/DVE work overlaps the other's matmuls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP

from ..context import LoweringContext
from ..errors import CompileError
from ..graph import Graph, Node
from .lib.ap import hbm_pattern, sbuf_ap, sub
from .lib.pe import Mat, device_cast, load_kmajor, pe_limits
from .lib.pools import SlotPool, padded
from .lib.registry import kernel

DEFAULT_ACTIVATIONS = ["sigmoid", "tanh", "tanh"]
SBUF_BUDGET = 96 * 1024  # bytes per partition one node may keep live on xpu1 (the support rule's view)
PSUM_N = 512             # f32 columns per PSUM bank
GATES = 4                # ONNX order: i, o, f, c


def _direction(node: Node) -> str:
    d = node.attrs.get("direction", "forward")
    return d.decode() if isinstance(d, bytes) else str(d)


def _dirs(node: Node) -> int:
    return 2 if _direction(node) == "bidirectional" else 1


@dataclass(frozen=True)
class LstmPlan:
    chunk: int        # time steps per chunk
    batch_tile: int   # batch columns per independent sub-problem
    bytes: int        # SBUF bytes per partition


def plan_lstm(seq: int, batch: int, inputs: int, hidden: int, dirs: int, isz: int, parts: int,
              budget: int) -> LstmPlan | None:
    """Chunk and batch tile sizes whose buffers fit `budget` bytes per partition, or None."""
    bt = min(batch, 128)
    ni, nh = -(-inputs // parts), -(-hidden // parts)
    fixed = (dirs * (ni + nh) * padded(4 * hidden * isz) + dirs * nh * padded(16) + padded(4 * parts)
             + dirs * nh * (2 * padded(16 * bt) + 3 * padded(4 * bt) + 4 * padded(4 * bt)))
    chunk = max(1, min(seq, PSUM_N // bt))
    while True:
        per_chunk = 2 * dirs * (ni * padded(chunk * bt * isz)
                                + nh * (padded(16 * chunk * bt) + padded(chunk * bt * isz)))
        if fixed + per_chunk <= budget:
            return LstmPlan(chunk, bt, fixed + per_chunk)
        if chunk == 1:
            return None
        chunk = max(1, chunk // 2)


def lstm_problem(node: Node, graph: Graph) -> str | None:
    """Why the device cannot run this LSTM node (support rule), or None."""
    acts = node.attrs.get("activations")
    if acts and [str(a).lower() for a in acts] not in (DEFAULT_ACTIVATIONS, DEFAULT_ACTIVATIONS * 2):
        return f"LSTM activations {list(acts)} are not supported (only sigmoid, tanh, tanh)"
    if node.attrs.get("input_forget", 0):
        return "LSTM with input_forget=1 is not supported"
    if node.input(7):
        return "LSTM with peepholes (input P) is not supported"
    if _direction(node) not in ("forward", "reverse", "bidirectional"):
        return f"unknown LSTM direction {_direction(node)!r}"
    layout = int(node.attrs.get("layout", 0))
    x = graph.values[node.input(0)].shape
    seq = x[1] if layout else x[0]
    lens = node.input(4)
    if lens:
        c = graph.const(lens)
        if c is None:
            return "LSTM sequence_lens computed at run time is not supported (freeze it with --const-inputs)"
        if not np.all(np.asarray(c) == seq):
            return "LSTM with sequences shorter than the input (sequence_lens) is not supported"
    for i, what in ((1, "W"), (2, "R"), (3, "B")):
        if node.input(i) and not graph.is_const(node.input(i)):
            return f"LSTM {what} computed at run time is not supported (the device needs constant weights)"
    w = graph.values[node.input(1)].shape
    hidden = int(node.attrs.get("hidden_size", w[1] // 4))
    batch = x[0] if layout else x[1]
    if seq == 0:
        return "LSTM over an empty sequence (Y_h and Y_c are the initial states)"
    if batch == 0:
        return None
    if plan_lstm(seq, batch, x[2], hidden, _dirs(node), 4, 128, SBUF_BUDGET) is None:
        return f"LSTM with hidden size {hidden} and input size {x[2]} does not fit SBUF"
    return None


# ---- the kernel -----------------------------------------------------------------------------------

class _Dir:
    """Per-direction state of one batch tile: resident weights, current h / c, chunk buffers."""

    def __init__(self, d: int):
        self.d = d
        self.wt = []       # per input tile: SBUF [in, 4H]
        self.rt = []       # per hidden tile (contraction): SBUF [hk, 4H]
        self.bias = []     # per hidden tile: SBUF [hn, 4] f32 or None
        self.h = None      # per hidden tile: AP [hn, bt] (compute dtype) or None (zero)
        self.c = None      # per hidden tile: AP [hn, bt] f32 or None (zero)
        self.xp = None     # per hidden tile: SBUF [hn, 4 * chunk * bt] f32 of the current chunk
        self.y = None      # per hidden tile: SBUF [hn, chunk * bt] of the current chunk


class LstmLowering:
    def __init__(self, ctx: LoweringContext, node: Node):
        self.ctx, self.node, self.em = ctx, node, ctx.em
        g = ctx.graph
        self.layout = int(node.attrs.get("layout", 0))
        xs = g.values[node.inputs[0]].shape
        self.seq, self.batch = (xs[1], xs[0]) if self.layout else (xs[0], xs[1])
        self.inputs = xs[2]
        w = ctx.const(node.inputs[1])
        r = ctx.const(node.inputs[2])
        if w is None or r is None:
            raise CompileError(f"{node.name}: LSTM weights must be constants on the device")
        self.dirs = _dirs(node)
        self.hidden = int(node.attrs.get("hidden_size", r.shape[-1]))
        self.reverse_only = _direction(node) == "reverse"
        dt = ctx.compute_dtype(node)
        self.dtype = "bf16" if dt == "i8" else dt
        self.isz = itemsize(self.dtype)
        self.mode = ctx.act_mode(node)
        self.clip = float(node.attrs["clip"]) if node.attrs.get("clip") is not None else None
        lim = pe_limits(ctx)
        self.parts = min(lim.k, lim.m)
        plan = plan_lstm(self.seq, self.batch, self.inputs, self.hidden, self.dirs, self.isz, self.parts,
                         lim.sbuf_budget)
        if plan is None:
            raise CompileError(f"{node.name}: LSTM buffers do not fit SBUF (hidden {self.hidden}, "
                               f"input {self.inputs})")
        self.plan = plan
        H = self.hidden
        b = ctx.const(node.input(3)) if node.input(3) else None
        self.w = np.asarray(w, np.float32).reshape(self.dirs, 4 * H, self.inputs)
        self.r = np.asarray(r, np.float32).reshape(self.dirs, 4 * H, H)
        self.b = None if b is None else np.asarray(b, np.float32).reshape(self.dirs, 8 * H)
        self.h_tiles = [(h0, min(self.parts, H - h0)) for h0 in range(0, H, self.parts)]
        self.i_tiles = [(i0, min(self.parts, self.inputs - i0)) for i0 in range(0, self.inputs, self.parts)]
        self.x = ctx.value(node.inputs[0])
        outs = list(node.outputs) + ["", "", ""]
        self.y_out = ctx.output(outs[0]) if outs[0] else None
        self.yh_out = ctx.output(outs[1]) if outs[1] else None
        self.yc_out = ctx.output(outs[2]) if outs[2] else None
        # element strides
        S, B, D, n_in = self.seq, self.batch, self.dirs, self.inputs
        if self.layout:
            self.xs_t, self.xs_b = n_in, S * n_in
            self.ys_t, self.ys_d, self.ys_b = D * H, H, S * D * H
            self.hs_d, self.hs_b = H, D * H
        else:
            self.xs_t, self.xs_b = B * n_in, n_in
            self.ys_t, self.ys_d, self.ys_b = D * B * H, B * H, H
            self.hs_d, self.hs_b = B * H, H

    # -- constants --------------------------------------------------------------------------------
    def _scaled(self, a: np.ndarray) -> np.ndarray:
        """Gate rows (axis 0, 4H long) with the cell gate doubled (tanh through sigmoid)."""
        a = np.array(a, dtype=np.float32, copy=True)
        a[3 * self.hidden:] *= np.float32(2.0)
        return a

    def _place_weights(self, dd: _Dir) -> None:
        ctx, em, H = self.ctx, self.em, self.hidden
        d = dd.d
        wt = self._scaled(self.w[d]).T  # [I, 4H]
        rt = self._scaled(self.r[d]).T  # [H, 4H]
        wv = ctx.new_const(f"w_t{d}", device_cast(np.ascontiguousarray(wt), self.dtype))
        rv = ctx.new_const(f"r_t{d}", device_cast(np.ascontiguousarray(rt), self.dtype))
        for i0, n in self.i_tiles:
            tile = sbuf_ap(self.w_pool.take(), n, 4 * H, self.dtype)
            em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(wv, i0 * 4 * H, ((1, n * 4 * H),))})
            dd.wt.append(tile)
        for h0, n in self.h_tiles:
            tile = sbuf_ap(self.w_pool.take(), n, 4 * H, self.dtype)
            em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(rv, h0 * 4 * H, ((1, n * 4 * H),))})
            dd.rt.append(tile)
        if self.b is None:
            dd.bias = [None] * len(self.h_tiles)
            return
        bias = self._scaled(self.b[d][:4 * H].astype(np.float64) + self.b[d][4 * H:]).astype(np.float32)
        bv = ctx.new_const(f"bias{d}", np.ascontiguousarray(bias.reshape(GATES, H).T))  # [H, 4]
        for h0, n in self.h_tiles:
            tile = sbuf_ap(self.bias_pool.take(), n, GATES, "f32")
            em.emit("dma", "dma_copy", {"dst": tile, "src": hbm_pattern(bv, h0 * GATES, ((1, n * GATES),))})
            dd.bias.append(tile)

    # -- main -------------------------------------------------------------------------------------
    def run(self) -> None:
        em, plan = self.em, self.plan
        H, bt, ch = self.hidden, plan.batch_tile, plan.chunk
        nh, ni, D = len(self.h_tiles), len(self.i_tiles), self.dirs
        lim = pe_limits(self.ctx)
        self.w_pool = SlotPool(em.sbuf, 4 * H * self.isz, D * (ni + nh))
        self.bias_pool = SlotPool(em.sbuf, 16, D * nh)
        self.eye_pool = SlotPool(em.sbuf, 4 * self.parts, 1)
        self.xt_pool = SlotPool(em.sbuf, ch * bt * self.isz, 2 * D * ni)
        self.xp_pool = SlotPool(em.sbuf, 16 * ch * bt, 2 * D * nh)
        self.y_pool = SlotPool(em.sbuf, ch * bt * self.isz, 2 * D * nh)
        self.s_pool = SlotPool(em.sbuf, 16 * bt, 2 * D * nh)
        # c lives from one step of its direction to the next: a pool per direction, so that steps
        # of one direction alone (chunks of unequal length) never recycle the other's state
        self.c_pools = [SlotPool(em.sbuf, 4 * bt, 3 * nh) for _ in range(D)]
        self.tmp_pool = SlotPool(em.sbuf, 4 * bt, 4 * D * nh)
        self.psum_pool = SlotPool(em.psum, lim.bank_bytes, min(lim.psum_banks, 4))
        eye = self.ctx.new_const("identity", np.eye(self.parts, dtype=np.float32))
        self.eye = sbuf_ap(self.eye_pool.take(), self.parts, self.parts, "f32")
        em.emit("dma", "dma_copy", {"dst": self.eye, "src": eye.flat()})
        dirs = [_Dir(d) for d in range(D)]
        for dd in dirs:
            self._place_weights(dd)
        chunks = [(t0, min(ch, self.seq - t0)) for t0 in range(0, self.seq, ch)]
        for b0 in range(0, self.batch, bt):
            bn = min(bt, self.batch - b0)
            for dd in dirs:
                self._initial_state(dd, b0, bn)
            for ci in range(len(chunks)):
                # a backward direction walks the chunks from the end, and each chunk's slots downwards
                mine = [chunks[len(chunks) - 1 - ci] if self._backward(dd) else chunks[ci] for dd in dirs]
                for dd, (t0, tc) in zip(dirs, mine):
                    self._project(dd, b0, bn, t0, tc)
                for s in range(max(tc for _, tc in mine)):
                    for dd, (_, tc) in zip(dirs, mine):
                        if s < tc:
                            self._step(dd, bn, tc - 1 - s if self._backward(dd) else s)
                for dd, (t0, tc) in zip(dirs, mine):
                    self._store_y(dd, b0, bn, t0, tc)
            for dd in dirs:
                self._store_final(dd, b0, bn)

    def _backward(self, dd: _Dir) -> bool:
        return dd.d == 1 or self.reverse_only

    def _initial_state(self, dd: _Dir, b0: int, bn: int) -> None:
        dd.h = dd.c = None
        for index, attr, dtype in ((5, "h", self.dtype), (6, "c", "f32")):
            name = self.node.input(index)
            if not name:
                continue
            v = self.ctx.value(name)
            tiles = []
            for h0, hn in self.h_tiles:
                pool = self.y_pool if attr == "h" else self.c_pools[dd.d]
                tile = sbuf_ap(pool.take(), hn, bn, dtype)
                src = hbm_pattern(v, dd.d * self.hs_d + b0 * self.hs_b + h0, ((1, hn), (self.hs_b, bn)))
                self.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
                tiles.append(tile)
            setattr(dd, attr, tiles)

    def _project(self, dd: _Dir, b0: int, bn: int, t0: int, tc: int) -> None:
        """xp[j] = W·X_t + bias for the chunk's steps, [hn, gate, slot, batch] f32."""
        em, H, ch = self.em, self.hidden, self.plan.chunk
        cols = tc * bn
        xts = []
        for (i0, n) in self.i_tiles:
            tile = sbuf_ap(self.xt_pool.take(), n, cols, self.dtype)
            mat = Mat(self.x, t0 * self.xs_t + b0 * self.xs_b + i0, 1, self.xs_b, self.xs_t)
            load_kmajor(self.ctx, mat, n, bn, tc, tile)
            xts.append(tile)
        dd.xp, dd.y = [], []
        for j, (h0, hn) in enumerate(self.h_tiles):
            xp = sbuf_ap(self.xp_pool.take(), hn, GATES * ch * bn, "f32")
            for k in range(GATES):
                acc = AP("psum", self.psum_pool.take(), ((1, cols),), "f32", 0, hn)
                for it, ((_, n), xt) in enumerate(zip(self.i_tiles, xts)):
                    em.emit("pe", "matmul", {"dst": acc, "stat": sub(dd.wt[it], n, k * H + h0, ((1, hn),)),
                                             "mov": xt}, start=1 if it == 0 else 0)
                dst = sub(xp, hn, k * ch * bn, ((1, cols),))
                if dd.bias[j] is not None:
                    em.emit("dve", "tensor_scalar", {"dst": dst, "src": acc,
                                                     "s0_ap": sub(dd.bias[j], hn, k, ((1, 1),))}, op0="add")
                else:
                    em.emit("dve", "copy", {"dst": dst, "src": acc})
            dd.xp.append(xp)
            dd.y.append(sbuf_ap(self.y_pool.take(), hn, ch * bn, self.dtype))

    @staticmethod
    def _gates(base: AP, off: int, hn: int, stride: int, bn: int, k0: int, nk: int) -> AP:
        """Gates k0 .. k0+nk-1 of one step: [hn, nk, bn] at element `off` of `base`, gates
        `stride` elements apart."""
        return sub(base, hn, off + k0 * stride, ((stride, nk), (1, bn)))

    def _step(self, dd: _Dir, bn: int, slot: int) -> None:
        em, H, ch = self.em, self.hidden, self.plan.chunk
        new_h, new_c = [], []
        for j, (h0, hn) in enumerate(self.h_tiles):
            xp_t = sub(dd.xp[j], hn, slot * bn, ((ch * bn, GATES), (1, bn)))
            if dd.h is not None:
                acc = AP("psum", self.psum_pool.take(), ((1, GATES * bn),), "f32", 0, hn)
                eye = sub(self.eye, hn, 0, ((1, hn),))
                em.emit("pe", "matmul", {"dst": acc, "stat": eye, "mov": xp_t}, start=1)
                for k in range(GATES):
                    for kk, (_, hk) in enumerate(self.h_tiles):
                        em.emit("pe", "matmul", {"dst": sub(acc, hn, k * bn, ((1, bn),)),
                                                 "stat": sub(dd.rt[kk], hk, k * H + h0, ((1, hn),)),
                                                 "mov": dd.h[kk]}, start=0)
                pre, off, stride = acc, 0, bn
            else:  # h_{t-1} = 0: the gates are the input projection alone
                pre, off, stride = dd.xp[j], slot * bn, ch * bn
            s = sbuf_ap(self.s_pool.take(), hn, GATES * bn, "f32")
            src = self._gates(pre, off, hn, stride, bn, 0, GATES)
            if self.clip is not None:
                em.emit("dve", "tensor_scalar", {"dst": sub(s, hn, 0, ((1, 3 * bn),)),
                                                 "src": self._gates(pre, off, hn, stride, bn, 0, 3)},
                        op0="max", s0=-self.clip, op1="min", s1=self.clip)
                em.emit("dve", "tensor_scalar", {"dst": sub(s, hn, 3 * bn, ((1, bn),)),
                                                 "src": self._gates(pre, off, hn, stride, bn, 3, 1)},
                        op0="max", s0=-2 * self.clip, op1="min", s1=2 * self.clip)
                src = s
            em.emit("act", "activate", {"dst": s, "src": src}, func="sigmoid", mode=self.mode)
            i_gate, o_gate, f_gate, g = (sub(s, hn, k * bn, ((1, bn),)) for k in range(GATES))
            em.emit("dve", "tensor_scalar", {"dst": g, "src": g}, op0="mul", s0=2.0, op1="sub", s1=1.0)
            c = sbuf_ap(self.c_pools[dd.d].take(), hn, bn, "f32")
            if dd.c is not None:
                fc = sbuf_ap(self.tmp_pool.take(), hn, bn, "f32")
                em.emit("pool", "tensor_tensor", {"dst": fc, "a": f_gate, "b": dd.c[j]}, op="mul")
                em.emit("dve", "tensor_tensor", {"dst": c, "a": i_gate, "b": g}, op="mul")
                em.emit("dve", "tensor_tensor", {"dst": c, "a": c, "b": fc}, op="add")
            else:
                em.emit("dve", "tensor_tensor", {"dst": c, "a": i_gate, "b": g}, op="mul")
            tc = sbuf_ap(self.tmp_pool.take(), hn, bn, "f32")
            em.emit("act", "activate", {"dst": tc, "src": c}, func="tanh", mode=self.mode)
            h = sub(dd.y[j], hn, slot * bn, ((1, bn),))
            em.emit("dve", "tensor_tensor", {"dst": h, "a": o_gate, "b": tc}, op="mul")
            new_h.append(h)
            new_c.append(c)
        dd.h, dd.c = new_h, new_c

    def _store_y(self, dd: _Dir, b0: int, bn: int, t0: int, tc: int) -> None:
        if self.y_out is None:
            return
        for (h0, hn), y in zip(self.h_tiles, dd.y):
            dst = hbm_pattern(self.y_out, t0 * self.ys_t + dd.d * self.ys_d + b0 * self.ys_b + h0,
                       ((1, hn), (self.ys_t, tc), (self.ys_b, bn)))
            self.em.emit("dma", "dma_copy", {"dst": dst, "src": sub(y, hn, 0, ((1, tc * bn),))})

    def _store_final(self, dd: _Dir, b0: int, bn: int) -> None:
        for out, tiles in ((self.yh_out, dd.h), (self.yc_out, dd.c)):
            if out is None:
                continue
            for (h0, hn), tile in zip(self.h_tiles, tiles):
                dst = hbm_pattern(out, dd.d * self.hs_d + b0 * self.hs_b + h0, ((1, hn), (self.hs_b, bn)))
                self.em.emit("dma", "dma_copy", {"dst": dst, "src": tile})


@kernel("LSTM")
def lstm(ctx: LoweringContext, node: Node) -> None:
    why = lstm_problem(node, ctx.graph)
    if why:
        raise CompileError(f"{node.name}: {why}")
    lowering = LstmLowering(ctx, node)
    if lowering.seq == 0 or lowering.batch == 0:
        return
    lowering.run()
