"""Turn a Profile into a Perfetto trace: a plan of tracks, slice columns, counters and instants, then
written with TraceWriter (columns at a time). The plan is writer-neutral so the benchmark can feed
the very same events to a naive writer.

Tracks, in this order under the device root:
  * one per engine that ran something, in the ISA's fixed order (pe, act, dve, pool, dma0..dma15,
    host): one slice per instruction, named by its opcode;
  * "layers": one child lane per set of overlapping ONNX nodes (greedy interval partitioning, so
    overlapping layers never share a lane and nothing is clipped); one slice per node spanning its
    instructions;
  * counters: "SBUF in use", "PSUM in use" (bytes touched by in-flight instructions), "SBUF reserved",
    "PSUM reserved" (bytes holding live values, see allocation.py), "HBM bandwidth"
    (GB/s per window) and, under "semaphores", one counter per semaphore the program signals.
Timestamps are ns of device time: ns(c) = floor(c / clock_ghz + 0.5) for each endpoint, so a slice's
ns duration is within 1 ns of its cycles / clock_ghz; args.cycles carries the exact cycle count.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from device_model.assembly import format_ap
from device_model.isa import ENGINE_INDEX

from .analysis import Profile
from .perfetto_writer import DROPPED_EVENT_NAME, TraceStats, TraceWriter

ENGINE_DESCRIPTIONS = {
    "pe": "tensor engine: systolic matmul / transpose",
    "act": "activation engine: func(in * scale + bias)",
    "dve": "vector engine: elementwise, reductions, copies",
    "pool": "general SIMD engine: cross-partition work, gather",
    "host": "host fallback: ops the device cannot run",
}
LAYERS_TRACK = "layers"
SEMAPHORES_TRACK = "semaphores"
STATUS_EVENT_NAME = "run stopped"


@dataclass
class TrackSpec:
    key: str
    name: str
    kind: str                  # "slice" or "counter"
    parent: str | None = None  # key of the parent track; None = the device root
    rank: int | None = None
    description: str | None = None
    unit: str | None = None


@dataclass
class SliceColumns:
    ts: list
    dur: list
    names: list
    args: dict
    flow_out: list | None = None
    flow_in: list | None = None

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class TracePlan:
    device_name: str
    metadata: dict
    tracks: list = field(default_factory=list)       # TrackSpec, in declaration order
    slices: dict = field(default_factory=dict)       # track key -> SliceColumns
    counters: dict = field(default_factory=dict)     # track key -> (ts list, value list)
    instants: list = field(default_factory=list)     # (ts, name, args) on the root track
    dropped: int = 0

    @property
    def n_slices(self) -> int:
        return sum(len(c) for c in self.slices.values())


class _Ns:
    """Cycles -> integer ns at the preset clock, cached (the same cycle values recur)."""

    def __init__(self, clock_ghz: float):
        self.clock = clock_ghz
        self.cache: dict[int, int] = {}

    def __call__(self, cycles: int) -> int:
        ns = self.cache.get(cycles)
        if ns is None:
            ns = self.cache[cycles] = int(cycles / self.clock + 0.5)
        return ns


def _attr_text(attrs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(attrs.items()))


_WAIT_KEYS: dict[int, str] = {}
_SIGNAL_KEYS: dict[int, str] = {}


def _wait_key(sem: int) -> str:
    """Arg name of a wait: `wait sN >=` with the value as the arg's value."""
    key = _WAIT_KEYS.get(sem)
    if key is None:
        key = _WAIT_KEYS[sem] = f"wait s{sem} >="
    return key


def _signal_key(sem: int) -> str:
    key = _SIGNAL_KEYS.get(sem)
    if key is None:
        key = _SIGNAL_KEYS[sem] = f"signal s{sem} +="
    return key


