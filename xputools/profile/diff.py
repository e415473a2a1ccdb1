"""`diff`: two profiles compared per layer, per engine and per instruction kind, sorted by absolute
change, with the layers present in only one of them."""
from __future__ import annotations

from .database import ProfileData
from .summary import _cut, _fmt_bytes, _fmt_count, _fmt_us, _kind, _short, build_summary

DIFF_SCHEMA = "xpu-prof-diff"
DIFF_VERSION = 2
TOP_KIND_CHANGES = 5


def _change(a: float, b: float) -> dict:
    delta = b - a
    return {"a": a, "b": b, "delta": round(delta, 3),
            "pct": round(100.0 * delta / a, 1) if a else (0.0 if not delta else None)}


def _keyed(rows: list, key) -> dict:
    """Rows by key; repeated keys get '#2', '#3' appended so none is lost."""
    out: dict = {}
    for row in rows:
        k = key(row)
        name, n = k, 1
        while name in out:
            n += 1
            name = f"{k}#{n}"
        out[name] = row
    return out


def diff_profiles(a: ProfileData, b: ProfileData) -> dict:
    sa, sb = build_summary(a), build_summary(b)
    result = {
        "schema": DIFF_SCHEMA, "version": DIFF_VERSION,
        "a": {"profile": str(a.path), "model": sa["model"], "arch": sa["arch"], "precision": sa["precision"],
              "batch": sa["batch"]},
        "b": {"profile": str(b.path), "model": sb["model"], "arch": sb["arch"], "precision": sb["precision"],
              "batch": sb["batch"]},
        "latency_us": _change(sa["latency"]["us"], sb["latency"]["us"]),
        "latency_cycles": _change(sa["latency"]["cycles"], sb["latency"]["cycles"]),
        "throughput": _throughput(sa, sb),
        "dma_bytes": _change(sa["dma"]["bytes"], sb["dma"]["bytes"]),
        "dma_fabric_bytes": _change(sa["dma"]["fabric_bytes"], sb["dma"]["fabric_bytes"]),
        "dma_transfers": _change(sa["dma"]["transfers"], sb["dma"]["transfers"]),
        "flops": _change(sa["compute"]["flops"], sb["compute"]["flops"]),
        "mfu_pct": _change(sa["compute"]["mfu_pct"], sb["compute"]["mfu_pct"]),
    }
    ea, eb = _keyed(sa["engines"], lambda r: r["engine"]), _keyed(sb["engines"], lambda r: r["engine"])
    engines = []
    for name in list(ea) + [n for n in eb if n not in ea]:
        ra, rb = ea.get(name), eb.get(name)
        engines.append({
            "engine": name,
            "busy_us": _change(ra["busy_us"] if ra else 0.0, rb["busy_us"] if rb else 0.0),
            "wait_us": _change(ra["wait_us"] if ra else 0.0, rb["wait_us"] if rb else 0.0),
            "instructions": _change(ra["instructions"] if ra else 0, rb["instructions"] if rb else 0),
        })
    engines.sort(key=lambda r: -abs(r["busy_us"]["delta"]))
    result["engines"] = engines
    result["engine_kinds"] = _by_kind(engines)

    la, lb = _keyed(sa["layers"], lambda r: r["name"]), _keyed(sb["layers"], lambda r: r["name"])
    layers = []
    for name in la:
        if name not in lb:
            continue
        ra, rb = la[name], lb[name]
        layers.append({
            "name": name, "op_type": rb["op_type"],
            "time_us": _change(ra["time_us"], rb["time_us"]),
            "critical_us": _change(ra["critical_us"], rb["critical_us"]),
            "busy_us": _change(ra["busy_us"], rb["busy_us"]),
            "flops": _change(ra["flops"], rb["flops"]),
            "dma_bytes": _change(ra["dma_bytes"], rb["dma_bytes"]),
            "bound": {"a": ra["bound"], "b": rb["bound"]},
        })
    layers.sort(key=lambda r: (-abs(r["time_us"]["delta"]), -abs(r["critical_us"]["delta"]), r["name"]))
    result["layers"] = layers
    result["only_in_a"] = [{"name": n, "op_type": r["op_type"], "time_us": r["time_us"]}
                           for n, r in la.items() if n not in lb]
    result["only_in_b"] = [{"name": n, "op_type": r["op_type"], "time_us": r["time_us"]}
                           for n, r in lb.items() if n not in la]

    ka = _keyed(sa["instruction_kinds"], lambda r: (r["engine"], r["kind"], r["dtype"]))
    kb = _keyed(sb["instruction_kinds"], lambda r: (r["engine"], r["kind"], r["dtype"]))
    kinds = []
    for key in list(ka) + [k for k in kb if k not in ka]:
        ra, rb = ka.get(key), kb.get(key)
        row = ra or rb
        kinds.append({"engine": row["engine"], "kind": row["kind"], "dtype": row["dtype"],
                      "count": _change(ra["count"] if ra else 0, rb["count"] if rb else 0),
                      "busy_us": _change(ra["busy_us"] if ra else 0.0, rb["busy_us"] if rb else 0.0)})
    kinds.sort(key=lambda r: -abs(r["busy_us"]["delta"]))
    result["instruction_kinds"] = kinds
    return result


