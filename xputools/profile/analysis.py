"""From a recorded run to a profile: each executed instruction's timing joined with the program's
debug info, the semaphore signal that released each wait, the critical path, per-engine and per-layer
aggregates with a bound label, and the counter series (SBUF/PSUM in use, HBM bandwidth, semaphores).

All times are device cycles; docs/profile-format.md defines every quantity and the bound rules.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from device_model.arch import Arch
from device_model.dtypes import itemsize
from device_model.engines import instr_bytes, instr_flops
from device_model.events import SemaphoreEvent
from device_model.isa import ENGINE_INDEX, ENGINES, Instr, attr, engine_kind
from device_model.program import Program
from device_model.timing import bytes_per_cycle, contiguous_runs, dma_bytes

from ..compiler.precision import PRECISIONS as PRECISION_DTYPES
from .allocation import allocations, reserved_series

COMPUTE_KINDS = ("pe", "act", "dve", "pool")
KINDS = COMPUTE_KINDS + ("dma", "host")
SHARE_THRESHOLD = 0.5   # of a layer's time: host / sync labels
ROOF_THRESHOLD = 0.5    # of the roofline: memory / compute labels
NEAR_PEAK = 0.8         # of the roofline: said to be near peak
MAX_BANDWIDTH_WINDOWS = 1000
MIN_WINDOW_CYCLES = 256
NO_LAYER = -1


@dataclass(slots=True)
class InstrRecord:
    """One executed instruction."""

    id: int              # position in the program (program order)
    engine: str
    index: int           # position in its engine's stream
    instr: Instr
    layer: int           # index into program.origins, NO_LAYER if none
    issue: int
    end: int
    wait: int            # cycles its engine sat free, blocked on semaphores, before the issue
    kind: str = ""
    dtype: str = ""
    flops: int = 0
    bytes: int = 0       # DMA: payload bytes written; host_call: bytes over the host link; else 0
    hbm_bytes: int = 0   # DMA: payload bytes on its HBM side(s)
    fabric_bytes: int = 0  # DMA: bytes it costs on the fabric (payload + per-run overhead)
    hbm_kind: str = ""     # DMA: kind of the program tensor its HBM side lies in (input, output,
                           # const, scratch; "" without an HBM side or outside every tensor)
    transfer_end: int = 0  # DMA: when its last byte moved (end - latency); else end
    runs: int = 0        # DMA: contiguous runs (descriptor elements) it pays the run overhead for
    sbuf: int = 0        # distinct SBUF bytes its operands touch
    psum: int = 0
    pe_rows: int = 0     # matmul/transpose: PE array rows used (K, the contraction on partitions)
    pe_cols: int = 0     # ... columns used (M, stationary columns)
    pe_n: int = 0        # ... moving free size streamed (N)
    released_by: int = -1     # id of the instruction whose signal released its last-met wait
    release_sem: int = -1
    critical: bool = False

    @property
    def cycles(self) -> int:
        return self.end - self.issue

    @property
    def hbm(self) -> bool:
        return self.hbm_bytes > 0


@dataclass
class LayerStats:
    layer: int
    name: str
    op_type: str
    first_issue: int = 0      # its span: first issue to last end of all its instructions
    last_end: int = 0
    start: int = 0            # its time starts here: the first issue of an instruction that is
                              # not a prefetch (a wait-free DMA load, free to run early)
    instructions: int = 0
    busy: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))   # kind -> summed cycles
    # unions of its instruction intervals within [start, last_end]
    compute_active: int = 0   # PE/ACT/DVE/POOL
    dma_active: int = 0
    host_active: int = 0
    active: int = 0           # any engine
    wait: int = 0             # summed semaphore-wait cycles of its instructions
    flops: int = 0
    pe_flops: int = 0
    dtype: str = ""
    roof_engine: str = ""
    peak_flops: float = 0.0   # FLOP/s of the engine its roofline uses
    dma_bytes: int = 0
    hbm_bytes: int = 0
    hbm_bytes_in_time: float = 0.0   # of hbm_bytes, those moved within [start, last_end]
    dma_count: int = 0
    host_bytes: int = 0
    critical: int = 0
    own: float = 0.0          # its share of the run: cycles when it is active, split evenly among
                              # the layers active at the same cycle (the layers' own times sum to
                              # at most the latency)
    pe_active: int = 0        # union of its PE instruction intervals within its time
    pe_busy: int = 0          # summed PE cycles (matmul + transpose)
    pe_cells: float = 0.0     # sum over PE instructions of cycles x rows x cols used
    pe_rows: int = 0          # the most common rows x cols x N of its PE work (by cycles)
    pe_cols: int = 0
    pe_n: int = 0
    overlap: int = 0          # cycles within its time when compute and DMA both run
    copy_cycles: int = 0      # sbuf->sbuf DMA (layout copies, e.g. im2col): summed cycles
    copy_count: int = 0
    copy_bytes: int = 0
    floor: float = 0.0        # roofline lower bound on its time (roof_floor)
    bound: str = ""
    reason: str = ""
    lane: int = 0

    @property
    def pe_occupancy(self) -> float:
        """Share of the PE array's cells its PE work used, weighted by cycles (0 without PE work)."""
        return self.pe_cells / self.pe_busy if self.pe_busy else 0.0

    @property
    def span(self) -> int:
        return self.last_end - self.first_issue

    @property
    def time(self) -> int:
        """The layer's device time: from its first dependent instruction to its last end."""
        return self.last_end - self.start

    @property
    def idle(self) -> int:
        """Cycles of its time when none of its instructions runs (they wait on semaphores)."""
        return self.time - self.active


