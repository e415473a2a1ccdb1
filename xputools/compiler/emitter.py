"""Instruction emission with automatic cross-engine synchronisation.

Kernels (one per ONNX op family) call `Emitter.emit(engine, op, operands, **attrs)` in program
order, as if the device ran one instruction at a time. The emitter makes the parallel machine give
the same result:
- every instruction on engine E signals semaphore `ENGINE_INDEX[E]` (+1), so that semaphore counts
  E's completed instructions (engines complete in order);
- before emitting, it finds the instructions this one depends on through memory (read after write,
  write after read, write after write), tracked per memory block, and waits for the latest one on
  each other engine (`sem[E] >= index + 1`). Same-engine order is implicit.
Hazards are tracked conservatively: SBUF/PSUM by blocks of bytes inside a partition (all partitions
together), HBM by allocated region.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from device_model.arch import Arch
from device_model.isa import AP, DMA_ENGINES, ENGINE_INDEX, ENGINES, Instr, is_written, validate_instr
from device_model.program import Origin, Program, Tap, TapPiece, Tensor

SBUF_BLOCK = 256
PSUM_BLOCK = 512
HBM_CHUNKS = 64  # an HBM region is tracked as up to this many equal chunks (>= 4 KiB each)
HBM_MIN_CHUNK = 4096


@dataclass(frozen=True)
class InstrRef:
    engine: str
    index: int  # position in the engine's stream


@dataclass
class _BlockState:
    writer: tuple[int, int] | None = None  # (engine id, index)
    readers: dict[int, int] = field(default_factory=dict)  # engine id -> latest index


class HazardTracker:
    """Per-block last writer and readers since it, for the three memory spaces."""

    def __init__(self, hbm_regions: "HbmAllocator"):
        self._sbuf: dict[int, _BlockState] = {}
        self._psum: dict[int, _BlockState] = {}
        self._hbm: dict[int, _BlockState] = {}
        self._hbm_regions = hbm_regions

    def blocks(self, ap: AP) -> list[_BlockState]:
        first, end = ap.byte_extent()
        if ap.space == "hbm":
            table, keys = self._hbm, self._hbm_regions.chunks_overlapping(first, end)
        else:
            size = SBUF_BLOCK if ap.space == "sbuf" else PSUM_BLOCK
            table = self._sbuf if ap.space == "sbuf" else self._psum
            keys = range(first // size, (end - 1) // size + 1)
        out = []
        for k in keys:
            st = table.get(k)
            if st is None:
                st = table[k] = _BlockState()
            out.append(st)
        return out


class Emitter:
    def __init__(self, arch: Arch):
        self.arch = arch
        self.instrs: list[Instr] = []
        self.counts = {e: 0 for e in ENGINES}
        self.origins: list[Origin] = []
        self._origin_index: dict[tuple[str, str], int] = {}
        self.dbg = -1
        self.hbm = HbmAllocator()
        self.sbuf = RingAllocator(arch.sbuf_bytes, "SBUF", align=SBUF_BLOCK)  # no false sharing of blocks
        self.psum = RingAllocator(arch.psum_bytes, "PSUM", align=arch.psum_bytes // arch.raw["psum"]["banks"])
        self.hazards = HazardTracker(self.hbm)
        self.taps: list[Tap] = []
        self.host_ops = []
        self._next_dma = 0

    # ---- debug info -----------------------------------------------------------------------
    def set_origin(self, name: str, op_type: str = "") -> int:
        """Instructions emitted from now on implement this node."""
        key = (name, op_type)
        if key not in self._origin_index:
            self._origin_index[key] = len(self.origins)
            self.origins.append(Origin(name, op_type))
        self.dbg = self._origin_index[key]
        return self.dbg

    # ---- emission -------------------------------------------------------------------------
    def next_dma_queue(self) -> str:
        q = DMA_ENGINES[self._next_dma % self.arch.dma_queues]
        self._next_dma += 1
        return q

    def emit(self, engine: str, op: str, operands: dict[str, AP] | None = None, /, **attrs) -> InstrRef:
        """Append an instruction; `engine="dma"` picks the next DMA queue round-robin."""
        if engine == "dma":
            engine = self.next_dma_queue()
        operands = dict(operands or {})
        accesses = [(is_written(name), ap) for name, ap in operands.items()]
        ins = Instr(engine, op, operands, {k: v for k, v in attrs.items() if v is not None}, dbg=self.dbg)
        validate_instr(ins)
        return self._append(ins, accesses)

    def emit_host_call(self, host_op_index: int, reads: list[AP], writes: list[AP]) -> InstrRef:
        """A `host_call` whose operands are the HBM ranges the host op reads (src0, src1, ...) and
        writes (dst0, ...), so the machine's observers (watchpoints, sanitizers) see host accesses."""
        operands = {f"src{i}": ap for i, ap in enumerate(reads)}
        operands.update({f"dst{i}": ap for i, ap in enumerate(writes)})
        ins = Instr("host", "host_call", operands, {"op": host_op_index}, dbg=self.dbg)
        validate_instr(ins)
        return self._append(ins, [(False, ap) for ap in reads] + [(True, ap) for ap in writes])

    def _append(self, ins: Instr, accesses: list[tuple[bool, AP]]) -> InstrRef:
        eid = ENGINE_INDEX[ins.engine]
        index = self.counts[ins.engine]
        deps: dict[int, int] = {}
        touched: list[tuple[bool, list[_BlockState]]] = []
        for write, ap in accesses:
            blocks = self.hazards.blocks(ap)
            touched.append((write, blocks))
            for st in blocks:
                if st.writer is not None:
                    _need(deps, *st.writer)
                if write:
                    for reid, ridx in st.readers.items():
                        _need(deps, reid, ridx)
        deps.pop(eid, None)
        ins.waits = tuple(ins.waits) + tuple((e, i + 1) for e, i in sorted(deps.items()))
        ins.signals = ((eid, 1),)
        for write, blocks in touched:
            for st in blocks:
                if write:
                    st.writer, st.readers = (eid, index), {}
                else:
                    st.readers[eid] = index
        self.instrs.append(ins)
        self.counts[ins.engine] += 1
        return InstrRef(ins.engine, index)

    def barrier_after(self, aps: list[AP]) -> InstrRef | None:
        """A point after which everything written to `aps` is complete: the single writing
        instruction if there is one, else a `nop` on the host engine waiting for all writers."""
        writers: dict[int, int] = {}
        for ap in aps:
            for st in self.hazards.blocks(ap):
                if st.writer is not None:
                    _need(writers, *st.writer)
        if not writers:
            return None
        if len(writers) == 1:
            (eid, idx), = writers.items()
            return InstrRef(ENGINES[eid], idx)
        waits = tuple((e, i + 1) for e, i in sorted(writers.items()))
        return self._append(Instr("host", "nop", {}, {}, waits=waits, dbg=self.dbg), [])

    # ---- taps -----------------------------------------------------------------------------
    def add_tap(self, name: str, shape: tuple[int, ...], dtype: str, pieces: list[TapPiece],
                after: InstrRef | None) -> None:
        if after is None:  # value never written on the device (e.g. an input): valid from the start
            self.taps.append(Tap(name, tuple(shape), dtype, []))
            return
        self.taps.append(Tap(name, tuple(shape), dtype, pieces, after.engine, after.index))

    def add_fused_tap(self, name: str, shape, dtype: str, fused_into: str) -> None:
        self.taps.append(Tap(name, tuple(shape), dtype, [], fused_into=fused_into))

    # ---- result ---------------------------------------------------------------------------
    def program(self, meta: dict[str, str] | None = None) -> Program:
        prog = Program(self.arch.name, self.arch.hash, self.instrs, self.hbm.tensors, self.origins,
                       self.taps, dict(meta or {}), self.host_ops)
        prog.validate()
        return prog


