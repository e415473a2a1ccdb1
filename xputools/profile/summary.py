"""`summary`: the bottleneck report of one profile, as a versioned JSON-able dict and as one screen of
text. Everything is computed from the profile database (docs/profile-format.md, "Summary JSON").
"""
from __future__ import annotations

from .advice import rank_numbers, recommendations
from .database import ProfileData

SUMMARY_SCHEMA = "xpu-prof-summary"
SUMMARY_VERSION = 2
DEFAULT_TOP = 10
MAX_CHAIN_SEGMENTS = 8
SIZE_BUCKETS = (1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20)


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
    batch = int(meta["batch"]) if meta.get("batch") else None
    seconds = cycles / (data.clock_ghz * 1e9)
    numbers = meta.get("arch_numbers") or {}
    runs_per_s = round(1 / seconds, 1) if seconds else 0.0
    summary = {
        "schema": SUMMARY_SCHEMA, "version": SUMMARY_VERSION,
        "profile": str(data.path), "trace": meta.get("trace", ""),
        "model": meta.get("model", ""), "graph": meta.get("graph", ""), "arch": meta.get("arch", ""),
        "precision": meta.get("precision", ""),
        "batch": batch, "status": meta.get("status", "complete"), "problem": meta.get("problem", ""),
        "clock_ghz": data.clock_ghz,
        "latency": {"cycles": cycles, "us": round(data.us(cycles), 3)},
        "throughput": {"runs_per_s": runs_per_s,
                       "inferences_per_s": round(batch * runs_per_s, 1) if batch else None, "batch": batch},
        "window": {"layers": meta.get("layers") or "all", "start_cycle": lo, "end_cycle": hi,
                   "us": round(data.us(hi - lo), 3),
                   "instructions": int(meta.get("selected_instructions", 0)),
                   "run_instructions": int(meta.get("instructions", 0))},
        "trace_info": {"slices": int(meta.get("trace_slices", 0) or 0),
                       "dropped_slices": int(meta.get("trace_dropped_slices", 0) or 0),
                       "bytes": int(meta.get("trace_bytes", 0) or 0),
                       "flows": int(meta.get("trace_flows", 0) or 0)},
    }
    summary["compute"] = _compute(data, span, numbers)
    summary["engines"] = _engines(data, span)
    crit = _critical(data, cycles)
    summary["layer_count"] = len(data.layers)
    summary["layers"] = _layers(data, cycles, crit["cycles"], top)
    summary["critical_path"] = crit
    summary["dma"] = _dma(data, span, numbers)
    summary["overlap"] = _overlap(data)
    summary["memory"] = {"sbuf_peak_bytes": int(data.counter_peaks.get("SBUF in use", 0)),
                         "psum_peak_bytes": int(data.counter_peaks.get("PSUM in use", 0)),
                         "sbuf_reserved_peak_bytes": int(data.counter_peaks.get("SBUF reserved", 0)),
                         "psum_reserved_peak_bytes": int(data.counter_peaks.get("PSUM reserved", 0)),
                         "sbuf_capacity_bytes": int(numbers.get("sbuf_bytes", 0)),
                         "psum_capacity_bytes": int(numbers.get("psum_bytes", 0)),
                         "largest_allocations": [
                             {**a, "us": round(data.us(a["end_cycle"] - a["start_cycle"]), 3)}
                             for a in data.allocations_top]}
    summary["instruction_kind_count"] = len(data.kinds)
    summary["instruction_kinds"] = _kinds(data, top)
    summary["recommendations"] = rank_numbers(recommendations(data, summary))
    return summary


def _compute(data: ProfileData, span: int, numbers: dict) -> dict:
    """Model FLOPs, achieved TFLOP/s and MFU: the PE FLOPs of each dtype over that dtype's peak,
    summed, as a share of the time (the window's, or the whole run's)."""
    seconds = span / (data.clock_ghz * 1e9)
    flops = sum(x["flops"] for x in data.layers)
    pe_flops = sum(data.pe_flops_by_dtype.values())
    peaks = numbers.get("peak_flops") or {}
    at_peak = sum(f / peaks[d] for d, f in data.pe_flops_by_dtype.items() if peaks.get(d))
    main = max(data.pe_flops_by_dtype, key=data.pe_flops_by_dtype.get) if data.pe_flops_by_dtype else ""
    return {"flops": flops, "pe_flops": pe_flops,
            "tflops": round(flops / seconds / 1e12, 6) if seconds else 0.0,
            "pe_tflops": round(pe_flops / seconds / 1e12, 6) if seconds else 0.0,
            "pe_dtype": main, "peak_tflops": round(peaks.get(main, 0.0) / 1e12, 3),
            "mfu_pct": round(100.0 * at_peak / seconds, 2) if seconds else 0.0,
            "pe_flops_by_dtype": dict(data.pe_flops_by_dtype)}