def build_plan(profile: Profile, flows: bool = False, max_slices: int | None = None,
               metadata: dict | None = None) -> TracePlan:
    meta = profile.meta
    clock = float(meta["clock_ghz"])
    ns = _Ns(clock)
    plan = TracePlan(device_name=f"XPU {meta.get('arch', '')}: {meta.get('model', '')}".strip(),
                     metadata=dict(metadata or {}))
    records = sorted(profile.selected, key=lambda r: (r.issue, ENGINE_INDEX[r.engine], r.index))
    if max_slices is not None and len(records) > max_slices:
        plan.dropped = len(records) - max_slices
        records = records[:max_slices]
    kept = {r.id for r in records}
    flow_out: dict[int, list] = {}
    flow_in: dict[int, list] = {}
    if flows:
        fid = 0
        for releaser, waiter, _sem in profile.flows:
            if releaser in kept and waiter in kept:
                fid += 1
                flow_out.setdefault(releaser, []).append(fid)
                flow_in.setdefault(waiter, []).append(fid)

    origins = profile.origins
    by_engine: dict[str, list] = {}
    for rec in sorted(records, key=lambda r: (ENGINE_INDEX[r.engine], r.index)):
        by_engine.setdefault(rec.engine, []).append(rec)
    ap_text: dict = {}
    for engine, recs in by_engine.items():
        plan.tracks.append(TrackSpec(engine, engine, "slice", None, ENGINE_INDEX[engine],
                                     ENGINE_DESCRIPTIONS.get(engine, f"DMA queue {engine[3:]}")))
        rows = []
        for r in recs:
            ins = r.instr
            args = {}
            if r.layer >= 0:
                args["node"], args["op_type"] = origins[r.layer]
            args["pc"] = r.index
            args["cycles"] = r.cycles
            args["wait_cycles"] = r.wait
            if r.dtype:
                args["dtype"] = r.dtype
            if r.flops:
                args["flops"] = r.flops
            if r.bytes:
                args["bytes"] = r.bytes
            if r.pe_rows:   # PE array use: K rows x M columns of the array, N moving columns
                args["pe_rows"], args["pe_cols"], args["pe_n"] = r.pe_rows, r.pe_cols, r.pe_n
            for name, ap in ins.operands.items():
                # the pattern repeats across tiles (interned once per track), the offset does not:
                # `dst` + `dst_offset` together are the assembly spelling of the operand
                key = (ap.space, ap.pstart, ap.pcount, ap.dims, ap.dtype)
                text = ap_text.get(key)
                if text is None:
                    text = ap_text[key] = format_ap(replace(ap, offset=0)).replace("@0x0", "", 1)
                args[name] = text
                args[name + "_offset"] = ap.offset
            if ins.attrs:
                args["attrs"] = _attr_text(ins.attrs)
            # one int arg per semaphore: the names repeat (interned once per track), the values are
            # varints; a text like "wait=s2>=75" would be a new string for nearly every instruction
            for sem, value in ins.waits:
                args[_wait_key(sem)] = value
            for sem, value in ins.signals:
                args[_signal_key(sem)] = value
            rows.append(args)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        columns = {k: [row.get(k) for row in rows] for k in keys}
        plan.slices[engine] = SliceColumns(
            ts=[ns(r.issue) for r in recs], dur=[ns(r.end) - ns(r.issue) for r in recs],
            names=[r.instr.op for r in recs], args=columns,
            flow_out=[tuple(flow_out[r.id]) if r.id in flow_out else None for r in recs] if flows else None,
            flow_in=[tuple(flow_in[r.id]) if r.id in flow_in else None for r in recs] if flows else None)

    _plan_layers(plan, profile, records, ns)
    _plan_counters(plan, profile, records, ns)
    if profile.meta.get("status", "complete") != "complete":
        plan.instants.append((ns(int(meta["cycles"])), STATUS_EVENT_NAME,
                              {"status": meta["status"], "problem": meta.get("problem", "")}))
    if plan.dropped:
        end = max((ns(r.end) for r in records), default=0)
        plan.instants.append((end, DROPPED_EVENT_NAME,
                              {"dropped_slices": plan.dropped, "max_slices": int(max_slices or 0)}))
    plan.instants.sort(key=lambda item: item[0])
    return plan


def _plan_layers(plan: TracePlan, profile: Profile, records, ns: _Ns) -> None:
    spans: dict[int, list] = {}
    for r in records:
        span = spans.get(r.layer)
        if span is None:
            spans[r.layer] = [r.issue, r.end]
        else:
            span[0] = min(span[0], r.issue)
            span[1] = max(span[1], r.end)
    layers = [st for st in profile.layers if st.layer in spans]
    if not layers:
        return
    plan.tracks.append(TrackSpec(LAYERS_TRACK, LAYERS_TRACK, "slice", None, 100,
                                 "ONNX nodes: each slice spans the node's instructions; nodes that "
                                 "overlap in time are on separate lanes"))
    lanes: dict[int, list] = {}
    for st in sorted(layers, key=lambda s: (spans[s.layer][0], s.layer)):
        lanes.setdefault(st.lane, []).append(st)
    for lane in sorted(lanes):
        key = f"{LAYERS_TRACK}/{lane}"
        plan.tracks.append(TrackSpec(key, f"lane {lane}", "slice", LAYERS_TRACK, lane))
        sts = lanes[lane]
        starts = [ns(spans[st.layer][0]) for st in sts]
        plan.slices[key] = SliceColumns(
            ts=starts, dur=[ns(spans[st.layer][1]) - s for st, s in zip(sts, starts)],
            names=[st.name for st in sts],
            args={"op_type": [st.op_type for st in sts], "layer": [st.layer for st in sts],
                  "instructions": [st.instructions for st in sts],
                  "span_cycles": [st.span for st in sts],
                  "busy_cycles": [sum(st.busy.values()) for st in sts],
                  "critical_cycles": [st.critical for st in sts],
                  "flops": [st.flops for st in sts], "dma_bytes": [st.dma_bytes for st in sts],
                  "bound": [st.bound for st in sts], "bound_reason": [st.reason for st in sts],
                  "own_cycles": [round(st.own) for st in sts],
                  "pe_occupancy_pct": [round(100 * st.pe_occupancy, 1) for st in sts]})


