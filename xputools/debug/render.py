"""Text for the console and batch mode: each Debugger result type -> lines (gdb-like wording)."""
from __future__ import annotations

import dataclasses

import numpy as np

from device_model.events import HangReport

from .commands import Result
from .core import EngineInfo, Frame, HangInfo, HistoryInfo, ListingLine, LiveRange, SemInfo
from .expressions import Value
from .points import Breakpoint, Hit, Stop, Watchpoint


def render(result: Result) -> list[str]:
    if not result.ok and not isinstance(result.data, Stop):
        return [f"error: {result.error}"]
    lines = _data(result.data, result.command)
    for sub in result.followups:
        lines += render(sub)
    return lines


def _data(data, command: str) -> list[str]:
    if data is None:
        return []
    if isinstance(data, Stop):
        return stop_lines(data)
    if isinstance(data, Breakpoint):
        return [_bp_line(data, verb=True)]
    if isinstance(data, Watchpoint):
        return [_wp_line(data, verb=True)]
    if isinstance(data, Value):
        return value_lines(data)
    if isinstance(data, EngineInfo):
        return [_engine_line(data)]
    if isinstance(data, HangInfo):
        return hang_lines(data)
    if isinstance(data, HistoryInfo):
        return [f"{data.snapshots} snapshots holding {data.bytes / 2**20:.1f} MiB of pages (budget "
                f"{data.budget / 2**20:.0f} MiB), one every {data.interval} retired instructions; "
                f"{data.frozen_steps} one-engine steps logged; at {data.point[0]} retired"]
    if isinstance(data, str):
        return [f"wrote {data}" if command == "dump" else data]
    if isinstance(data, list):
        if not data:
            return {"info": ["(nothing)"], "delete": ["(none)"]}.get(command, [])
        first = data[0]
        if isinstance(first, EngineInfo):
            return [_engine_line(e) for e in data]
        if isinstance(first, SemInfo):
            return [f"s{s.sem:<3} = {s.value:<6} signalled by {', '.join(s.signalled_by) or '-'}; "
                    f"waited on by {', '.join(s.waited_by) or '-'}" for s in data]
        if isinstance(first, Frame):
            return [f"#{f.level}  {f.kind:<11} {f.text}" for f in data]
        if isinstance(first, ListingLine):
            return [_listing_line(x) for x in data]
        if isinstance(first, LiveRange):
            return [f"{r.space} bytes {r.lo:#x}..{r.hi:#x} (all partitions): written by "
                    f"{', '.join(r.written_by) or '?'}; still to be read by {', '.join(r.read_by) or '?'}"
                    for r in data]
        if isinstance(first, (Breakpoint, Watchpoint)):
            return ["Num  Type        Enb  Hits  What"] + [
                _bp_line(p) if isinstance(p, Breakpoint) else _wp_line(p) for p in data]
        if isinstance(first, tuple):  # displays
            return [line for n, expr, v in data for line in _display(n, expr, v)]
        if isinstance(first, int):
            return [f"{command}: {', '.join(map(str, data))}"]
        if isinstance(first, str):
            return list(data)
    return [str(data)]


def stop_lines(s: Stop) -> list[str]:
    lines = []
    for h in s.hits:
        lines += hit_lines(h)
    head = {
        "breakpoint": None, "watchpoint": None, "exited": "[program finished]",
        "fault": "Program faulted (post-mortem: inspect with print/x/info, or reverse):",
        "hang": "Program hung: no engine can make progress (info hang for the wait-for graph)",
        "blocked": "Cannot step:", "start": "Stopped at the start of the program", "killed": "[program killed]",
        "reverse-start": "No earlier stop: at the start of the program", "done": None, "step": None,
        "interrupted": "Interrupted.",
    }.get(s.reason)
    if head:
        lines.append(head)
    if s.message and s.reason in ("fault", "blocked", "done", "step") and s.message != "reversed":
        lines.append(s.message)
    if s.engine and s.index >= 0 and s.reason not in ("killed",):
        where = {"issue": "=> about to issue", "complete": "   retired", "fault": "=> faulted at",
                 "next": "=> next", "in flight": "=> in flight"}.get(s.phase, "  ")
        node = f"  [{s.node}]" if s.node else ""
        lines.append(f"{where} {s.engine}:{s.index}  {s.instr}{node}")
    lines.append(f"   cycle {s.time}, {s.point[0]} instructions retired")
    if s.report is not None and s.reason == "hang":
        lines += hang_lines(HangInfo(True, s.report))
    for n, expr, v in s.displays:
        lines += _display(n, expr, v)
    return lines


def hit_lines(h: Hit) -> list[str]:
    node = f" [{h.node}]" if h.node else ""
    if h.kind == "breakpoint":
        return [f"Breakpoint {h.number}, {h.engine}:{h.index}{node}"]
    verb = {"w": "written", "r": "read", "signal": "signalled"}.get(h.access, h.access)
    lines = [f"Watchpoint {h.number}: {h.expr} {verb} by {h.engine}:{h.index}{node}"]
    if h.access == "r":
        lines.append(f"Value = {_short(h.old)}")
    else:
        lines.append(f"Old value = {_short(h.old)}")
        lines.append(f"New value = {_short(h.new)}" + ("  (unchanged)" if _same(h.old, h.new) else ""))
    return lines


def _same(a, b) -> bool:
    try:
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    except TypeError:
        return np.array_equal(np.asarray(a), np.asarray(b))


def _short(v) -> str:
    if v is None:
        return "?"
    arr = np.asarray(v)
    if arr.ndim == 0:
        return str(arr.item() if hasattr(arr, "item") else arr)
    text = np.array2string(arr.reshape(-1)[:8], precision=6, separator=", ", max_line_width=10_000)
    return f"{text[:-1]}{', ...]' if arr.size > 8 else ']'} ({'x'.join(map(str, arr.shape))} {arr.dtype})"


