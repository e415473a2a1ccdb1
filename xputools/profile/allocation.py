"""SBUF/PSUM allocation view: which on-chip region each written value reserves, and from when to
when. A value is born when an instruction writes a region (its `dst`) and lives until the last
instruction that reads an overlapping region before the region is written again; a matmul that
accumulates (start=0) into the same region extends the value instead of replacing it. This is
the allocator's reservation as the program uses it, beside the "in use" counters (bytes touched by
instructions in flight)."""
from __future__ import annotations

from dataclasses import dataclass

from device_model.isa import attr


@dataclass(slots=True)
class Allocation:
    space: str            # sbuf | psum
    pstart: int
    pcount: int
    lo: int               # bytes within each partition: [lo, hi)
    hi: int
    layer: int            # the writer's layer
    writer: int           # instruction id of the first write
    first: int            # the first write's issue
    last: int             # the last read's (or write's) end
    reads: int = 0

    @property
    def bytes(self) -> int:
        return (self.hi - self.lo) * self.pcount

    def overlaps(self, space: str, pstart: int, pcount: int, lo: int, hi: int) -> bool:
        return (self.space == space and self.lo < hi and lo < self.hi
                and self.pstart < pstart + pcount and pstart < self.pstart + self.pcount)


def _region(ap) -> tuple:
    lo, hi = ap.byte_extent()
    return ap.space, ap.pstart, ap.pcount, lo, hi


def allocations(recs) -> list[Allocation]:
    """Allocations of the instructions `recs` (InstrRecord, any order), in order of birth."""
    live: dict[str, list[Allocation]] = {"sbuf": [], "psum": []}
    done: list[Allocation] = []
    for rec in sorted(recs, key=lambda r: (r.issue, r.id)):
        ops = rec.instr.operands
        for name, ap in ops.items():
            if name == "dst" or ap.space == "hbm":
                continue
            region = _region(ap)
            for a in live[ap.space]:
                if a.overlaps(*region):
                    a.last = max(a.last, rec.end)
                    a.reads += 1
        dst = ops.get("dst")
        if dst is None or dst.space == "hbm":
            continue
        region = _region(dst)
        accumulate = rec.instr.op == "matmul" and not attr(rec.instr, "start")
        keep = []
        extended = False
        for a in live[dst.space]:
            if not a.overlaps(*region):
                keep.append(a)
            elif accumulate and (a.space, a.pstart, a.pcount, a.lo, a.hi) == region:
                a.last = max(a.last, rec.end)
                keep.append(a)
                extended = True
            else:
                done.append(a)          # overwritten: its last use was before this write
        if not extended:
            keep.append(Allocation(*region, rec.layer, rec.id, rec.issue, rec.end))
        live[dst.space] = keep
    done += live["sbuf"] + live["psum"]
    done.sort(key=lambda a: (a.first, a.writer))
    return done


def reserved_series(allocs: list[Allocation], space: str) -> list[tuple[int, int]]:
    """Bytes reserved in `space` over time: (cycle, bytes) at every change."""
    events: dict[int, int] = {}
    for a in allocs:
        if a.space == space:
            events[a.first] = events.get(a.first, 0) + a.bytes
            events[a.last] = events.get(a.last, 0) - a.bytes
    level, out = 0, []
    for t in sorted(events):
        level += events[t]
        out.append((t, level))
    return out or [(0, 0)]