@dataclass
class EngineStats:
    engine: str
    instructions: int = 0
    busy: int = 0
    wait: int = 0
    idle: int = 0
    first_issue: int = 0
    last_end: int = 0
    critical: int = 0
    waits_on: dict = field(default_factory=dict)   # releasing engine -> cycles of this engine's waits


@dataclass
class CriticalStep:
    instr: int
    engine: str
    layer: int
    start: int
    end: int
    via: str      # how it follows the previous step: "start", "engine" (same-engine order) or "sN"
    gap: int = 0  # cycles between the previous step's end and this start (0 on a tight chain)
    kind: str = ""
    dtype: str = ""
    fabric_bytes: int = 0   # DMA: bytes on the fabric
    transfer_end: int = 0   # DMA: last byte moved (end - latency); else end
    pe_n: int = 0           # matmul/transpose: moving columns streamed
    hbm_kind: str = ""      # DMA: kind of the tensor its HBM side lies in


@dataclass
class Counter:
    name: str
    unit: str
    samples: list  # [(cycle, value)] in time order
    group: str = ""


class Completion(NamedTuple):
    """One completed instruction as the Recorder saw it."""

    engine: str
    index: int    # position in its engine's stream
    issue: int
    end: int
    wait: int     # cycles its engine sat free, blocked on semaphores, before the issue


Signal = SemaphoreEvent  # one semaphore update, kept as the machine reported it


@dataclass
class Capture:
    """What a Recorder saw during one run."""

    completed: list          # [Completion] in completion order
    signals: list            # [Signal] in application order
    cycles: int              # device time when the run stopped
    status: str = "complete"  # complete | hang | fault
    problem: str = ""        # the hang report / fault message


@dataclass
class Profile:
    meta: dict
    instrs: list             # all executed instructions (InstrRecord), program order
    selected: list           # the ones inside the capture window
    layers: list             # LayerStats of the window's layers, program order
    engines: list            # EngineStats over the window's time range
    critical_path: list      # CriticalStep, in time order
    counters: list           # Counter series over the window's time range
    flows: list              # [(releaser id, waiter id, sem)] inside the window
    time_range: tuple        # (first cycle, last cycle) of the window
    origins: list            # [(name, op_type)] of the program
    allocations: list = field(default_factory=list)   # allocation.Allocation of the window


# ---------------------------------------------------------------------------------- static info
def _distinct_bytes(ap) -> int:
    """Bytes an access pattern touches, counting stride-0 (broadcast) dims once."""
    n = itemsize(ap.dtype) * (ap.pcount if ap.partitioned else 1)
    for stride, count in ap.dims:
        if stride:
            n *= count
    return n