def _plan_counters(plan: TracePlan, profile: Profile, records, ns: _Ns) -> None:
    limit = max((r.end for r in records), default=0) if plan.dropped else None
    rank = 200
    sem_parent = False
    for counter in profile.counters:
        samples = counter.samples if limit is None else [s for s in counter.samples if s[0] <= limit]
        if not samples:
            continue
        ts, values = [], []
        for cycle, value in samples:
            t = ns(cycle)
            if ts and ts[-1] == t:
                values[-1] = value
            else:
                ts.append(t)
                values.append(value)
        if counter.group == "semaphores":
            if not sem_parent:
                plan.tracks.append(TrackSpec(SEMAPHORES_TRACK, SEMAPHORES_TRACK, "slice", None, 300,
                                             "semaphore values after each signal"))
                sem_parent = True
            key = f"{SEMAPHORES_TRACK}/{counter.name}"
            plan.tracks.append(TrackSpec(key, counter.name, "counter", SEMAPHORES_TRACK,
                                         int(counter.name[1:]), unit="count"))
        else:
            key = counter.name
            plan.tracks.append(TrackSpec(key, counter.name, "counter", None, rank, _COUNTER_DOCS[key],
                                         unit=counter.unit))
            rank += 1
        plan.counters[key] = (ts, values)


_COUNTER_DOCS = {
    "SBUF in use": "bytes of SBUF touched by the instructions in flight",
    "PSUM in use": "bytes of PSUM touched by the instructions in flight",
    "SBUF reserved": "bytes of SBUF holding a live value (written, still to be read)",
    "PSUM reserved": "bytes of PSUM holding a live value (written, still to be read)",
    "HBM bandwidth": "HBM traffic of DMA transfers, averaged over fixed windows (GB/s)",
}


def write_plan(plan: TracePlan, writer, columnar: bool = True):
    """Declare the plan's tracks on `writer` and add its events; returns writer.close()."""
    rich = isinstance(writer, TraceWriter)
    handles = {}
    for spec in plan.tracks:
        parent = handles[spec.parent] if spec.parent else None
        if spec.kind == "counter":
            handles[spec.key] = (writer.add_counter_track(spec.name, spec.unit, parent, rank=spec.rank,
                                                          description=spec.description)
                                 if rich else writer.add_counter_track(spec.name, spec.unit, parent))
        else:
            handles[spec.key] = (writer.add_track(spec.name, parent, rank=spec.rank,
                                                  description=spec.description)
                                 if rich else writer.add_track(spec.name, parent))
    for key, cols in plan.slices.items():
        track = handles[key]
        if columnar and rich:
            writer.add_slices(track, cols.ts, cols.dur, cols.names, cols.args,
                              flow_out=cols.flow_out, flow_in=cols.flow_in)
            continue
        arg_items = list(cols.args.items())
        add_slice = writer.add_slice
        for i in range(len(cols.ts)):
            args = {k: col[i] for k, col in arg_items if col[i] is not None}
            add_slice(track, cols.ts[i], cols.dur[i], cols.names[i], args,
                      cols.flow_out[i] if cols.flow_out else None, cols.flow_in[i] if cols.flow_in else None)
    for key, (ts, values) in plan.counters.items():
        track = handles[key]
        add_counter = writer.add_counter
        for t, v in zip(ts, values):
            add_counter(track, t, v)
    if hasattr(writer, "add_instant"):
        for ts, name, args in plan.instants:
            writer.add_instant(writer.root, ts, name, args)
    return writer.close()


def export_trace(profile: Profile, path: str | Path, flows: bool = False, max_slices: int | None = None,
                 gzip: bool | None = None, metadata: dict | None = None) -> tuple[TraceStats, TracePlan]:
    """Write `profile` as a Perfetto trace at `path`; returns the writer's stats and the plan."""
    plan = build_plan(profile, flows=flows, max_slices=max_slices, metadata=metadata)
    writer = TraceWriter(path, gzip=gzip, metadata=plan.metadata, device_name=plan.device_name)
    try:
        stats = write_plan(plan, writer)
    except BaseException:
        writer.close()
        raise
    return stats, plan
