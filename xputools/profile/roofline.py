"""`roofline`: each layer at its arithmetic intensity (roof FLOPs per HBM byte) and achieved FLOP/s,
against the arch's HBM roof and the compute roofs its layers use (the PE at each matmul dtype, the
vector engines). Numbers from the profile database; the plot is a PNG (matplotlib, written whole or
not at all)."""
from __future__ import annotations

import math
from pathlib import Path

from .database import ProfileData

ROOFLINE_SCHEMA = "xpu-prof-roofline"
ROOFLINE_VERSION = 1


def roofline(data: ProfileData) -> dict:
    """Roofs and one point per layer that has both work and HBM bytes (the others are listed
    in `unplaced` with the reason: a log-log plot has no place for zero)."""
    numbers = data.meta.get("arch_numbers") or {}
    hz = data.clock_ghz * 1e9
    bw = numbers.get("hbm_gbps", 0.0) * 1e9
    roofs: dict[str, float] = {}
    points, unplaced = [], []
    for layer in data.layers:
        work = layer["pe_flops"] if layer["roof_engine"] == "pe" else layer["flops"]
        seconds = layer["time_cycles"] / hz
        if layer["peak_flops"]:
            label = f"PE {layer['dtype']}" if layer["roof_engine"] == "pe" else layer["roof_engine"].upper()
            roofs[label] = layer["peak_flops"]
        if not work or not layer["hbm_bytes"] or not seconds:
            unplaced.append({"name": layer["name"], "op_type": layer["op_type"],
                             "reason": "no FLOPs" if not work else ("no HBM bytes" if not layer["hbm_bytes"]
                                                                     else "no time")})
            continue
        intensity = work / layer["hbm_bytes"]
        achieved = work / seconds
        attainable = min(layer["peak_flops"] or math.inf, intensity * bw) if bw else layer["peak_flops"]
        points.append({"name": layer["name"], "op_type": layer["op_type"], "roof": layer["roof_engine"],
                       "dtype": layer["dtype"], "flops": work, "hbm_bytes": layer["hbm_bytes"],
                       "intensity": round(intensity, 4), "achieved_tflops": round(achieved / 1e12, 6),
                       "attainable_tflops": round(attainable / 1e12, 6),
                       "pct_of_attainable": round(100 * achieved / attainable, 2) if attainable else 0.0,
                       "time_us": round(data.us(layer["time_cycles"]), 3), "bound": layer["bound"]})
    return {"schema": ROOFLINE_SCHEMA, "version": ROOFLINE_VERSION, "model": data.meta.get("model", ""),
            "arch": data.meta.get("arch", ""), "hbm_gbps": numbers.get("hbm_gbps", 0.0),
            "roofs": [{"name": k, "tflops": round(v / 1e12, 6), "ridge": round(v / bw, 3) if bw else None}
                      for k, v in sorted(roofs.items(), key=lambda kv: -kv[1])],
            "points": points, "unplaced": unplaced}


def render_roofline(r: dict) -> str:
    lines = [f"roofline of {r['model']} on {r['arch']}: HBM {r['hbm_gbps']:g} GB/s; roofs "
             + ", ".join(f"{x['name']} {x['tflops']:g} TFLOP/s (ridge {x['ridge']:g} FLOP/B)" for x in r["roofs"])]
    lines.append(f"  {'layer':<30}{'FLOP/B':>10}{'TFLOP/s':>10}{'roof':>10}{'of roof':>9}  bound")
    for p in sorted(r["points"], key=lambda p: -p["time_us"]):
        lines.append(f"  {p['name'][-30:]:<30}{p['intensity']:>10.2f}{p['achieved_tflops']:>10.3f}"
                     f"{p['attainable_tflops']:>10.3f}{p['pct_of_attainable']:>8.1f}%  {p['bound']}")
    if r["unplaced"]:
        lines.append(f"not placed ({len(r['unplaced'])}): "
                     + ", ".join(f"{u['name']} ({u['reason']})" for u in r["unplaced"][:8])
                     + (" …" if len(r["unplaced"]) > 8 else ""))
    return "\n".join(lines)


def plot_roofline(r: dict, path: Path, *, force: bool = False, inputs=()) -> None:
    """The roofline as a PNG: log-log, a roof per compute engine/dtype, a point per layer."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from device_model.fileio import atomic_output

    bw = r["hbm_gbps"] * 1e9
    xs = [p["intensity"] for p in r["points"]] or [1.0]
    lo = min(min(xs) / 4, 0.01)
    hi = max(max(xs) * 4, max((x["ridge"] or 1) for x in r["roofs"]) * 4 if r["roofs"] else 100)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    try:
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        colours = ["#2e86de", "#27ae60", "#8e44ad", "#e67e22", "#7f8c8d"]
        for colour, roof in zip(colours * 4, r["roofs"]):
            peak = roof["tflops"] * 1e12
            ax.plot(grid, [min(peak, x * bw) / 1e12 for x in grid], color=colour, linewidth=1.5,
                    label=f"{roof['name']} {roof['tflops']:.3g} TFLOP/s")
        if not r["roofs"]:
            ax.plot(grid, [x * bw / 1e12 for x in grid], color="#7f8c8d", label="HBM")
        for p in r["points"]:
            ax.scatter([p["intensity"]], [p["achieved_tflops"]], s=18, color="#c0392b", zorder=3)
        for p in sorted(r["points"], key=lambda p: -p["time_us"])[:12]:
            ax.annotate(p["name"][-24:], (p["intensity"], p["achieved_tflops"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.set_title(f"{r['model']} on {r['arch']}: roofline (HBM {r['hbm_gbps']:g} GB/s)", fontsize=10)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        with atomic_output(path, force=force, inputs=inputs) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