def value_lines(v: Value) -> list[str]:
    arr = v.array
    if v.target.kind == "sem":
        return [f"{v.target.text} = {arr}"]
    a = np.asarray(arr)
    fmt = v.note if v.note in ("x", "d", "u", "f") else ""
    lines = [] if fmt or not v.note else [f"({v.note})"]
    head = f"{v.target.text}: {'x'.join(map(str, a.shape)) or 'scalar'} {a.dtype}"
    if a.size and a.dtype.kind in "fiub" or str(a.dtype) in ("bfloat16",) or a.dtype.kind == "V":
        f = a.astype(np.float64) if a.size else a
        if a.size and np.isfinite(f).all():
            head += f"  min {f.min():.6g} max {f.max():.6g} mean {f.mean():.6g}"
        elif a.size:
            head += f"  ({int(np.isnan(f).sum())} NaN, {int(np.isinf(f).sum())} Inf)"
    lines.append(head)
    formatter = None
    if fmt == "x":
        width = a.dtype.itemsize * 2
        formatter = {"int": lambda x: f"0x{int(x) & ((1 << (8 * a.dtype.itemsize)) - 1):0{width}x}"}
    lines += np.array2string(a, threshold=256, edgeitems=4, precision=6, max_line_width=118,
                             formatter=formatter).splitlines()
    return lines


def _display(n, expr, v) -> list[str]:
    if isinstance(v, str):
        return [f"{n}: {expr}: {v}"]
    body = value_lines(v)
    return [f"{n}: {body[0]}"] + body[1:]


def _engine_line(e: EngineInfo) -> str:
    v = e.view
    mark = "*" if e.focused else " "
    if v.state == "BLOCKED" and v.blocked_on:
        s, want, now = v.blocked_on
        state = f"BLOCKED on s{s} >= {want} (now {now})"
    else:
        state = v.state + (" (in flight)" if v.in_flight else "")
    node = f" [{e.last_node}]" if e.last_node else ""
    last = f"; last retired #{v.last_retired}{node}" if v.last_retired >= 0 else ""
    at = f"  pc {v.pc}/{v.count}"
    return f"{mark} {v.name:<5}{at:<14} {state}{last}"


def _listing_line(x: ListingLine) -> str:
    mark = "=>" if x.current else "  "
    bp = ("b" + ",".join(map(str, x.breakpoints))) if x.breakpoints else ""
    node = f"  ; {x.node}" if x.node else ""
    return f"{mark} {bp:<4} {x.engine}:{x.index:<5} {x.text}{node}"


def _bp_line(b: Breakpoint, verb: bool = False) -> str:
    if verb:
        return f"{'Temporary b' if b.temporary else 'B'}reakpoint {b.number} at {b.location.text} " \
               f"({len(b.location.instrs)} instruction{'s' if len(b.location.instrs) != 1 else ''})"
    extra = (f" if {b.condition}" if b.condition else "") + (f" (ignore next {b.ignore})" if b.ignore else "")
    cmds = "".join(f"\n        {c}" for c in b.commands)
    return f"{b.number:<4} {b.kind:<11} {'y' if b.enabled else 'n':<4} {b.hits:<5} {b.location.text}{extra}{cmds}"


def _wp_line(w: Watchpoint, verb: bool = False) -> str:
    if verb:
        what = {"watch": "Watchpoint", "rwatch": "Read watchpoint", "awatch": "Access watchpoint"}[w.kind]
        return f"{what} {w.number}: {w.target.text}"
    extra = f" if {w.condition}" if w.condition else ""
    return f"{w.number:<4} {w.kind:<11} {'y' if w.enabled else 'n':<4} {w.hits:<5} {w.target.text}{extra}"


def hang_lines(info: HangInfo) -> list[str]:
    r: HangReport = info.report
    if not r.blocked:
        return ["no engine is blocked on a semaphore"]
    lines = ["wait-for graph" + (" (the program is hung)" if info.hung else " (now)") + ":"]
    for b in r.blocked:
        for s, want, now in b.unmet:
            who = b.signallers.get(s) or []
            tail = f"could be signalled by {', '.join(who)}" if who else "no producer left: it can never be met"
            lines.append(f"  {b.engine} #{b.index} -> s{s} >= {want} (now {now}) -> {tail}")
    if r.cycle:
        lines.append("  deadlock cycle: " + " -> ".join(r.cycle + [r.cycle[0]]))
    return lines


MAX_JSON_VALUES = 4096


def to_json(obj):
    """A command result as plain JSON data (dataclasses as objects, arrays as shape/dtype/values with
    at most MAX_JSON_VALUES values, non-finite floats as strings)."""
    if isinstance(obj, Result):
        out = {"command": obj.command, "line": obj.line.strip(), "ok": obj.ok}
        if obj.error:
            out["error"] = obj.error
        out["data"] = to_json(obj.data)
        if obj.followups:
            out["followups"] = [to_json(f) for f in obj.followups]
        return out
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.asarray(obj)
        flat = arr.reshape(-1)[:MAX_JSON_VALUES]
        values = [_json_scalar(v) for v in (flat.astype(np.float64) if arr.dtype.kind not in "iub" else flat).tolist()]
        return {"shape": list(arr.shape), "dtype": str(arr.dtype), "values": values,
                "truncated": bool(arr.size > MAX_JSON_VALUES)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in ("cond_tree", "footprints", "tap", "ap", "instrs")}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_json(v) for v in obj]
    if isinstance(obj, float):
        return _json_scalar(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _json_scalar(v):
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v
