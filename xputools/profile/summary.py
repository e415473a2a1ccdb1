"""`summary`: the bottleneck report of one profile, as a versioned JSON-able dict and as one screen of
text. Everything is computed from the profile database (docs/profile-format.md, "Summary JSON").
"""
from __future__ import annotations

from .database import ProfileData

SUMMARY_SCHEMA = "xpu-prof-summary"
SUMMARY_VERSION = 1
DEFAULT_TOP = 10
MAX_CHAIN_SEGMENTS = 8
MIN_IMPACT_SHARE = 0.01   # recommendations worth less than 1% of the latency are left out
GROUP_AFTER = 3           # more latency-/sync-bound layers than this are reported as one group


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _kind(engine: str) -> str:
    return "dma" if engine.startswith("dma") else engine


def build_summary(data: ProfileData, top: int | None = None) -> dict:
    """The summary dict; `top` limits the layer and instruction-kind lists (None: all; the counts
    of all are in `layer_count` / `instruction_kind_count`)."""
    meta = data.meta
    cycles = int(meta["cycles"])
    lo, hi = int(meta["window_start_cycle"]), int(meta["window_end_cycle"])
    span = max(1, hi - lo)
    batch = int(meta.get("batch") or 1)
    seconds = cycles / (data.clock_ghz * 1e9)
    numbers = meta.get("arch_numbers") or {}
    summary = {
        "schema": SUMMARY_SCHEMA, "version": SUMMARY_VERSION,
        "profile": str(data.path), "trace": meta.get("trace", ""),
        "model": meta.get("model", ""), "arch": meta.get("arch", ""), "precision": meta.get("precision", ""),
        "batch": batch, "status": meta.get("status", "complete"), "problem": meta.get("problem", ""),
        "clock_ghz": data.clock_ghz,
        "latency": {"cycles": cycles, "us": round(data.us(cycles), 3)},
        "throughput": {"inferences_per_s": round(batch / seconds, 1) if seconds else 0.0, "batch": batch},
        "window": {"layers": meta.get("layers") or "all", "start_cycle": lo, "end_cycle": hi,
                   "us": round(data.us(hi - lo), 3),
                   "instructions": int(meta.get("selected_instructions", 0)),
                   "run_instructions": int(meta.get("instructions", 0))},
        "trace_info": {"slices": int(meta.get("trace_slices", 0) or 0),
                       "dropped_slices": int(meta.get("trace_dropped_slices", 0) or 0),
                       "bytes": int(meta.get("trace_bytes", 0) or 0),
                       "flows": int(meta.get("trace_flows", 0) or 0)},
    }
    summary["engines"] = _engines(data, span)
    crit = _critical(data, cycles)
    summary["layer_count"] = len(data.layers)
    summary["layers"] = _layers(data, cycles, crit["cycles"], top)
    summary["critical_path"] = crit
    summary["dma"] = _dma(data, cycles, numbers)
    summary["memory"] = {"sbuf_peak_bytes": int(data.counter_peaks.get("SBUF in use", 0)),
                         "psum_peak_bytes": int(data.counter_peaks.get("PSUM in use", 0)),
                         "sbuf_capacity_bytes": int(numbers.get("sbuf_bytes", 0)),
                         "psum_capacity_bytes": int(numbers.get("psum_bytes", 0))}
    summary["instruction_kind_count"] = len(data.kinds)
    summary["instruction_kinds"] = _kinds(data, top)
    summary["recommendations"] = recommendations(data, summary)
    return summary


