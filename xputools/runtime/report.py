"""What `xpu run` prints: outputs with shapes and stats, cycles, device time, engine busy time."""
from __future__ import annotations

import json

import numpy as np

from device_model.program import Program

from .session import RunOutput


def _stats(arr: np.ndarray) -> dict:
    a = np.asarray(arr)
    if a.size == 0:
        return {"min": None, "max": None, "mean": None}
    f = a.astype(np.float64)
    return {"min": float(np.nanmin(f)) if not np.all(np.isnan(f)) else float("nan"),
            "max": float(np.nanmax(f)) if not np.all(np.isnan(f)) else float("nan"),
            "mean": float(np.mean(f)), "nan": int(np.isnan(f).sum())}


def run_summary(program: Program, out: RunOutput) -> dict:
    """A run's outputs (shape, dtype, min/max/mean, NaN count) and statistics as plain data."""
    r = out.result
    return {
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), **_stats(v)}
                    for k, v in out.outputs.items()},
        "cycles": r.cycles,
        "seconds": r.seconds,
        "busy_cycles": r.busy,
        "instructions": r.instructions,
        "dma_bytes": r.dma_bytes,
    }


def render_run(program: Program, out: RunOutput, as_json: bool = False) -> str:
    """What `xpu run` prints (JSON with `as_json`)."""
    s = run_summary(program, out)
    if as_json:
        return json.dumps(s, indent=2)
    lines = ["outputs:"]
    for name, o in s["outputs"].items():
        shape = "x".join(map(str, o["shape"])) or "scalar"
        if o["min"] is None:
            lines.append(f"  {name:20s} {shape:>14s} {o['dtype']}")
        else:
            lines.append(f"  {name:20s} {shape:>14s} {o['dtype']:8s} min {o['min']:.6g}  max {o['max']:.6g}  "
                         f"mean {o['mean']:.6g}" + (f"  NaN {o['nan']}" if o["nan"] else ""))
    total = max(s["cycles"], 1)
    lines.append(f"cycles: {s['cycles']}  ({s['seconds'] * 1e6:.2f} us at the preset clock)")
    lines.append("engine busy:")
    for eng, busy in s["busy_cycles"].items():
        if eng == "host" and not program.host_ops:
            continue  # only the zero-cost barriers that mark when tap values are complete
        lines.append(f"  {eng:6s} {busy:>12d} cycles  {100.0 * busy / total:5.1f}%  "
                     f"{s['instructions'][eng]} instructions")
    return "\n".join(lines)