def _overlap(data: ProfileData) -> dict:
    c = data.meta.get("compute_dma") or {}
    comp, dma, both = c.get("compute_cycles", 0), c.get("dma_cycles", 0), c.get("overlap_cycles", 0)
    return {"compute_us": round(data.us(comp), 3), "dma_us": round(data.us(dma), 3),
            "overlap_us": round(data.us(both), 3), "dma_overlapped_pct": _pct(both, dma),
            "compute_overlapped_pct": _pct(both, comp)}


def _engines(data: ProfileData, span: int) -> list[dict]:
    waits: dict[str, dict] = {}
    for row in data.engine_waits:
        waits.setdefault(row["engine"], {})[row["released_by"]] = row["cycles"]
    out = []
    host_calls = any(k["engine"] == "host" and k["kind"] == "host_call" for k in data.kinds)
    for e in data.engines:
        if e["engine"] == "host" and not host_calls:
            continue   # only the compiler's barrier nops ran there: nothing fell back to the host
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
            "time_us": round(data.us(layer["own_cycles"]), 3),
            "share_pct": _pct(layer["own_cycles"], cycles),
            "span_us": round(data.us(layer["time_cycles"]), 3),
            "first_issue_cycle": layer["span_start_cycle"],
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
            "pe_occupancy_pct": round(100.0 * layer["pe_occupancy"], 1),
            "pe_shape": ({"rows": layer["pe_rows"], "cols": layer["pe_cols"], "n": layer["pe_n"]}
                         if layer["pe_busy_cycles"] else None),
            "overlap_pct": _pct(layer["overlap_cycles"], layer["dma_active_cycles"]),
            "copy_us": round(data.us(layer["copy_cycles"]), 3),
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


def _dma(data: ProfileData, span: int, numbers: dict) -> dict:
    d = data.dma
    hz = data.clock_ghz * 1e9
    run_s, active_s = span / hz, d["active_cycles"] / hz
    overhead = d["runs"] * numbers.get("dma_run_overhead_bytes", 0)
    queues = [{"queue": q["queue"], "transfers": q["transfers"], "bytes": q["bytes"],
               "fabric_bytes": q["fabric_bytes"], "busy_pct": _pct(q["busy_cycles"], span),
               "gbps": round(q["bytes"] / (q["busy_cycles"] / hz) / 1e9, 2) if q["busy_cycles"] else 0.0}
              for q in data.dma_queues]
    return {
        "transfers": d["transfers"], "bytes": d["bytes"], "hbm_bytes": d["hbm_bytes"],
        "fabric_bytes": d["fabric_bytes"], "efficiency_pct": _pct(d["bytes"], d["fabric_bytes"]),
        "descriptor_runs": d["runs"], "descriptor_overhead_bytes": overhead,
        "avg_gbps": round(d["hbm_bytes"] / run_s / 1e9, 2) if run_s else 0.0,
        "active_gbps": round(d["hbm_bytes"] / active_s / 1e9, 2) if active_s else 0.0,
        "active_pct": _pct(d["active_cycles"], span),
        "peak_window_gbps": round(float(data.counter_peaks.get("HBM bandwidth", 0.0)), 2),
        "peak_gbps": numbers.get("hbm_gbps", 0.0),
        "queues": queues, "sizes": size_histogram(data.dma_sizes),
    }


def size_histogram(sizes: list[int]) -> list[dict]:
    """Transfers and payload bytes by payload size, in power-of-4 buckets from 1 KB."""
    bins = [{"min_bytes": lo, "max_bytes": hi, "transfers": 0, "bytes": 0}
            for lo, hi in zip((0, *SIZE_BUCKETS), (*SIZE_BUCKETS, None))]
    for n in sizes:
        b = next(i for i, x in enumerate(bins) if x["max_bytes"] is None or n < x["max_bytes"])
        bins[b]["transfers"] += 1
        bins[b]["bytes"] += n
    return [x for x in bins if x["transfers"]]


def _kinds(data: ProfileData, top: int | None) -> list[dict]:
    busy = sum(k["cycles"] for k in data.kinds) or 1
    rows = [{"engine": k["engine"], "kind": k["kind"], "dtype": k["dtype"], "count": k["count"],
             "busy_us": round(data.us(k["cycles"]), 3), "share_pct": _pct(k["cycles"], busy),
             "flops": k["flops"], "bytes": k["bytes"]} for k in data.kinds]
    return rows if top is None else rows[:top]


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


def _alloc_text(a: dict) -> str:
    return (f"{a['space'].upper()}[{a['partition_start']}:+{a['partitions']}]@{a['offset']:#x} "
            f"{_fmt_bytes(a['bytes'])} for {_fmt_us(a['us'])} ({a['layer_name']}, {a['reads']} reads)")


def _size_label(b: dict) -> str:
    lo, hi = b["min_bytes"], b["max_bytes"]
    return f">={_fmt_bytes(lo)}" if hi is None else (f"<{_fmt_bytes(hi)}" if not lo else
                                                     f"{_fmt_bytes(lo)}-{_fmt_bytes(hi)}")