def _engines(data: ProfileData, span: int) -> list[dict]:
    waits: dict[str, dict] = {}
    for row in data.engine_waits:
        waits.setdefault(row["engine"], {})[row["released_by"]] = row["cycles"]
    out = []
    for e in data.engines:
        by_kind: dict[str, int] = {}
        for source, cyc in waits.get(e["engine"], {}).items():
            by_kind[_kind(source)] = by_kind.get(_kind(source), 0) + cyc
        total_wait = sum(by_kind.values())
        out.append({
            "engine": e["engine"], "instructions": e["instructions"],
            "busy_pct": _pct(e["busy_cycles"], span), "wait_pct": _pct(e["wait_cycles"], span),
            "idle_pct": _pct(e["idle_cycles"], span),
            "busy_us": round(data.us(e["busy_cycles"]), 3), "wait_us": round(data.us(e["wait_cycles"]), 3),
            "critical_us": round(data.us(e["critical_cycles"]), 3),
            "waits_on": {k: _pct(v, total_wait) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        })
    return out


def _layers(data: ProfileData, cycles: int, crit_cycles: int, top: int | None) -> list[dict]:
    rows = []
    for layer in data.layers:
        time_s = layer["time_cycles"] / (data.clock_ghz * 1e9)
        achieved = layer["flops"] / time_s if time_s else 0.0
        dma_s = layer["dma_active_cycles"] / (data.clock_ghz * 1e9)
        rows.append({
            "layer": layer["layer"], "name": layer["name"], "op_type": layer["op_type"],
            "time_us": round(data.us(layer["time_cycles"]), 3),
            "share_pct": _pct(layer["time_cycles"], cycles),
            "span_us": round(data.us(layer["span_cycles"]), 3),
            "start_cycle": layer["start_cycle"], "end_cycle": layer["end_cycle"],
            "critical_us": round(data.us(layer["critical_cycles"]), 3),
            "critical_pct": _pct(layer["critical_cycles"], crit_cycles),
            "busy_us": round(data.us(layer["busy_cycles"]), 3),
            "instructions": layer["instructions"], "dtype": layer["dtype"],
            "flops": layer["flops"], "tflops": round(achieved / 1e12, 6),
            "peak_tflops": round(layer["peak_flops"] / 1e12, 6),
            "peak_pct": round(100.0 * achieved / layer["peak_flops"], 2) if layer["peak_flops"] else 0.0,
            "roof_engine": layer["roof_engine"],
            "dma_bytes": layer["dma_bytes"], "hbm_bytes": layer["hbm_bytes"],
            "dma_gbps": round(layer["hbm_bytes_in_time"] / dma_s / 1e9, 2) if dma_s else 0.0,
            "dma_pct": _pct(layer["dma_active_cycles"], layer["time_cycles"]),
            "compute_pct": _pct(layer["compute_active_cycles"], layer["time_cycles"]),
            "idle_pct": _pct(layer["idle_cycles"], layer["time_cycles"]),
            "host_us": round(data.us(layer["host_cycles"]), 3),
            "bound": layer["bound"], "bound_reason": layer["bound_reason"],
        })
    rows.sort(key=lambda r: (-r["critical_us"], -r["time_us"], r["layer"]))
    return rows if top is None else rows[:top]


def _critical(data: ProfileData, cycles: int) -> dict:
    steps = data.critical_path
    total = sum(s["end_cycle"] - s["start_cycle"] + s["gap_cycles"] for s in steps)
    by_engine: dict[str, int] = {}
    by_layer: dict[str, int] = {}
    segments: list[dict] = []
    for s in steps:
        cyc = s["end_cycle"] - s["start_cycle"]
        kind = _kind(s["engine"])
        by_engine[kind] = by_engine.get(kind, 0) + cyc
        by_layer[s["layer_name"]] = by_layer.get(s["layer_name"], 0) + cyc
        if segments and segments[-1]["layer"] == s["layer_name"]:
            seg = segments[-1]
            if seg["engines"][-1] != s["engine"]:
                seg["engines"].append(s["engine"])
            seg["cycles"] += cyc + s["gap_cycles"]
            seg["instructions"] += 1
        else:
            segments.append({"layer": s["layer_name"], "engines": [s["engine"]], "instructions": 1,
                             "cycles": cyc + s["gap_cycles"], "start_cycle": s["start_cycle"]})
    gaps = sum(s["gap_cycles"] for s in steps)
    if gaps:
        by_engine["(gaps)"] = gaps
    for seg in segments:
        seg["us"] = round(data.us(seg.pop("cycles")), 3)
    return {
        "cycles": total, "us": round(data.us(total), 3), "instructions": len(steps),
        "covers_latency": total == cycles,
        "by_engine": {k: _pct(v, total) for k, v in sorted(by_engine.items(), key=lambda kv: -kv[1])},
        "by_layer": [{"name": k, "pct": _pct(v, total), "us": round(data.us(v), 3)}
                     for k, v in sorted(by_layer.items(), key=lambda kv: -kv[1])],
        "segments": segments,
    }


def _dma(data: ProfileData, cycles: int, numbers: dict) -> dict:
    d = data.dma
    run_s = cycles / (data.clock_ghz * 1e9)
    active_s = d["active_cycles"] / (data.clock_ghz * 1e9)
    return {
        "transfers": d["transfers"], "bytes": d["bytes"], "hbm_bytes": d["hbm_bytes"],
        "avg_gbps": round(d["hbm_bytes"] / run_s / 1e9, 2) if run_s else 0.0,
        "active_gbps": round(d["hbm_bytes"] / active_s / 1e9, 2) if active_s else 0.0,
        "active_pct": _pct(d["active_cycles"], cycles),
        "peak_window_gbps": round(float(data.counter_peaks.get("HBM bandwidth", 0.0)), 2),
        "peak_gbps": numbers.get("hbm_gbps", 0.0),
    }


def _kinds(data: ProfileData, top: int | None) -> list[dict]:
    busy = sum(k["cycles"] for k in data.kinds) or 1
    rows = [{"engine": k["engine"], "kind": k["kind"], "dtype": k["dtype"], "count": k["count"],
             "busy_us": round(data.us(k["cycles"]), 3), "share_pct": _pct(k["cycles"], busy),
             "flops": k["flops"], "bytes": k["bytes"]} for k in data.kinds]
    return rows if top is None else rows[:top]


# ---------------------------------------------------------------------------------- recommendations
def recommendations(data: ProfileData, s: dict) -> list[dict]:
    """Ranked advice; each item names the numbers behind it and the latency at stake (`impact`): the
    critical-path time of what it touches, an upper bound on what following it can save."""
    cycles = s["latency"]["cycles"]
    us = data.us
    numbers = data.meta.get("arch_numbers") or {}
    peak_gbps = numbers.get("hbm_gbps", 0.0)
    lat_us = us(numbers.get("dma_latency_cycles", 0))
    recs: list[dict] = []

    def add(rule: str, impact: float, message: str, **nums) -> None:
        recs.append({"rule": rule, "impact_us": round(us(impact), 3), "impact_pct": _pct(impact, cycles),
                     "message": message, "numbers": nums})

    latency_dma, latency_cmp, sync = [], [], []
    for layer in data.layers:
        crit = layer["critical_cycles"]
        time_us = us(layer["time_cycles"])
        if layer["host_cycles"]:
            impact = min(layer["host_cycles"], crit) if crit else 0
            add("host-fallback", impact,
                f"host fallback for {layer['op_type'] or 'an op'} ({layer['name']}) costs "
                f"{_pct(impact, cycles):.0f}% of latency ({us(layer['host_cycles']):.1f} us on the host, "
                f"{layer['host_bytes'] / 1e3:.1f} KB over the {numbers.get('host_gbps', 0):g} GB/s host link "
                f"plus {us(numbers.get('host_call_cycles', 0)):.0f} us hand-off per call): run it on the "
                f"device (`xpu check` says why it cannot) or express it with supported ops",
                layer=layer["name"], host_us=round(us(layer["host_cycles"]), 3),
                host_bytes=layer["host_bytes"])
        bound = layer["bound"]
        if bound == "memory":
            dma_s = layer["dma_active_cycles"] / (data.clock_ghz * 1e9)
            gbps = layer["hbm_bytes_in_time"] / dma_s / 1e9 if dma_s else 0.0
            work = layer["pe_flops" if layer["roof_engine"] == "pe" else "flops"]
            intensity = work / max(1, layer["hbm_bytes"])
            add("memory-bound", crit,
                f"layer {layer['name']} ({layer['op_type']}) is memory-bound: "
                f"{_pct(layer['dma_active_cycles'], layer['time_cycles']):.0f}% of its {time_us:.1f} us in "
                f"DMA at {gbps:.0f} GB/s of {peak_gbps:.0f}, {intensity:.1f} FLOP/B: fuse it with its "
                f"neighbours or keep its tensors in SBUF; a narrower dtype moves fewer bytes",
                layer=layer["name"], dma_pct=_pct(layer["dma_active_cycles"], layer["time_cycles"]),
                gbps=round(gbps, 1), peak_gbps=peak_gbps, flop_per_byte=round(intensity, 2))
        elif bound == "compute" and layer["roof_engine"] == "pe" and layer["dtype"] == "f32":
            add("compute-bound-f32", crit * 0.75,
                f"layer {layer['name']} is compute-bound on the PE in f32, which runs at 1/4 of the bf16 "
                f"rate: --precision bf16 (or --keep for the rest) could save up to 75% of its "
                f"{us(crit):.1f} us on the critical path (check accuracy with `xpu acc`)",
                layer=layer["name"], critical_us=round(us(crit), 3))
        elif bound == "latency":
            (latency_dma if layer["dma_active_cycles"] >= layer["compute_active_cycles"]
             else latency_cmp).append(layer)
        elif bound == "sync":
            sync.append(layer)

    def dma_why(ls: list) -> str:
        count = max(1, sum(x["dma_count"] for x in ls))
        dma_cycles = sum(x["dma_cycles"] for x in ls)
        seconds = dma_cycles / (data.clock_ghz * 1e9)
        rate = sum(x["hbm_bytes"] for x in ls) / seconds / 1e9 if dma_cycles else 0.0
        size_kb = sum(x["dma_bytes"] for x in ls) / count / 1e3
        return (f"latency-bound on DMA: {count} transfers averaging {size_kb:.1f} KB and "
                f"{us(dma_cycles / count):.2f} us each ({rate:.0f} GB/s per transfer of {peak_gbps:.0f}; "
                f"{lat_us:.1f} us of each is fixed latency): "
                f"issue loads earlier (prefetch), keep more transfers in flight on separate queues, and use "
                f"fewer, larger transfers")

    _group(add, latency_dma, cycles, us, "latency-bound-dma", dma_why)
    _group(add, latency_cmp, cycles, us, "latency-bound-compute", lambda ls: (
        "latency-bound on compute: small instructions (few partitions or short rows) pay fixed "
        "per-instruction costs: use all partitions and longer rows (larger tiles, bigger batch)"))
    _group(add, sync, cycles, us, "sync-bound", lambda ls: (
        f"sync-bound: "
        f"{sum(x['idle_cycles'] for x in ls) * 100 / max(1, sum(x['time_cycles'] for x in ls)):.0f}% "
        f"of the time no instruction of the layer runs: they wait on semaphores for other work; "
        f"overlap it with that work (more buffers, independent work issued earlier) or shorten what it "
        f"waits for"))

    crit_by_engine = {e["engine"]: e["critical_cycles"] for e in data.engines}
    crit_by_kind: dict[str, int] = {}
    for eng, cyc in crit_by_engine.items():
        crit_by_kind[_kind(eng)] = crit_by_kind.get(_kind(eng), 0) + cyc
    for e in s["engines"]:
        if (e["engine"] not in ("pe", "act", "dve", "pool") or e["busy_pct"] < 5 or e["wait_pct"] < 20
                or not e["waits_on"]):
            continue
        source, share = next(iter(e["waits_on"].items()))
        row = next(r for r in data.engines if r["engine"] == e["engine"])
        impact = min(row["wait_cycles"] * share / 100, crit_by_kind.get(source, 0))
        fix = ("more buffering (double-buffer the loads) or prefetch so transfers overlap compute"
               if source == "dma" else f"overlap it with {source} work: more buffers between them")
        add("engine-waits", impact,
            f"{e['engine'].upper()} waits on semaphores {e['wait_pct']:.0f}% of the time, {share:.0f}% of it "
            f"for {source}: {fix}", engine=e["engine"], wait_pct=e["wait_pct"], waits_on=source,
            waits_on_pct=share)

    pe_crit = crit_by_kind.get("pe", 0)
    f32_pe = any(x["roof_engine"] == "pe" and x["dtype"] == "f32" for x in data.layers)
    if f32_pe and pe_crit >= 0.05 * cycles and not any(r["rule"] == "compute-bound-f32" for r in recs):
        add("precision", 0.75 * pe_crit,
            f"the PE computes in f32 (1/4 of the bf16 rate) and is {_pct(pe_crit, cycles):.0f}% of the "
            f"critical path ({us(pe_crit):.1f} us): --precision bf16 could save up to "
            f"{us(0.75 * pe_crit):.1f} us (check accuracy with `xpu acc`)",
            pe_critical_us=round(us(pe_crit), 3))
    trips = _hbm_round_trips(data.critical_path)
    if trips:
        trip_cycles = sum(c for c in trips)
        add("hbm-round-trips", trip_cycles,
            f"{len(trips)} HBM round trips on the critical path (a DMA stores a result to HBM, the next "
            f"DMA loads it back) cost {us(trip_cycles):.1f} us ({_pct(trip_cycles, cycles):.0f}% of latency, "
            f"{lat_us:.1f} us of fixed latency per transfer): fuse those layers or keep the tensors in SBUF "
            f"between them", round_trips=len(trips), cycles=trip_cycles)
    dma_crit = crit_by_kind.get("dma", 0)
    if dma_crit >= 0.5 * cycles and not trips:
        add("dma-critical", dma_crit * 0.5,
            f"DMA is {_pct(dma_crit, cycles):.0f}% of the critical path: {s['dma']['transfers']} "
            f"transfers at "
            f"{s['dma']['active_gbps']:.0f} GB/s of {peak_gbps:.0f} while active: fewer, larger transfers "
            f"and prefetching shorten it", dma_critical_us=round(us(dma_crit), 3))

    recs = [r for r in recs if r["impact_pct"] >= 100 * MIN_IMPACT_SHARE]
    recs.sort(key=lambda r: (-r["impact_us"], r["rule"]))
    notes = []
    if s["status"] != "complete":
        notes.append({"rule": "run-stopped", "impact_us": 0.0, "impact_pct": 0.0, "numbers": {},
                      "message": f"the run stopped ({s['status']}): "
                                 f"{s['problem'].splitlines()[0] if s['problem'] else ''}; "
                                 f"the profile covers what ran until then"})
    dropped = s["trace_info"]["dropped_slices"]
    if dropped:
        notes.append({"rule": "trace-dropped", "impact_us": 0.0, "impact_pct": 0.0,
                      "numbers": {"dropped_slices": dropped},
                      "message": f"the trace left out {dropped} instruction slices (--max-slices "
                                 f"{data.meta.get('max_slices')}); the database has them all: raise "
                                 f"--max-slices or narrow --layers"})
    out = notes + recs
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _hbm_round_trips(steps: list) -> list[int]:
    """Cycles of each store-to-HBM DMA directly followed on the critical path by a load from HBM."""
    trips = []
    for a, b in zip(steps, steps[1:]):
        if (a["kind"].startswith("dma_copy") and a["kind"].endswith("->hbm")
                and b["kind"].startswith("dma_copy hbm->") and b["via"].startswith("s")):
            trips.append(a["end_cycle"] - a["start_cycle"] + b["end_cycle"] - b["start_cycle"]
                         + b["gap_cycles"])
    return trips


def _group(add, layers: list, cycles: int, us, rule: str, why) -> None:
    layers = sorted(layers, key=lambda x: -x["critical_cycles"])
    if not layers:
        return
    if len(layers) <= GROUP_AFTER:
        for x in layers:
            add(rule, x["critical_cycles"],
                f"layer {x['name']} ({x['op_type']}) is {why([x])} "
                f"({_pct(x['critical_cycles'], cycles):.0f}% "
                f"of latency on the critical path)", layers=[x["name"]],
                critical_us=round(us(x["critical_cycles"]), 3), time_us=round(us(x["time_cycles"]), 3))
        return
    crit = sum(x["critical_cycles"] for x in layers)
    names = ", ".join(x["name"] for x in layers[:3])
    add(rule, crit,
        f"{len(layers)} layers ({_pct(crit, cycles):.0f}% of latency on the critical path; "
        f"most: {names}) are "
        f"{why(layers)}", layers=[x["name"] for x in layers], critical_us=round(us(crit), 3))


# ---------------------------------------------------------------------------------- text
def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def render_summary(s: dict, top: int = DEFAULT_TOP) -> str:
    lines = []
    title = (f"{s['model']} on {s['arch']}" + (f", {s['precision']}" if s["precision"] else "")
             + f", batch {s['batch']}")
    stopped = f"  [{s['status'].upper()}]" if s["status"] != "complete" else ""
    lines.append(f"xpu-prof summary: {title}{stopped}")
    lat, tp = s["latency"], s["throughput"]
    lines.append(f"latency {_fmt_us(lat['us'])} ({lat['cycles']:,} cycles at {s['clock_ghz']:g} GHz)   "
                 f"throughput {tp['inferences_per_s']:,.1f} inferences/s at batch {tp['batch']}")
    w, t = s["window"], s["trace_info"]
    window = ("whole run" if w["layers"] == "all"
              else f"layers {w['layers']}: {_fmt_us(w['us'])} from cycle {w['start_cycle']:,}")
    lines.append(f"capture: {window}, {w['instructions']:,} of {w['run_instructions']:,} instructions; "
                 f"trace {t['slices']:,} slices, {_fmt_bytes(t['bytes'])}"
                 + (f", {t['dropped_slices']:,} DROPPED" if t["dropped_slices"] else ", nothing dropped"))
    lines.append("")
    lines.append(f"{'engine':<10}{'busy':>7}{'wait':>7}{'idle':>7}{'instrs':>8}  waits released by")
    dma = [e for e in s["engines"] if _kind(e["engine"]) == "dma"]
    for e in s["engines"]:
        if _kind(e["engine"]) == "dma":
            continue
        on = ", ".join(f"{k} {v:.0f}%" for k, v in list(e["waits_on"].items())[:3])
        lines.append(f"{e['engine']:<10}{e['busy_pct']:>6.1f}%{e['wait_pct']:>6.1f}%{e['idle_pct']:>6.1f}%"
                     f"{e['instructions']:>8,}  {on}")
    if dma:
        n = len(dma)
        avg = lambda key: sum(e[key] for e in dma) / n   # noqa: E731
        busiest = max(dma, key=lambda e: e["busy_pct"])
        lines.append(f"{'dma x' + str(n):<10}{avg('busy_pct'):>6.1f}%{avg('wait_pct'):>6.1f}%"
                     f"{avg('idle_pct'):>6.1f}%"
                     f"{sum(e['instructions'] for e in dma):>8,}  average of {n} queues; busiest "
                     f"{busiest['engine']} {busiest['busy_pct']:.0f}%")
    lines.append("")
    layers = s["layers"][:top]
    lines.append(f"layers: top {len(layers)} of {s['layer_count']} by critical-path time")
    lines.append(f"  {'layer':<28} {'op':<13}{'time':>9}{'share':>7}{'crit':>7}{'FLOPs':>8}{'TFLOP/s':>9}"
                 f"{'%peak':>7}{'moved':>10}  bound")
    for x in layers:
        lines.append(f"  {_short(x['name'], 28):<28} {_cut(x['op_type'], 13):<13}{_fmt_us(x['time_us']):>9}"
                     f"{x['share_pct']:>6.1f}%{x['critical_pct']:>6.1f}%{_fmt_count(x['flops']):>8}"
                     f"{x['tflops']:>9.3f}{x['peak_pct']:>6.1f}%{_fmt_bytes(x['dma_bytes']):>10}"
                     f"  {x['bound']}")
    lines.append("")
    c = s["critical_path"]
    engines = " · ".join(f"{k} {v:.0f}%" for k, v in c["by_engine"].items())
    lines.append(f"critical path: {_fmt_us(c['us'])} over {c['instructions']:,} instructions = {engines}")
    segments = c["segments"]
    if segments:
        keep = sorted(sorted(range(len(segments)), key=lambda i: -segments[i]["us"])[:MAX_CHAIN_SEGMENTS])
        parts, last = [], -1
        for i in keep:
            if i != last + 1:
                parts.append(f"…{i - last - 1}…")
            seg = segments[i]
            parts.append(f"{_short(seg['layer'], 24)} [{'>'.join(seg['engines'][:4])}"
                         f"{'>…' if len(seg['engines']) > 4 else ''}] {_fmt_us(seg['us'])}")
            last = i
        if last != len(segments) - 1:
            parts.append(f"…{len(segments) - last - 1}…")
        lines.append("  " + " → ".join(parts))
    d = s["dma"]
    lines.append(f"DMA: {d['transfers']:,} transfers, {_fmt_bytes(d['bytes'])} "
                 f"({_fmt_bytes(d['hbm_bytes'])} HBM); "
                 f"{d['avg_gbps']:.1f} GB/s over the run, {d['active_gbps']:.1f} GB/s while active "
                 f"({d['active_pct']:.0f}% of the run), peak window {d['peak_window_gbps']:.0f} of "
                 f"{d['peak_gbps']:.0f} GB/s")
    m = s["memory"]
    if m["sbuf_capacity_bytes"]:
        lines.append(f"memory in flight: SBUF peak {_fmt_bytes(m['sbuf_peak_bytes'])} of "
                     f"{_fmt_bytes(m['sbuf_capacity_bytes'])}, "
                     f"PSUM peak {_fmt_bytes(m['psum_peak_bytes'])} of "
                     f"{_fmt_bytes(m['psum_capacity_bytes'])}")
    kinds = s["instruction_kinds"][:5]
    if kinds:
        lines.append("top instruction kinds: " + "; ".join(
            f"{k['engine']} {k['kind']}{' ' + k['dtype'] if k['dtype'] else ''} ×{k['count']:,} "
            f"{_fmt_us(k['busy_us'])} ({k['share_pct']:.0f}%)" for k in kinds))
    lines.append("")
    recs = s["recommendations"][:5]
    lines.append("recommendations:" if recs else "recommendations: none above 1% of latency")
    for r in recs:
        stake = f"[{r['impact_pct']:.0f}%] " if r["impact_pct"] else ""
        lines.append(f"  {r['rank']}. {stake}{r['message']}")
    return "\n".join(lines)