def instr_kind(ins: Instr) -> str:
    """The opcode refined by what decides its cost or meaning (function, ALU op, DMA direction)."""
    op = ins.op
    if op == "dma_copy":
        return f"dma_copy {ins.operands['src'].space}->{ins.operands['dst'].space}"
    if op == "activate":
        return f"activate {attr(ins, 'func')}"
    if op in ("tensor_tensor", "reduce", "preduce"):
        return f"{op} {attr(ins, 'op')}"
    if op == "tensor_scalar":
        op1 = attr(ins, "op1")
        return f"{op} {attr(ins, 'op0')}" + ("" if op1 == "bypass" else f",{op1}")
    return op


def instr_dtype(ins: Instr) -> str:
    ops = ins.operands
    if ins.op == "matmul":
        return ops["mov"].dtype
    if ins.op == "transpose":
        return ops["src"].dtype
    if ins.op == "dma_copy":
        src, dst = ops["src"].dtype, ops["dst"].dtype
        return dst if src == dst else f"{src}->{dst}"
    if "dst" in ops:
        return ops["dst"].dtype
    return next(iter(ops.values())).dtype if ops else ""


def tensor_locator(program: Program):
    """A function from an HBM byte offset to the kind of the program tensor holding it ("")."""
    spans = sorted((t.offset, t.offset + t.nbytes, t.kind) for t in program.tensors)
    starts = [s[0] for s in spans]

    def kind_at(offset: int) -> str:
        i = bisect_left(starts, offset + 1) - 1
        return spans[i][2] if i >= 0 and spans[i][0] <= offset < spans[i][1] else ""
    return kind_at


def _fill_static(rec: InstrRecord, program: Program, arch: Arch, latency: int, kind_at=None) -> None:
    ins = rec.instr
    rec.kind = instr_kind(ins)
    rec.dtype = instr_dtype(ins)
    rec.flops = instr_flops(ins)
    rec.transfer_end = rec.end
    if ins.op == "dma_copy":
        rec.bytes = instr_bytes(ins)
        # HBM->HBM copies count once, as the fabric model charges them (max of the two sides)
        sides = (ins.operands["src"], ins.operands["dst"])
        rec.hbm_bytes = max((ap.nbytes for ap in sides if ap.space == "hbm"), default=0)
        rec.fabric_bytes = dma_bytes(ins, arch)
        rec.runs = max(contiguous_runs(sides[0]), contiguous_runs(sides[1]))
        hbm_side = next((ap for ap in sides if ap.space == "hbm"), None)
        if hbm_side is not None and kind_at is not None:
            rec.hbm_kind = kind_at(hbm_side.offset)
        rec.transfer_end = max(rec.issue, rec.end - latency)
    elif ins.op == "matmul":
        stat, mov = ins.operands["stat"], ins.operands["mov"]
        rec.pe_rows, rec.pe_cols, rec.pe_n = _pe_shape(stat), stat.free_size, mov.free_size
    elif ins.op == "transpose":
        src = ins.operands["src"]
        rec.pe_rows, rec.pe_cols = _pe_shape(src), src.free_size
        rec.pe_n = rec.pe_rows
    elif ins.op == "host_call":
        host_op = program.host_ops[attr(ins, "op")]
        rec.bytes = sum(program.tensor(n).nbytes for n in [*host_op.inputs, *host_op.outputs] if n)
    seen = set()
    for ap in ins.operands.values():
        if ap.space == "hbm" or ap in seen:
            continue
        seen.add(ap)
        if ap.space == "sbuf":
            rec.sbuf += _distinct_bytes(ap)
        else:
            rec.psum += _distinct_bytes(ap)


def _pe_shape(ap) -> int:
    """Rows of the PE array an operand on partitions fills (its partition count)."""
    return ap.pcount if ap.partitioned else ap.shape[0]