def _throughput(sa: dict, sb: dict) -> dict:
    """Inferences/s when both batches are known, else runs/s (the unit says which)."""
    ta, tb = sa["throughput"], sb["throughput"]
    if ta["batch"] and tb["batch"]:
        return {**_change(ta["inferences_per_s"], tb["inferences_per_s"]), "unit": "inferences/s"}
    return {**_change(ta["runs_per_s"], tb["runs_per_s"]), "unit": "runs/s"}


def _by_kind(engines: list[dict]) -> list[dict]:
    """Engines summed by kind: the 16 DMA queues become one `dma` row, as in `summary`."""
    rows: dict[str, dict] = {}
    for e in engines:
        kind = _kind(e["engine"])
        row = rows.setdefault(kind, {"engine": kind, "queues": 0, "busy_a": 0.0, "busy_b": 0.0,
                                     "wait_a": 0.0, "wait_b": 0.0})
        row["queues"] += 1
        for key in ("busy", "wait"):
            row[f"{key}_a"] += e[f"{key}_us"]["a"]
            row[f"{key}_b"] += e[f"{key}_us"]["b"]
    out = [{"engine": r["engine"], "queues": r["queues"],
            "busy_us": _change(round(r["busy_a"], 3), round(r["busy_b"], 3)),
            "wait_us": _change(round(r["wait_a"], 3), round(r["wait_b"], 3))} for r in rows.values()]
    out.sort(key=lambda r: -abs(r["busy_us"]["delta"]))
    return out


def _explain(d: dict) -> list[str]:
    """What changed underneath the latency: bytes, transfers, FLOPs, and the instruction kinds that
    appeared, vanished or changed the most."""
    lines = []
    for key, label, fmt in (("dma_bytes", "DMA payload", _fmt_bytes), ("dma_fabric_bytes", "DMA fabric bytes",
                                                                         _fmt_bytes),
                            ("dma_transfers", "DMA transfers", lambda v: f"{v:,}"),
                            ("flops", "FLOPs", _fmt_count)):
        ch = d[key]
        if ch["delta"]:
            lines.append(f"{label} {fmt(ch['a'])} -> {fmt(ch['b'])}{_pct_text(ch)}")
    if d["mfu_pct"]["delta"]:
        lines.append(f"MFU {d['mfu_pct']['a']:.1f}% -> {d['mfu_pct']['b']:.1f}%")
    out = ["what changed: " + "; ".join(lines)] if lines else []
    for k in d["instruction_kinds"][:TOP_KIND_CHANGES]:
        cnt, busy = k["count"], k["busy_us"]
        if not busy["delta"] and not cnt["delta"]:
            continue
        what = f"{k['engine']} {k['kind']}{' ' + k['dtype'] if k['dtype'] else ''}"
        if not cnt["a"]:
            out.append(f"  new in B: {cnt['b']:,} x {what} costing {_fmt_us(busy['b'])} of engine time")
        elif not cnt["b"]:
            out.append(f"  gone in B: {cnt['a']:,} x {what} ({_fmt_us(busy['a'])} of engine time in A)")
        else:
            out.append(f"  {what}: {cnt['a']:,} -> {cnt['b']:,}, engine time {_fmt_us(busy['a'])} -> "
                       f"{_fmt_us(busy['b'])} ({_signed(busy['delta'], ' us')})")
    return out


