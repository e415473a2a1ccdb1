"""Plain-text tables and CSV for `compare` and `bisect` documents (what the CLI prints)."""
from __future__ import annotations

import csv
import io


def _f(v, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _metric(m: dict | None, key: str, fmt: str) -> str:
    return "-" if m is None else _f(m.get(key), fmt)


def render_compare(doc: dict, top: int = 10) -> str:
    """The per-tensor table (topological order), then the culprits and the outputs."""
    lines = [f"{doc['model']}: {doc['precision']} on the device vs {doc['reference']}, "
             f"{doc['samples']} sample(s), {doc['device_runs']} device run(s)"]
    head = (f"{'tensor (node)':32s} {'op':14s} {'shape':>12s} {'where':6s} {'acc cos':>9s} {'acc SQNR':>9s} "
            f"{'acc max|e|':>10s} {'loc SQNR':>9s} {'loc max|e|':>10s} {'NaN/Inf':>7s}")
    lines += ["", head, "-" * len(head)]
    for r in doc["tensors"]:
        a, lo = r["accumulated"], r["local"]
        label = r["name"] if r["node"] == r["name"] else f"{r['name']} ({r['node']})"
        shape = "?" if r["shape"] is None else ("x".join(map(str, r["shape"])) or "scalar")
        first = f"{label[:32]:32s} {r['op'][:14]:14s} {shape[-12:]:>12s} {r['engine']:6s}"
        if r["engine"] in ("fused", "const"):
            why = f"fused into {r['fused_into']}" if r["engine"] == "fused" else "folded into a constant"
            lines.append(f"{first} ({why})")
            continue
        bad = "-" if a is None else (f"{a['nan']}/{a['inf']}" if a["nan"] or a["inf"] else "0")
        lines.append(f"{first} {_metric(a, 'cosine', '.6f'):>9s} {_metric(a, 'sqnr_db', '.1f'):>9s} "
                     f"{_metric(a, 'max_abs', '.3g'):>10s} {_metric(lo, 'sqnr_db', '.1f'):>9s} "
                     f"{_metric(lo, 'max_abs', '.3g'):>10s} {bad:>7s}")
    lines += ["", "culprits (nodes ranked by the error they introduce; host nodes are never blamed):"]
    if not doc["culprits"]:
        lines.append("  none: no device node changes its values")
    for c in doc["culprits"][:top]:
        group = f" (fused: {', '.join(c['nodes'])})" if len(c["nodes"]) > 1 else ""
        rec = ("" if c["recovered_sqnr_db"] is None else
               f"; outputs {c['output_sqnr_db']:.1f} -> {c['recovered_sqnr_db']:.1f} dB if it alone runs in fp32")
        lines.append(f"  {c['rank']:>2d}. {c['node']} [{c['op']}]{group}: local SQNR {c['local']['sqnr_db']:.1f} dB, "
                     f"cosine {c['local']['cosine']:.6f}, max|e| {c['local']['max_abs']:.3g}{rec}")
    lines += ["", "outputs:"]
    for o in doc["outputs"]:
        a = o["accumulated"]
        lines.append(f"  {o['name']}: SQNR {a['sqnr_db']:.2f} dB, cosine {a['cosine']:.6f}, max|e| {a['max_abs']:.3g}, "
                     f"max rel {a['max_rel']:.3g}, beyond tolerance {100 * a['beyond_tol']:.2f}%")
    for e in doc["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines)


def compare_csv(doc: dict) -> str:
    """One row per tensor: identity, then accumulated_* and local_* metrics."""
    keys = ["cosine", "sqnr_db", "max_abs", "mean_abs", "rmse", "max_rel", "beyond_tol", "nan", "inf"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "node", "nodes", "op", "shape", "engine", "fused_into"]
               + [f"accumulated_{k}" for k in keys] + [f"local_{k}" for k in keys])
    for r in doc["tensors"]:
        row = [r["name"], r["node"], " ".join(r["nodes"]), r["op"], "x".join(map(str, r["shape"] or ())), r["engine"],
               r["fused_into"] or ""]
        for part in ("accumulated", "local"):
            row += ["" if r[part] is None else r[part][k] for k in keys]
        w.writerow(row)
    return buf.getvalue()


def render_bisect(doc: dict) -> str:
    thr = ", ".join(f"{k} {v}" for k, v in doc["threshold"].items())
    lines = [f"{doc['model']} at {doc['precision']}: threshold {thr} on {', '.join(doc['outputs'])}"]
    if not doc["keep"]:
        lines.append("nothing to keep: the outputs already meet the threshold")
    else:
        lines.append(f"keep {len(doc['keep'])} node(s) at higher precision:")
        for k in doc["keep"]:
            lines.append(f"  {k['node']}={k['precision']}   (local SQNR {_f(k['local_sqnr_db'])} dB)")
    b, a = doc["before"], doc["after"]
    lines.append(f"outputs: SQNR {b['sqnr_db']:.2f} -> {a['sqnr_db']:.2f} dB, cosine {b['cosine']:.6f} -> "
                 f"{a['cosine']:.6f}, max|e| {b['max_abs']:.3g} -> {a['max_abs']:.3g}"
                 + ("" if doc["met"] else "  (threshold NOT met even keeping every candidate)"))
    lines.append(f"cost: {doc['cost']['cycles']:+d} cycles ({doc['cost']['percent']:+.1f}% device latency)")
    lines.append(f"search: {doc['runs']} device runs, {doc['builds']} compiles "
                 f"(prefix bisection over {doc['nodes']} nodes would need {doc['prefix_bisection_runs']} builds)")
    return "\n".join(lines)