def _need(deps: dict[int, int], eid: int, idx: int) -> None:
    if deps.get(eid, -1) < idx:
        deps[eid] = idx


class HbmAllocator:
    """Bump allocation of HBM regions (64-byte aligned). Regions are never reused, so a tensor's
    value stays readable (by taps) until the end of the run."""

    ALIGN = 64

    def __init__(self):
        self.tensors: list[Tensor] = []  # declared program tensors (inputs, outputs, constants)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.top = 0

    def alloc(self, nbytes: int) -> int:
        offset = self.top
        self.top += max(self.ALIGN, -(-nbytes // self.ALIGN) * self.ALIGN)
        self._starts.append(offset)
        self._ends.append(offset + max(nbytes, 1))
        return offset

    def declare(self, tensor: Tensor) -> None:
        self.tensors.append(tensor)

    def chunks_overlapping(self, first: int, end: int) -> list[tuple[int, int]]:
        """Hazard keys (region start, chunk) for bytes [first, end): writes to different parts of
        one tensor (Concat inputs, output tiles) can then proceed in parallel."""
        i = max(bisect.bisect_right(self._starts, first) - 1, 0)
        out = []
        while i < len(self._starts) and self._starts[i] < end:
            start, stop = self._starts[i], self._ends[i]
            if stop > first:
                size = max(HBM_MIN_CHUNK, -(-(stop - start) // HBM_CHUNKS))
                lo, hi = max(first, start) - start, min(end, stop) - start
                out.extend((start, c) for c in range(lo // size, (hi - 1) // size + 1))
            i += 1
        if not out:  # outside any allocation: track the byte range itself
            out.append((-1 - first, 0))
        return out


class RingAllocator:
    """Per-partition byte ranges handed out round-robin through the memory, so consecutive tiles
    and nodes land on different bytes and the hazard tracker lets them overlap in time.
    One allocation may take at most half the memory (so it never wraps onto a buffer of the
    same, still-running, step)."""

    def __init__(self, size: int, name: str, align: int = 64):
        self.size, self.name, self.align = size, name, align
        self.cursor = 0

    def alloc(self, nbytes: int) -> int:
        nbytes = -(-max(nbytes, 1) // self.align) * self.align
        if nbytes > self.size // 2:
            raise ValueError(f"{self.name} request of {nbytes} bytes per partition exceeds half of "
                             f"the {self.size} available (tile smaller)")
        if self.cursor + nbytes > self.size:
            self.cursor = 0
        offset = self.cursor
        self.cursor += nbytes
        return offset