def _signed(value: float, unit: str = "") -> str:
    return f"{value:+,.1f}{unit}" if value else f"0{unit}"


def _pct_text(change: dict) -> str:
    return "" if change["pct"] is None else f" ({change['pct']:+.1f}%)"


def render_diff(d: dict, top: int = 15) -> str:
    a, b = d["a"], d["b"]
    lines = [f"xpu-prof diff: A = {a['profile']} ({a['model']}, {a['precision'] or '-'}, batch {a['batch']})",
             f"               B = {b['profile']} ({b['model']}, {b['precision'] or '-'}, batch {b['batch']})"]
    lat, tp = d["latency_us"], d["throughput"]
    lines.append(f"latency {_fmt_us(lat['a'])} -> {_fmt_us(lat['b'])}: "
                 f"{_signed(lat['delta'], ' us')}{_pct_text(lat)}"
                 f"   throughput {tp['a']:,.1f} -> {tp['b']:,.1f} {tp['unit']}{_pct_text(tp)}")
    lines += _explain(d)
    lines.append("")
    lines.append(f"{'engine':<10}{'busy A':>11}{'busy B':>11}{'change':>12}{'wait A':>11}{'wait B':>11}")
    for e in d["engine_kinds"][:top]:
        bu, wa = e["busy_us"], e["wait_us"]
        name = f"dma x{e['queues']}" if e["engine"] == "dma" else e["engine"]
        lines.append(f"{name:<10}{_fmt_us(bu['a']):>11}{_fmt_us(bu['b']):>11}"
                     f"{_signed(bu['delta'], ' us'):>12}"
                     f"{_fmt_us(wa['a']):>11}{_fmt_us(wa['b']):>11}")
    lines.append("")
    changed = [x for x in d["layers"] if x["time_us"]["delta"] or x["critical_us"]["delta"]]
    lines.append(f"layers in both: {len(d['layers'])}, changed: {len(changed)} (by |time change|)")
    lines.append(f"  {'layer':<30} {'op':<13}{'time A':>10}{'time B':>10}{'change':>12}"
                 f"{'crit change':>13}  bound")
    for x in d["layers"][:top]:
        t, c = x["time_us"], x["critical_us"]
        ba, bb = x["bound"]["a"], x["bound"]["b"]
        bound = ba if ba == bb else f"{ba} -> {bb}"
        lines.append(f"  {_short(x['name'], 30):<30} {_cut(x['op_type'], 13):<13}{_fmt_us(t['a']):>10}"
                     f"{_fmt_us(t['b']):>10}{_signed(t['delta'], ' us'):>12}{_signed(c['delta'], ' us'):>13}"
                     f"  {bound}")
    for side in ("a", "b"):
        only = d[f"only_in_{side}"]
        if only:
            names = ", ".join(f"{x['name']} ({_fmt_us(x['time_us'])})" for x in only[:8])
            lines.append(f"only in {side.upper()} ({len(only)}): {names}" + (" …" if len(only) > 8 else ""))
    return "\n".join(lines)