def render_summary(s: dict, top: int = DEFAULT_TOP) -> str:
    lines = []
    title = (f"{s['model']} on {s['arch']}" + (f", {s['precision']}" if s["precision"] else "")
             + (f", batch {s['batch']}" if s["batch"] else ", batch unknown"))
    stopped = f"  [{s['status'].upper()}]" if s["status"] != "complete" else ""
    lines.append(f"xpu-prof summary: {title}{stopped}")
    lat, tp = s["latency"], s["throughput"]
    rate = (f"throughput {tp['inferences_per_s']:,.1f} inferences/s at batch {tp['batch']}" if tp["batch"]
            else f"{tp['runs_per_s']:,.1f} runs/s (batch unknown: pass --batch N for inferences/s)")
    lines.append(f"latency {_fmt_us(lat['us'])} ({lat['cycles']:,} cycles at {s['clock_ghz']:g} GHz)   {rate}")
    cp = s["compute"]
    if cp["flops"]:
        mfu = (f"; PE {cp['pe_tflops']:.3f} TFLOP/s, MFU {cp['mfu_pct']:.1f}% of "
               f"{cp['peak_tflops']:g} TFLOP/s {cp['pe_dtype']}" if cp["pe_flops"] else "; no matmuls (MFU 0%)")
        lines.append(f"compute: {_fmt_count(cp['flops'])}FLOP, {cp['tflops']:.3f} TFLOP/s achieved{mfu}")
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
    lines.append(f"  {'layer':<26} {'op':<12}{'own':>9}{'share':>7}{'span':>9}{'crit':>7}{'FLOPs':>8}"
                 f"{'TFLOP/s':>8}{'%peak':>7}{'PE occ':>7}{'moved':>10}  bound")
    for x in layers:
        occ = f"{x['pe_occupancy_pct']:>6.0f}%" if x["pe_shape"] else f"{'-':>7}"
        lines.append(f"  {_short(x['name'], 26):<26} {_cut(x['op_type'], 12):<12}{_fmt_us(x['time_us']):>9}"
                     f"{x['share_pct']:>6.1f}%{_fmt_us(x['span_us']):>9}{x['critical_pct']:>6.1f}%"
                     f"{_fmt_count(x['flops']):>8}{x['tflops']:>8.3f}{x['peak_pct']:>6.1f}%{occ}"
                     f"{_fmt_bytes(x['dma_bytes']):>10}  {x['bound']}")
    lines.append("  own = its share of the run (cycles split among the layers running at once; shares add up "
                 "to <= 100%); span = first dependent issue to last end")
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
    lines.append(f"DMA efficiency: {_fmt_bytes(d['bytes'])} payload over {_fmt_bytes(d['fabric_bytes'])} of "
                 f"fabric ({d['efficiency_pct']:.0f}%; {d['descriptor_runs']:,} contiguous runs cost "
                 f"{_fmt_bytes(d['descriptor_overhead_bytes'])} of descriptor overhead); sizes "
                 + ", ".join(f"{_size_label(b)} x{b['transfers']}" for b in d["sizes"]))
    o = s["overlap"]
    if o["dma_us"] and o["compute_us"]:
        lines.append(f"overlap: compute and DMA both run {_fmt_us(o['overlap_us'])}: "
                     f"{o['dma_overlapped_pct']:.0f}% of DMA time is hidden behind compute, "
                     f"{o['compute_overlapped_pct']:.0f}% of compute time overlaps DMA")
    m = s["memory"]
    if m["sbuf_capacity_bytes"]:
        lines.append(f"memory: SBUF reserved peak {_fmt_bytes(m['sbuf_reserved_peak_bytes'])} (touched in flight "
                     f"{_fmt_bytes(m['sbuf_peak_bytes'])}) of {_fmt_bytes(m['sbuf_capacity_bytes'])}, "
                     f"PSUM reserved {_fmt_bytes(m['psum_reserved_peak_bytes'])} (in flight "
                     f"{_fmt_bytes(m['psum_peak_bytes'])}) of {_fmt_bytes(m['psum_capacity_bytes'])}"
                     + (f"; largest: {_alloc_text(m['largest_allocations'][0])}" if m["largest_allocations"]
                        else ""))
    kinds = s["instruction_kinds"][:5]
    if kinds:
        lines.append("top instruction kinds: " + "; ".join(
            f"{k['engine']} {k['kind']}{' ' + k['dtype'] if k['dtype'] else ''} ×{k['count']:,} "
            f"{_fmt_us(k['busy_us'])} ({k['share_pct']:.0f}%)" for k in kinds))
    lines.append("")
    recs = s["recommendations"][:5]
    lines.append("recommendations:" if recs else "recommendations: none above 1% of latency")
    for r in recs:
        sign = "~" if r["impact_kind"] == "estimate" else "<="
        stake = f"[{sign}{r['impact_pct']:.0f}%] " if r["impact_kind"] != "none" else ""
        lines.append(f"  {r['rank']}. {stake}{r['message']}")
    return "\n".join(lines)
