"""Text rendering of `xpu check`'s report."""
from __future__ import annotations


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _flops(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def render_check(r: dict) -> str:
    name_w = min(max((len(n["name"]) for n in r["nodes"]), default=4), 40)
    lines = [f"{r['model'] or 'model'} on {r['arch']}: "
             f"{r['counts']['total']['device']} nodes on the device, {r['counts']['total']['host']} on the host", ""]
    lines.append(f"  {'node':<{name_w}}  {'op':<20} {'where':<6} {'output':<18} {'FLOPs':>10}  why")
    for n in r["nodes"]:
        shape = "x".join(map(str, n["output_shape"])) or "scalar"
        name = n["name"] if len(n["name"]) <= name_w else "…" + n["name"][-(name_w - 1):]
        op = n["op_type"] + (f"+{n['fused_activation']}" if n.get("fused_activation") else "")
        why = n["why"] + (f" (from {n['expanded_from']} {n['origin'][0]})" if n.get("expanded_from") else "")
        lines.append(f"  {name:<{name_w}}  {op:<20} {n['where']:<6} {shape:<18} {_flops(n['flops']):>10}  {why}")
    lines.append("")
    for where in ("device", "host"):
        counts = r["counts"][where]
        if counts:
            lines.append(f"{where}: " + ", ".join(f"{op} {c}" for op, c in counts.items()))
    if r.get("expanded"):
        parts = [f"{e['name']} ({e['op_type']}, {e['nodes']} node{'' if e['nodes'] == 1 else 's'})"
                 for e in r["expanded"]]
        lines.append("expanded into primitive ops (ONNX function bodies, rewrites): " + ", ".join(parts))
    s = r["sbuf"]
    lines.append(f"total {_flops(r['total_flops'])}FLOP, weights {_size(r['total_weight_bytes'])}; "
                 f"largest working set {_size(s['largest_working_set_bytes'])} ({s['largest_node'] or '-'}) "
                 f"of {_size(s['capacity_bytes'])} SBUF" + ("" if s["fits_untiled"] else ": tiled"))
    for w in r.get("warnings", []):
        lines.append(f"warning: {w}")
    lines.append("everything runs on the device" if r["all_on_device"]
                 else f"{len(r['host_nodes'])} node(s) fall back to the host")
    return "\n".join(lines)
