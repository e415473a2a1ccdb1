"""`compare --report OUT.html`: one self-contained HTML file (no network, no scripts): SQNR along the
graph (accumulated vs local), histograms of the worst tensors' errors, the culprit table, the keep
set and the outputs. Charts are matplotlib SVG inlined in the page."""
from __future__ import annotations

import html
import io

from .metrics import MAX_SQNR_DB

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child,td.l{text-align:left}h1{font-size:22px}h2{font-size:18px;margin-top:1.6em}
.bad{background:#fdd}.muted{color:#888}"""
DISPLAY_CAP_DB = 120.0  # exact matches (200 dB) are drawn at this height


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "xpu-acc"}):  # same report for the same numbers
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def sqnr_chart(doc: dict) -> str:
    """Accumulated and local SQNR per compared tensor, in topological order."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in doc["tensors"] if r["accumulated"] is not None]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    xs = range(len(rows))
    cap = lambda v: min(v, DISPLAY_CAP_DB)  # noqa: E731
    ax.plot(xs, [cap(r["accumulated"]["sqnr_db"]) for r in rows], "o-", label="accumulated (device vs reference)")
    ax.plot(xs, [cap(r["local"]["sqnr_db"]) if r["local"] else float("nan") for r in rows], "s--",
            label="local (node on reference inputs)")
    ax.set_ylabel("SQNR dB")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["name"] for r in rows], rotation=70, ha="right", fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = _svg(fig)
    plt.close(fig)
    return out


def histogram_chart(doc: dict, worst: int = 4) -> str:
    """log10 |error| histograms of the tensors with the lowest accumulated SQNR."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in doc["tensors"] if r.get("error_histogram")]
    rows = sorted(rows, key=lambda r: r["accumulated"]["sqnr_db"])[:worst]
    if not rows:
        return "<p class=muted>no error histograms (no tensor was compared)</p>"
    fig, axes = plt.subplots(1, len(rows), figsize=(2.7 * len(rows), 2.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        h = r["error_histogram"]
        edges = h["log10_edges"]
        ax.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge")
        ax.set_title(r["name"][:30], fontsize=8)
        ax.set_xlabel("log10 |device − ref|", fontsize=7)
        ax.tick_params(labelsize=7)
    out = _svg(fig)
    plt.close(fig)
    return out


def _table(headers: list[str], rows: list[list], bad: list[bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="bad"' if bad and bad[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_html(doc: dict, bisect_doc: dict | None = None) -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>xpu acc: {html.escape(doc['model'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Accuracy of {html.escape(doc['model'])} at {html.escape(doc['precision'])}</h1>",
             f"<p>Reference: {html.escape(doc['reference'])}; {doc['samples']} sample(s); {doc['device_runs']} device "
             f"run(s). Local error = the node computed on the device from reference inputs (one teacher-forced run); "
             f"accumulated = the device value against the reference. SQNR above {DISPLAY_CAP_DB:.0f} dB is drawn at "
             f"{DISPLAY_CAP_DB:.0f} ({MAX_SQNR_DB:.0f} = exact).</p>",
             "<h2>Outputs</h2>",
             _table(["output", "SQNR dB", "cosine", "max |e|", "max rel", "beyond tol"],
                    [[o["name"], _num(o["accumulated"]["sqnr_db"], ".2f"), _num(o["accumulated"]["cosine"], ".6f"),
                      _num(o["accumulated"]["max_abs"], ".3g"), _num(o["accumulated"]["max_rel"], ".3g"),
                      f"{100 * o['accumulated']['beyond_tol']:.2f}%"] for o in doc["outputs"]]),
             "<h2>SQNR along the graph</h2>", sqnr_chart(doc),
             "<h2>Culprits</h2>",
             _table(["#", "node", "fused nodes", "local SQNR dB", "local max |e|", "accumulated SQNR dB",
                     "outputs SQNR if alone fp32"],
                    [[c["rank"], c["node"], ", ".join(c["nodes"]), _num(c["local"]["sqnr_db"], ".1f"),
                      _num(c["local"]["max_abs"], ".3g"),
                      _num(c["accumulated"] and c["accumulated"]["sqnr_db"], ".1f"),
                      _num(c["recovered_sqnr_db"], ".1f")] for c in doc["culprits"]]),
             "<h2>Worst tensors: error histograms</h2>", histogram_chart(doc)]
    keep = (bisect_doc or {}).get("keep") or doc.get("keep") or []
    parts.append("<h2>Keep set</h2>")
    parts.append(_table(["node", "precision"], [[k["node"], k["precision"]] for k in keep]) if keep
                 else "<p class=muted>none</p>")
    parts.append("<h2>Every tensor</h2>")
    rows, bad = [], []
    for r in doc["tensors"]:
        a, lo = r["accumulated"], r["local"]
        rows.append([r["name"], r["op"], r["engine"], _num(a and a["sqnr_db"], ".1f"), _num(a and a["cosine"], ".6f"),
                     _num(a and a["max_abs"], ".3g"), _num(lo and lo["sqnr_db"], ".1f"),
                     "" if a is None else f"{a['nan']}/{a['inf']}",
                     f"fused into {r['fused_into']}" if r["fused_into"] else ""])
        bad.append(bool(a and (a["nan"] or a["inf"])))
    parts.append(_table(["tensor", "op", "where", "acc SQNR", "acc cosine", "acc max |e|", "local SQNR", "NaN/Inf",
                         "note"], rows, bad))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path, doc: dict, bisect_doc: dict | None = None, force: bool = False, inputs=()) -> None:
    from device_model.fileio import write_text_atomic

    write_text_atomic(path, render_html(doc, bisect_doc), force=force, inputs=inputs)