# ---------------------------------------------------------------------------------- intervals
def merged_intervals(intervals) -> list[tuple[int, int]]:
    """Intervals merged where they touch or overlap, in time order."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def union_length(intervals) -> int:
    return sum(end - start for start, end in merged_intervals(intervals))


def _overlap(start: int, end: int, lo: int, hi: int) -> int:
    return max(0, min(end, hi) - max(start, lo))


# ---------------------------------------------------------------------------------- building
def build_profile(program: Program, arch: Arch, capture: Capture, meta: dict,
                  window: tuple[int, int] | None = None) -> Profile:
    """Join the capture with the program and compute everything the trace, database and summary use.

    `window` = (first, last) origin index, both included: only those layers' instructions are
    selected (the run itself is always whole; the critical path always covers the whole run).
    """
    latency = arch.raw["dma"]["latency_cycles"]
    streams: dict[str, list[int]] = defaultdict(list)
    for pid, ins in enumerate(program.instrs):
        streams[ins.engine].append(pid)
    n_origins = len(program.origins)
    by_id: dict[int, InstrRecord] = {}
    kind_at = tensor_locator(program)
    for engine, index, issue, end, wait in capture.completed:
        pid = streams[engine][index]
        ins = program.instrs[pid]
        layer = ins.dbg if 0 <= ins.dbg < n_origins else NO_LAYER
        rec = InstrRecord(pid, engine, index, ins, layer, issue, end, wait)
        _fill_static(rec, program, arch, latency, kind_at)
        by_id[pid] = rec
    instrs = [by_id[k] for k in sorted(by_id)]

    flows_all = _resolve_releases(instrs, capture.signals, streams, by_id)
    critical = _critical_path(instrs, by_id, streams)
    total = capture.cycles

    if window is None:
        selected = instrs
        time_range = (0, total)
    else:
        lo, hi = window
        selected = [r for r in instrs if lo <= r.layer <= hi]
        time_range = ((min(r.issue for r in selected), max(r.end for r in selected)) if selected
                      else (0, 0))
    selected_ids = {r.id for r in selected}
    flows = [f for f in flows_all if f[0] in selected_ids and f[1] in selected_ids]

    origins = [(o.name, o.op_type) for o in program.origins]
    layers = _layer_stats(selected, origins, arch, meta.get("precision", ""), critical)
    engines = _engine_stats(instrs, by_id, time_range, critical)
    counters = _counters(instrs, capture.signals, time_range, arch)
    allocs = allocations(selected)
    for space, name in (("sbuf", "SBUF reserved"), ("psum", "PSUM reserved")):
        lo, hi = time_range
        series = [(min(max(t, lo), hi), v) for t, v in reserved_series(allocs, space)]
        counters.insert(2 if space == "sbuf" else 3, Counter(name, "bytes", series))
    meta = dict(meta)
    meta.update(cycles=total, status=capture.status, instructions=len(instrs),
                selected_instructions=len(selected), compute_dma=compute_dma_overlap(selected))
    if capture.problem:
        meta["problem"] = capture.problem
    return Profile(meta, instrs, selected, layers, engines, critical, counters, flows, time_range, origins,
                   allocs)


def compute_dma_overlap(recs) -> dict:
    """Cycles when a compute engine runs, when a DMA runs, and when both do (HTA's overlap)."""
    compute = [(r.issue, r.end) for r in recs if engine_kind(r.engine) in COMPUTE_KINDS]
    dma = [(r.issue, r.end) for r in recs if engine_kind(r.engine) == "dma"]
    c, d = union_length(compute), union_length(dma)
    return {"compute_cycles": c, "dma_cycles": d, "overlap_cycles": c + d - union_length(compute + dma)}


def _resolve_releases(instrs, signals, streams, by_id) -> list[tuple[int, int, int]]:
    """Find, for every wait, the signal that made the semaphore reach its value; returns the
    (releaser, waiter, semaphore) pairs and sets each record's gating releaser."""
    news: dict[int, list[int]] = defaultdict(list)
    owners: dict[int, list[int]] = defaultdict(list)
    for sem, old, new, _time, engine, index in signals:
        if new > old:
            news[sem].append(new)
            owners[sem].append(streams[engine][index])
    flows = []
    for rec in instrs:
        best_end = -1
        seen = set()
        for sem, value in rec.instr.waits:
            if value <= 0:
                continue
            values = news.get(sem)
            if not values:
                continue
            k = bisect_left(values, value)
            if k == len(values):
                continue
            releaser = by_id.get(owners[sem][k])
            if releaser is None:
                continue
            if releaser.id not in seen:
                seen.add(releaser.id)
                flows.append((releaser.id, rec.id, sem))
            if rec.wait > 0 and releaser.end > best_end:
                best_end = releaser.end
                rec.released_by, rec.release_sem = releaser.id, sem
    return flows


def _critical_path(instrs, by_id, streams) -> list[CriticalStep]:
    """Walk back from the last instruction to complete: through the signal that released a wait
    when the instruction had to wait, else through the previous instruction on its engine."""
    if not instrs:
        return []
    current = max(instrs, key=lambda r: (r.end, ENGINE_INDEX[r.engine]))
    steps: list[CriticalStep] = []
    while current is not None and not current.critical:
        current.critical = True
        if current.wait > 0 and current.released_by >= 0:
            pred, via = by_id.get(current.released_by), f"s{current.release_sem}"
        elif current.index > 0:
            pred, via = by_id.get(streams[current.engine][current.index - 1]), "engine"
        else:
            pred, via = None, "start"
        gap = current.issue - (pred.end if pred is not None else 0)
        steps.append(CriticalStep(current.id, current.engine, current.layer, current.issue, current.end,
                                  via, max(0, gap), current.kind, current.dtype, current.fabric_bytes,
                                  current.transfer_end, current.pe_n, current.hbm_kind))
        current = pred
    steps.reverse()
    return steps


def is_prefetch(rec: InstrRecord) -> bool:
    """A DMA load that waits for nothing (weights, constants): it may run long before its layer."""
    return rec.instr.op == "dma_copy" and not rec.instr.waits


def _layer_stats(selected, origins, arch: Arch, precision: str, critical) -> list[LayerStats]:
    groups: dict[int, list[InstrRecord]] = defaultdict(list)
    for rec in selected:
        groups[rec.layer].append(rec)
    crit_by_layer: dict[int, int] = defaultdict(int)
    for step in critical:
        crit_by_layer[step.layer] += step.end - step.start
    pe_array = arch.raw["pe"]["rows"] * arch.raw["pe"]["cols"]
    layers = []
    for layer in sorted(groups):
        recs = groups[layer]
        name, op_type = origins[layer] if layer >= 0 else ("(no layer)", "")
        st = LayerStats(layer, name, op_type)
        st.first_issue = min(r.issue for r in recs)
        st.last_end = max(r.end for r in recs)
        dependent = [r.issue for r in recs if not is_prefetch(r)]
        st.start = min(dependent) if dependent else st.first_issue
        st.instructions = len(recs)
        compute, dma, host, pe = [], [], [], []
        flops_by_engine: dict[str, int] = defaultdict(int)
        dtypes: dict[str, int] = defaultdict(int)
        pe_shapes: dict[tuple, int] = defaultdict(int)
        for r in recs:
            kind = engine_kind(r.engine)
            st.busy[kind] += r.cycles
            st.wait += r.wait
            st.flops += r.flops
            flops_by_engine[kind] += r.flops
            interval = (max(r.issue, st.start), max(r.end, st.start))
            if kind == "dma":
                dma.append(interval)
                st.dma_bytes += r.bytes
                st.dma_count += 1
                if r.hbm:
                    st.hbm_bytes += r.hbm_bytes
                    moving = r.transfer_end - r.issue
                    inside = _overlap(r.issue, r.transfer_end, st.start, st.last_end)
                    st.hbm_bytes_in_time += (r.hbm_bytes * inside / moving if moving
                                             else r.hbm_bytes * (r.issue >= st.start))
                if r.instr.operands["src"].space == "sbuf" and r.instr.operands["dst"].space == "sbuf":
                    st.copy_cycles += r.cycles
                    st.copy_count += 1
                    st.copy_bytes += r.bytes
            elif kind == "host":
                host.append(interval)
                st.host_bytes += r.bytes
            else:
                compute.append(interval)
            if r.pe_rows:
                pe.append(interval)
                st.pe_busy += r.cycles
                st.pe_cells += r.cycles * r.pe_rows * r.pe_cols / pe_array
                pe_shapes[(r.pe_rows, r.pe_cols, r.pe_n)] += r.cycles
            if r.instr.op == "matmul":
                st.pe_flops += r.flops
                dtypes[r.dtype] += r.flops
        st.compute_active = union_length(compute)
        st.pe_active = union_length(pe)
        if pe_shapes:
            st.pe_rows, st.pe_cols, st.pe_n = max(pe_shapes, key=lambda k: (pe_shapes[k], k))
        st.dma_active = union_length(dma)
        st.host_active = union_length(host)
        st.active = union_length(compute + dma + host)
        st.overlap = st.compute_active + st.dma_active - union_length(compute + dma)
        st.dtype = (max(dtypes, key=dtypes.get) if dtypes
                    else PRECISION_DTYPES.get(precision, ""))
        st.critical = crit_by_layer.get(layer, 0)
        _roofline(st, flops_by_engine, arch)
        st.floor = roof_floor(st, arch)
        st.bound, st.reason = classify(st, arch)
        layers.append(st)
    _assign_lanes(layers)
    _own_times(layers, groups)
    return layers


def _own_times(layers: list[LayerStats], groups: dict) -> None:
    """Each cycle in which some layers have an instruction running is split evenly among them, so
    a layer's own time never counts time it spent waiting for others and the own times of all
    layers add up to at most the latency."""
    edges: list[tuple[int, int, int]] = []   # (time, +1 start / -1 end, position in `layers`)
    for pos, st in enumerate(layers):
        for start, end in merged_intervals((r.issue, r.end) for r in groups[st.layer]):
            edges += ((start, 1, pos), (end, -1, pos))
    edges.sort()
    active: set[int] = set()
    last = 0
    for t, step, pos in edges:
        if active and t > last:
            share = (t - last) / len(active)
            for p in active:
                layers[p].own += share
        last = t
        if step > 0:
            active.add(pos)
        else:
            active.discard(pos)


def _roofline(st: LayerStats, flops_by_engine: dict, arch: Arch) -> None:
    """The compute roof the layer is measured against: the PE at its matmul dtype when it has
    matmuls, else the vector engine doing most of its arithmetic (one element per lane-cycle)."""
    if st.pe_flops > 0:
        st.roof_engine, st.peak_flops = "pe", arch.peak_flops(st.dtype)
        return
    vector = {k: v for k, v in flops_by_engine.items() if k in ("act", "dve", "pool") and v > 0}
    if vector:
        engine = max(vector, key=vector.get)
        st.roof_engine = engine
        st.peak_flops = vector_peak(arch, engine)


def vector_peak(arch: Arch, engine: str) -> float:
    """Elementwise results per second of ACT/DVE/POOL with every partition busy."""
    return arch.partitions * arch.raw[engine]["elements_per_cycle"] * arch.clock_ghz * 1e9


def roof_work(st: LayerStats) -> int:
    return st.pe_flops if st.roof_engine == "pe" else st.flops


def pe_fill_text(rows: int, cols: int, n: int, occupancy: float, arch: Arch) -> str:
    """How much of the PE array a layer's matmuls fill, in words."""
    pe = arch.raw["pe"]
    return (f"its matmuls fill {rows} of {pe['rows']} rows x {cols} of {pe['cols']} columns "
            f"(N {n} of {pe['max_n']}; {100 * occupancy:.0f}% array occupancy)")


def roof_floor(st: LayerStats, arch: Arch) -> float:
    """Cycles the layer needs at best: its HBM bytes at full bandwidth or its work at the roof's
    peak, whichever is longer (the roofline's lower bound on its time)."""
    hz = arch.clock_ghz * 1e9
    mem = st.hbm_bytes_in_time / arch.hbm_bytes_per_second() * hz
    cmp_ = roof_work(st) / st.peak_flops * hz if st.peak_flops else 0.0
    return max(mem, cmp_)


def classify(st: LayerStats, arch: Arch) -> tuple[str, str]:
    """The bound label and the numbers behind it (rules in docs/profile-format.md, "Bound labels")."""
    span = st.time
    if span <= 0:
        return "latency", "no measurable time"
    pct = lambda x: f"{100.0 * x / span:.0f}%"   # noqa: E731
    if st.host_active >= SHARE_THRESHOLD * span:
        return "host", f"host fallback runs {pct(st.host_active)} of its time"
    if st.idle >= SHARE_THRESHOLD * span:
        return "sync", (f"{pct(st.idle)} of its time none of its instructions runs: they wait on "
                        f"semaphores for other work")
    seconds = span / (arch.clock_ghz * 1e9)
    bw = arch.hbm_bytes_per_second()
    work = roof_work(st)
    u_mem = st.hbm_bytes_in_time / bw / seconds
    u_cmp = work / st.peak_flops / seconds if st.peak_flops else 0.0
    ridge = st.peak_flops / bw if st.peak_flops else 0.0
    intensity = work / st.hbm_bytes if st.hbm_bytes else math.inf
    dma_gbps = (st.hbm_bytes_in_time / (st.dma_active / (arch.clock_ghz * 1e9)) / 1e9
                if st.dma_active else 0.0)
    mem_text = (f"HBM at {100 * u_mem:.0f}% of its {bw / 1e9:.0f} GB/s roof over its time (DMA active "
                f"{pct(st.dma_active)} of it, {dma_gbps:.0f} GB/s while active)")
    cmp_text = (f"{st.roof_engine or 'compute'} at {100 * u_cmp:.1f}% of its peak "
                f"{st.peak_flops / 1e12:.3g} TFLOP/s over its time")
    ai_text = (f"intensity {intensity:.1f} FLOP/B {'<' if intensity < ridge else '>='} ridge {ridge:.1f}"
               if st.hbm_bytes and st.peak_flops else "")
    join = lambda *parts: "; ".join(t for t in parts if t)   # noqa: E731
    # a roof reached decides, whichever side the intensity puts the layer on: an op at a large share
    # of peak compute is compute-bound even if its bytes alone would make it memory-bound
    if max(u_mem, u_cmp) >= ROOF_THRESHOLD:
        if u_cmp >= u_mem:
            near = " (near peak)" if u_cmp >= NEAR_PEAK else ""
            return "compute", join(cmp_text + near, ai_text)
        near = " (near peak)" if u_mem >= NEAR_PEAK else ""
        return "memory", join(mem_text + near, ai_text)
    engine_active = st.pe_active if st.roof_engine == "pe" else st.compute_active
    if engine_active >= SHARE_THRESHOLD * span:
        engine = (st.roof_engine or "compute").upper()
        if st.roof_engine == "pe":
            fill = pe_fill_text(st.pe_rows, st.pe_cols, st.pe_n, st.pe_occupancy, arch)
            return "compute", join(f"PE busy {pct(engine_active)} of its time but {fill}, so it reaches "
                                   f"{100 * u_cmp:.1f}% of peak", ai_text)
        return "compute", join(f"{engine} busy {pct(engine_active)} of its time at {100 * u_cmp:.1f}% of its "
                               f"peak (few partitions or short rows per instruction)", ai_text)
    side = mem_text if st.dma_active >= st.compute_active else cmp_text
    return "latency", join(f"{side}: no engine busy half its time and no roof at {ROOF_THRESHOLD:.0%}",
                           ai_text) + " (fixed per-instruction costs and DMA latency dominate)"


def _assign_lanes(layers: list[LayerStats]) -> None:
    """Greedy interval partitioning: overlapping layers go on separate lanes (fewest lanes)."""
    lane_ends: list[int] = []
    for st in sorted(layers, key=lambda s: (s.first_issue, -s.last_end, s.layer)):
        for lane, end in enumerate(lane_ends):
            if end <= st.first_issue:
                st.lane = lane
                lane_ends[lane] = st.last_end
                break
        else:
            st.lane = len(lane_ends)
            lane_ends.append(st.last_end)


def _engine_stats(instrs, by_id, time_range, critical) -> list[EngineStats]:
    lo, hi = time_range
    stats: dict[str, EngineStats] = {}
    for rec in instrs:
        st = stats.get(rec.engine)
        if st is None:
            st = stats[rec.engine] = EngineStats(rec.engine, first_issue=rec.issue, last_end=rec.end)
        if lo <= rec.issue <= hi:
            st.instructions += 1
        st.busy += _overlap(rec.issue, rec.end, lo, hi)
        waited = _overlap(rec.issue - rec.wait, rec.issue, lo, hi)
        st.wait += waited
        if waited and rec.released_by >= 0:
            source = by_id[rec.released_by].engine
            st.waits_on[source] = st.waits_on.get(source, 0) + waited
        st.first_issue = min(st.first_issue, rec.issue)
        st.last_end = max(st.last_end, rec.end)
    for step in critical:
        if step.engine in stats:
            stats[step.engine].critical += _overlap(step.start, step.end, lo, hi)
    for st in stats.values():
        st.idle = max(0, (hi - lo) - st.busy - st.wait)
    return [stats[e] for e in ENGINES if e in stats]


# ---------------------------------------------------------------------------------- counters
def _step_series(events, lo: int, hi: int) -> list[tuple[int, int]]:
    """A level from (time, delta) events, one sample per distinct time, clipped to [lo, hi]."""
    events.sort()
    level = 0
    samples: list[tuple[int, int]] = []
    i = 0
    while i < len(events) and events[i][0] <= lo:
        level += events[i][1]
        i += 1
    samples.append((lo, level))
    while i < len(events) and events[i][0] <= hi:
        t = events[i][0]
        while i < len(events) and events[i][0] == t:
            level += events[i][1]
            i += 1
        if samples[-1][0] == t:
            samples[-1] = (t, level)
        elif samples[-1][1] != level:
            samples.append((t, level))
    return samples


def window_cycles(span: int) -> int:
    return max(MIN_WINDOW_CYCLES, math.ceil(span / MAX_BANDWIDTH_WINDOWS))


def _bandwidth_series(instrs, lo: int, hi: int, arch: Arch) -> list[tuple[int, float]]:
    """HBM payload bytes per cycle averaged over fixed windows, from the emulator's own rate model:
    the n transfers in flight (issue to last byte) each move min(fabric / n, queue cap) fabric
    bytes per cycle, of which a share hbm_bytes / fabric_bytes is HBM payload."""
    if hi <= lo:
        return [(lo, 0.0)]
    fabric = bytes_per_cycle(arch.raw["hbm"]["bandwidth_gbps"], arch)
    cap = bytes_per_cycle(arch.raw["dma"]["queue_gbps"], arch)
    span = hi - lo
    width = window_cycles(span)
    n_windows = math.ceil(span / width)
    totals = [0.0] * n_windows

    def deposit(start: float, stop: float, rate: float) -> None:
        start, stop = max(start, lo), min(stop, hi)
        if stop <= start or rate == 0:
            return
        w = int((start - lo) // width)
        while w < n_windows:
            w_lo = lo + w * width
            part = min(stop, w_lo + width) - max(start, w_lo)
            if part > 0:
                totals[w] += rate * part
            if w_lo + width >= stop:
                break
            w += 1

    edges: list[tuple[int, int, float]] = []   # (time, +1/-1 transfers, +/- HBM share)
    for rec in instrs:
        if rec.instr.op != "dma_copy":
            continue
        share = rec.hbm_bytes / rec.fabric_bytes if rec.fabric_bytes else 0.0
        if rec.transfer_end > rec.issue:
            edges += ((rec.issue, 1, share), (rec.transfer_end, -1, -share))
        elif rec.hbm_bytes and lo <= rec.issue < hi:
            totals[(rec.issue - lo) // width] += rec.hbm_bytes
    edges.sort(key=lambda e: e[0])
    active, hbm_share, i = 0, 0.0, 0
    while i < len(edges):
        t = edges[i][0]
        while i < len(edges) and edges[i][0] == t:
            active += edges[i][1]
            hbm_share += edges[i][2]
            i += 1
        if active > 0 and i < len(edges):
            deposit(t, edges[i][0], min(fabric / active, cap) * max(0.0, hbm_share))
    samples = [(lo + w * width, totals[w] / min(width, hi - (lo + w * width))) for w in range(n_windows)]
    samples.append((hi, 0.0))
    return samples


def _counters(instrs, signals, time_range, arch: Arch) -> list[Counter]:
    lo, hi = time_range
    sbuf, psum = [], []
    for rec in instrs:
        if rec.sbuf:
            sbuf += ((rec.issue, rec.sbuf), (rec.end, -rec.sbuf))
        if rec.psum:
            psum += ((rec.issue, rec.psum), (rec.end, -rec.psum))
    counters = [Counter("SBUF in use", "bytes", _step_series(sbuf, lo, hi)),
                Counter("PSUM in use", "bytes", _step_series(psum, lo, hi))]
    bandwidth = _bandwidth_series(instrs, lo, hi, arch)
    counters.append(Counter("HBM bandwidth", "GB/s", [(t, v * arch.clock_ghz) for t, v in bandwidth]))
    per_sem: dict[int, list] = defaultdict(list)
    last: dict[int, int] = {}
    for sem, _old, new, t, _engine, _index in signals:
        if t < lo:
            last[sem] = new
        elif t <= hi:
            series = per_sem[sem]
            if not series and sem in last:
                series.append((lo, last[sem]))
            if series and series[-1][0] == t:
                series[-1] = (t, new)
            else:
                series.append((t, new))
    for sem in sorted(per_sem):
        counters.append(Counter(f"s{sem}", "count", per_sem[sem], group="semaphores"))
    return counters
