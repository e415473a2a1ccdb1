"""Text rendering of an arch preset for `xpu arch show`."""
from __future__ import annotations


def _flatten(prefix: str, value, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, rows)
    else:
        rows.append((prefix, str(value)))


def render_arch(desc: dict) -> str:
    rows: list[tuple[str, str]] = []
    _flatten("", desc["preset"], rows)
    width = max(len(k) for k, _ in rows)
    d = desc["derived"]
    lines = [f"{desc['name']} — {desc['description']} (hash {desc['hash']})", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += ["", "derived:"]
    lines.append("  peak TFLOP/s   " + "  ".join(f"{k} {v:g}" for k, v in d["peak_tflops"].items()))
    lines.append(f"  HBM            {d['hbm_gbps']:g} GB/s")
    lines.append(f"  SBUF           {d['sbuf_mib']:g} MiB    PSUM {d['psum_kib']:g} KiB")
    lines.append("  ridge FLOP/B   " + "  ".join(f"{k} {v:g}" for k, v in d["ridge_flop_per_byte"].items()))
    return "\n".join(lines)
