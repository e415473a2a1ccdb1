"""Recommendations as a table of rules (`RULES`), each turning the profile into findings.

A finding names the critical-path steps its advice could shorten (`claims`: step -> the share of
that step's time it could save). Advice is on one of two axes: `schedule` (the same work, better
overlapped or fuller engines) or `work` (less work: fewer bytes, a faster dtype, no host trip).
Scheduling advice can never save more than the roofline leaves: it draws from the run's headroom
(latency minus the run's roofline floor) and from its layers' headroom (their time above their
floor), pools that shrink as findings take from them. Findings are ranked greedily per axis: the one
that can save the most goes first and takes its steps; a later finding on the same axis only counts
steps nobody claimed before. So no two recommendations on an axis claim the same time, and their
savings add up to at most the latency (advice on different axes are alternatives and may overlap).

Each saving is either an `upper_bound` (what is at stake can be no more) or an `estimate` whose
method is stated in the message and in `method`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .database import ProfileData

MIN_IMPACT_SHARE = 0.01   # recommendations worth less than 1% of the latency are left out
GROUP_AFTER = 3           # more latency-/sync-bound layers than this are reported as one group
UNDERFILLED = 0.5         # PE array occupancy below this is named
AT_ROOF_SHARE = 0.10      # a layer this big at its roof is explained even with nothing to save


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _kind(engine: str) -> str:
    return "dma" if engine.startswith("dma") else engine


@dataclass
class Finding:
    rule: str
    text: Callable[[float], str]   # the message, given the saving (cycles) it is ranked with
    claims: dict                   # critical-path step -> share of its time the advice could save
    numbers: dict = field(default_factory=dict)
    cap: float | None = None       # cycles it can never exceed (besides the headroom pools)
    layers: tuple = ()             # layers whose headroom a scheduling finding draws from
    axis: str = "schedule"         # or "work"
    kind: str = "upper_bound"      # or "estimate"
    method: str = ""               # how the saving is computed
    always: bool = False           # shown even when it saves nothing (it explains a large cost)
    lead: bool = False             # ranked first: it says what the numbers mean (a layer at its roof)


@dataclass
class Context:
    """What the rules read: the database, the summary built so far and derived numbers."""

    data: ProfileData
    s: dict
    cycles: int
    steps: list
    numbers: dict
    bw_per_cycle: float            # HBM payload bytes per cycle at full bandwidth
    dma_latency: int
    run_headroom: float            # cycles above the run's roofline floor

    def us(self, cycles: float) -> float:
        return self.data.us(cycles)

    def steps_of(self, layers=None, kinds=None) -> list[int]:
        return [i for i, st in enumerate(self.steps)
                if (layers is None or st["layer"] in layers) and (kinds is None or _kind(st["engine"]) in kinds)]

    def step_cycles(self, i: int) -> int:
        st = self.steps[i]
        return st["end_cycle"] - st["start_cycle"]

    def beyond_bandwidth(self, i: int) -> float:
        """Share of a DMA step that full HBM bandwidth would not need (latency and slow sharing)."""
        cyc = self.step_cycles(i)
        need = self.steps[i]["fabric_bytes"] / self.bw_per_cycle if self.bw_per_cycle else 0.0
        return max(0.0, 1.0 - need / cyc) if cyc else 0.0


def layer_headroom(layer: dict) -> float:
    """Cycles of the layer's own time above its roofline floor."""
    return max(0.0, layer["own_cycles"] - layer["roof_floor_cycles"])


# ---------------------------------------------------------------------------------- the rules
def _host_fallback(c: Context) -> list[Finding]:
    out = []
    n = c.numbers
    for layer in c.data.layers:
        if not layer["host_cycles"]:
            continue
        out.append(Finding(
            "host-fallback",
            lambda save, layer=layer: (
                f"host fallback for {layer['op_type'] or 'an op'} ({layer['name']}) costs {c.us(save):.1f} us "
                f"of latency ({c.us(layer['host_cycles']):.1f} us on the host, "
                f"{layer['host_bytes'] / 1e3:.1f} KB over the {n.get('host_gbps', 0):g} GB/s host link plus "
                f"{c.us(n.get('host_call_cycles', 0)):.0f} us hand-off per call): run it on the device "
                f"(`xpu check` says why it cannot) or express it with supported ops"),
            dict.fromkeys(c.steps_of({layer["layer"]}, {"host"}), 1.0),
            {"layer": layer["name"], "host_us": round(c.us(layer["host_cycles"]), 3),
             "host_bytes": layer["host_bytes"]},
            axis="work", method="the host time on the critical path"))
    return out


def _at_roof(c: Context) -> list[Finding]:
    """Memory- or compute-bound layers: scheduling can only win the headroom; say what else helps."""
    out = []
    bw = c.numbers.get("hbm_gbps", 0.0)
    for layer in c.data.layers:
        if layer["bound"] not in ("memory", "compute") or layer["pe_occupancy"] and \
                layer["pe_occupancy"] < UNDERFILLED and layer["bound"] == "compute":
            continue
        headroom = min(layer_headroom(layer), c.run_headroom)
        time_s = layer["time_cycles"] / (c.data.clock_ghz * 1e9)
        if layer["bound"] == "memory":
            gbps = layer["hbm_bytes_in_time"] / time_s / 1e9 if time_s else 0.0
            where = (f"memory-bound: HBM at {gbps:.0f} of {bw:.0f} GB/s over its {c.us(layer['time_cycles']):.1f} us "
                     f"({100 * gbps / bw if bw else 0:.1f}% of the roof)")
            fix = ("only moving fewer bytes helps: fuse it with its neighbours so intermediates stay in SBUF, "
                   "or keep its tensors in a narrower dtype")
        else:
            work = layer["pe_flops" if layer["roof_engine"] == "pe" else "flops"]
            achieved = work / time_s if time_s else 0.0
            where = (f"compute-bound on {layer['roof_engine'].upper() or 'compute'}: {achieved / 1e12:.2f} of "
                     f"{layer['peak_flops'] / 1e12:.3g} TFLOP/s "
                     f"({100 * achieved / layer['peak_flops'] if layer['peak_flops'] else 0:.1f}% of peak)")
            fix = ("only less work or a faster dtype helps" +
                   (": the PE runs f32 at 1/4 of the bf16 rate" if layer["dtype"] == "f32" else ""))
        claims = dict.fromkeys(c.steps_of({layer["layer"]}), 1.0)
        out.append(Finding(
            f"{layer['bound']}-bound",
            lambda save, layer=layer, where=where, fix=fix, headroom=headroom: (
                f"layer {layer['name']} ({layer['op_type']}) is {where}: better scheduling can save at most "
                f"{c.us(headroom):.1f} us (its time above the roofline floor); {fix}"),
            claims, {"layer": layer["name"], "headroom_us": round(c.us(headroom), 3)},
            layers=(layer["layer"],), method="the layer's time above its roofline floor",
            always=layer["critical_cycles"] >= AT_ROOF_SHARE * c.cycles, lead=True))
    return out


def _pe_underfilled(c: Context) -> list[Finding]:
    out = []
    pe = c.numbers.get("pe", {})
    for layer in c.data.layers:
        occ = layer["pe_occupancy"]
        if not layer["pe_busy_cycles"] or occ >= UNDERFILLED or layer["bound"] not in ("compute", "latency"):
            continue
        if layer["pe_active_cycles"] < 0.25 * layer["time_cycles"]:
            continue
        claims = dict.fromkeys(c.steps_of({layer["layer"]}, {"pe"}), 1.0 - occ)
        out.append(Finding(
            "pe-underfilled",
            lambda save, layer=layer, occ=occ: (
                f"layer {layer['name']} ({layer['op_type']}) keeps the PE busy "
                f"{_pct(layer['pe_active_cycles'], layer['time_cycles']):.0f}% of its time, but its matmuls fill "
                f"{layer['pe_rows']} of {pe.get('rows', 128)} rows x {layer['pe_cols']} of {pe.get('cols', 128)} "
                f"columns ({100 * occ:.0f}% array occupancy, N {layer['pe_n']} of {pe.get('max_n', 512)}): "
                f"put more of the contraction on the rows (e.g. fold kernel taps into K) and more outputs on "
                f"the columns; a full array would save up to {c.us(save):.1f} us"),
            claims, {"layer": layer["name"], "pe_occupancy_pct": round(100 * occ, 1),
                     "pe_rows": layer["pe_rows"], "pe_cols": layer["pe_cols"], "pe_n": layer["pe_n"]},
            layers=(layer["layer"],), method="PE time on the critical path x (1 - occupancy), capped by "
                                             "the layer's time above its roofline floor"))
    return out


def _dma_text(c: Context, layers: list) -> str:
    count = max(1, sum(x["dma_count"] for x in layers))
    dma_cycles = sum(x["dma_cycles"] for x in layers)
    payload = sum(x["dma_bytes"] for x in layers)
    avg_bytes, avg_cycles = payload / count, dma_cycles / count
    rate = avg_bytes / (c.us(avg_cycles) * 1e3) if avg_cycles else 0.0   # bytes/ns = GB/s
    return (f"latency-bound on DMA: {count} transfers of {avg_bytes / 1e3:.1f} KB payload on average, "
            f"{c.us(avg_cycles):.2f} us each, of which {c.us(c.dma_latency):.1f} us is fixed latency "
            f"({rate:.1f} GB/s per transfer, against {c.numbers.get('hbm_gbps', 0):.0f} GB/s of HBM): "
            f"issue loads earlier (prefetch), keep more transfers in flight on separate queues, and use "
            f"fewer, larger transfers")


def _grouped(c: Context, rule: str, layers: list, kinds, factor, why: Callable[[list], str],
             method: str) -> list[Finding]:
    if not layers:
        return []
    layers = sorted(layers, key=lambda x: -x["critical_cycles"])
    groups = [[x] for x in layers] if len(layers) <= GROUP_AFTER else [layers]
    out = []
    for group in groups:
        ids = {x["layer"] for x in group}
        claims = {i: factor(i) for i in c.steps_of(ids, kinds)}
        names = ", ".join(x["name"] for x in group[:3])
        head = (f"layer {group[0]['name']} ({group[0]['op_type']}) is" if len(group) == 1 else
                f"{len(group)} layers (most: {names}) are")
        out.append(Finding(
            rule, lambda save, head=head, group=group: (
                f"{head} {why(group)} (up to {c.us(save):.1f} us, {_pct(save, c.cycles):.0f}% of latency)"),
            claims, {"layers": [x["name"] for x in group]}, layers=tuple(ids), method=method))
    return out


def _latency_and_sync(c: Context) -> list[Finding]:
    dma, cmp_, sync = [], [], []
    for layer in c.data.layers:
        if layer["bound"] == "latency":
            (dma if layer["dma_active_cycles"] >= layer["compute_active_cycles"] else cmp_).append(layer)
        elif layer["bound"] == "sync":
            sync.append(layer)
    capped = "capped by the layers' time above their roofline floor"
    return (
        _grouped(c, "latency-bound-dma", dma, {"dma"}, c.beyond_bandwidth, lambda ls: _dma_text(c, ls),
                 f"the DMA time on the critical path beyond what full HBM bandwidth needs, {capped}")
        + _grouped(c, "latency-bound-compute", cmp_, {"pe", "act", "dve", "pool"}, lambda i: 1.0,
                   lambda ls: ("latency-bound on compute: small instructions (few partitions or short rows) "
                               "pay fixed per-instruction costs: use all partitions and longer rows (larger "
                               "tiles, bigger batch)"), f"the compute time on the critical path, {capped}")
        + _grouped(c, "sync-bound", sync, None, lambda i: 1.0, lambda ls: (
            f"sync-bound: {sum(x['idle_cycles'] for x in ls) * 100 / max(1, sum(x['time_cycles'] for x in ls)):.0f}% "
            f"of the time no instruction of the layer runs: they wait on semaphores for other work; overlap "
            f"it with that work (more buffers, independent work issued earlier) or shorten what it waits for"),
            f"the layers' critical-path time, {capped}"))


def _engine_waits(c: Context) -> list[Finding]:
    out = []
    for e in c.s["engines"]:
        if (e["engine"] not in ("pe", "act", "dve", "pool") or e["busy_pct"] < 5 or e["wait_pct"] < 20
                or not e["waits_on"]):
            continue
        source, share = next(iter(e["waits_on"].items()))
        row = next(r for r in c.data.engines if r["engine"] == e["engine"])
        fix = ("more buffering (double-buffer the loads) or prefetch so transfers overlap compute"
               if source == "dma" else f"overlap it with {source} work: more buffers between them")
        # overlapping the two engines hides the shorter one's critical work behind the other's
        own = c.steps_of(None, {e["engine"]})
        other = sum(c.step_cycles(i) for i in c.steps_of(None, {source}))
        out.append(Finding(
            "engine-waits", lambda save, e=e, source=source, share=share, fix=fix: (
                f"{e['engine'].upper()} waits on semaphores {e['wait_pct']:.0f}% of the time, {share:.0f}% of it "
                f"for {source}: {fix} (up to {c.us(save):.1f} us)"),
            dict.fromkeys(own, 1.0),
            {"engine": e["engine"], "wait_pct": e["wait_pct"], "waits_on": source, "waits_on_pct": share},
            cap=min(row["wait_cycles"] * share / 100, other),
            method=f"the {e['engine']} time on the critical path that overlap with {source} could hide, capped "
                   f"by the {source} time on it, by the wait and by the run's time above its roofline floor"))
    return out


def _precision(c: Context) -> list[Finding]:
    """f32 matmuls: an estimate of what --precision bf16 saves (PE at 4x the rate, half the bytes)."""
    f32_pe = [i for i in c.steps_of(None, {"pe"}) if c.steps[i]["dtype"] == "f32"]
    if not f32_pe:
        return []
    # the model's inputs, outputs and weights keep their dtype in HBM (a bf16 program casts them in
    # flight, reading as many bytes): only intermediates and on-chip copies get narrower
    f32_dma = [i for i in c.steps_of(None, {"dma"}) if c.steps[i]["dtype"] in ("f32", "f32->f32")
               and c.steps[i]["hbm_kind"] in ("scratch", "")]
    # bf16 streams 4x faster; the stationary load, the skew and the write-back do not change
    claims = {i: 0.75 * min(1.0, 4 * c.steps[i]["pe_n"] / max(1, c.step_cycles(i))) for i in f32_pe}
    claims.update({i: 0.5 * _transfer_share(c, i) for i in f32_dma})
    pe_cycles = sum(c.step_cycles(i) for i in f32_pe)
    return [Finding(
        "precision", lambda save: (
            f"the PE computes in f32 (1/4 of the bf16 rate) for {c.us(pe_cycles):.1f} us of the critical path: "
            f"--precision bf16 would save about {c.us(save):.1f} us (estimate: 3/4 of the PE's streaming time "
            f"plus half the byte-moving time of the f32 DMAs of intermediates on the critical path; check "
            f"accuracy with `xpu acc`)"),
        claims, {"pe_critical_us": round(c.us(pe_cycles), 3)}, axis="work", kind="estimate",
        method="3/4 of the f32 PE streaming time (N x 4 cycles per matmul) and 1/2 of the transfer time "
               "(latency excluded) of f32 DMAs of intermediates (not the model's inputs, outputs or "
               "weights) on the critical path")]


def _transfer_share(c: Context, i: int) -> float:
    """Share of a DMA step spent moving bytes (the rest is fixed latency)."""
    st = c.steps[i]
    cyc = c.step_cycles(i)
    return max(0, st["transfer_end_cycle"] - st["start_cycle"]) / cyc if cyc else 0.0


def _hbm_round_trips(c: Context) -> list[Finding]:
    pairs = []
    for i in range(len(c.steps) - 1):
        a, b = c.steps[i], c.steps[i + 1]
        if (a["kind"].startswith("dma_copy") and a["kind"].endswith("->hbm")
                and b["kind"].startswith("dma_copy hbm->") and b["via"].startswith("s")):
            pairs.append((i, i + 1))
    if not pairs:
        return []
    claims = {i: 1.0 for pair in pairs for i in pair}
    return [Finding(
        "hbm-round-trips", lambda save: (
            f"{len(pairs)} HBM round trips on the critical path (a DMA stores a result to HBM, the next DMA "
            f"loads it back; {c.us(c.dma_latency):.1f} us of fixed latency per transfer) cost up to "
            f"{c.us(save):.1f} us: fuse those layers or keep the tensors in SBUF between them"),
        claims, {"round_trips": len(pairs)}, axis="work", method="the store and load time on the critical path")]


def _layout_copies(c: Context) -> list[Finding]:
    """sbuf->sbuf DMA (im2col windows, re-layouts): pure data movement that could be avoided."""
    copies = [x for x in c.data.layers if x["copy_count"]]
    if not copies:
        return []
    steps = [i for i in c.steps_of(None, {"dma"}) if c.steps[i]["kind"] == "dma_copy sbuf->sbuf"]
    total = sum(x["copy_cycles"] for x in copies)
    on_path = sum(c.step_cycles(i) for i in steps)
    count = sum(x["copy_count"] for x in copies)
    nbytes = sum(x["copy_bytes"] for x in copies)
    dma_busy = sum(x["dma_cycles"] for x in c.data.layers) or 1
    worst = sorted(copies, key=lambda x: -x["copy_cycles"])[:3]
    return [Finding(
        "layout-copies", lambda save: (
            f"{count} sbuf->sbuf layout copies (im2col windows, re-layouts) move {nbytes / 1e6:.2f} MB in "
            f"{c.us(total):.1f} us of DMA time ({_pct(total, dma_busy):.0f}% of all DMA time; most in "
            f"{', '.join(x['name'] for x in worst)}); {c.us(on_path):.1f} us of them are on the critical path: "
            f"read the input through a strided access pattern in the matmul instead, or lay the tensor out "
            f"once as the consumer needs it (up to {c.us(save):.1f} us)"),
        dict.fromkeys(steps, 1.0), {"copies": count, "copy_us": round(c.us(total), 3), "copy_bytes": nbytes},
        axis="work", method="the layout copies' time on the critical path",
        always=total >= AT_ROOF_SHARE * dma_busy)]


def _dma_critical(c: Context) -> list[Finding]:
    dma_steps = c.steps_of(None, {"dma"})
    dma_crit = sum(c.step_cycles(i) for i in dma_steps)
    if dma_crit < 0.5 * c.cycles or any(x["bound"] in ("latency", "memory") for x in c.data.layers):
        return []   # the per-layer findings say it, with their layers
    d = c.s["dma"]
    return [Finding(
        "dma-critical", lambda save: (
            f"DMA is {_pct(dma_crit, c.cycles):.0f}% of the critical path: {d['transfers']} transfers at "
            f"{d['active_gbps']:.0f} GB/s of {c.numbers.get('hbm_gbps', 0):.0f} while active: fewer, larger "
            f"transfers and prefetching shorten it by up to {c.us(save):.1f} us"),
        {i: c.beyond_bandwidth(i) for i in dma_steps}, {"dma_critical_us": round(c.us(dma_crit), 3)},
        method="DMA time on the critical path beyond what full HBM bandwidth needs, capped by the run's "
               "time above its roofline floor")]


@dataclass(frozen=True)
class Rule:
    name: str
    when: str
    find: Callable[[Context], list[Finding]]


RULES: tuple[Rule, ...] = (
    Rule("host-fallback", "a layer runs on the host", _host_fallback),
    Rule("memory-bound / compute-bound", "a layer at >= 50% of its roofline", _at_roof),
    Rule("pe-underfilled", "the PE is a layer's limit and its matmuls fill < 50% of the array", _pe_underfilled),
    Rule("latency-bound-dma / latency-bound-compute / sync-bound", "layers far from every roof",
         _latency_and_sync),
    Rule("engine-waits", "a compute engine busy >= 5% waits >= 20% of the run", _engine_waits),
    Rule("precision", "f32 matmuls on the critical path", _precision),
    Rule("hbm-round-trips", "a store to HBM followed on the critical path by a load of it", _hbm_round_trips),
    Rule("layout-copies", "sbuf->sbuf DMA copies", _layout_copies),
    Rule("dma-critical", "DMA >= 50% of the critical path", _dma_critical),
)


# ---------------------------------------------------------------------------------- ranking
def _context(data: ProfileData, s: dict) -> Context:
    numbers = data.meta.get("arch_numbers") or {}
    cycles = s["latency"]["cycles"]
    hz = data.clock_ghz * 1e9
    bw_per_cycle = numbers.get("hbm_gbps", 0.0) * 1e9 / hz
    mem_floor = data.dma["hbm_bytes"] / bw_per_cycle if bw_per_cycle else 0.0
    cmp_floor = sum(x["pe_flops"] / x["peak_flops"] * hz for x in data.layers
                    if x["roof_engine"] == "pe" and x["peak_flops"])
    return Context(data, s, cycles, data.critical_path, numbers, bw_per_cycle,
                   numbers.get("dma_latency_cycles", 0), max(0.0, cycles - max(mem_floor, cmp_floor)))


def _rank(c: Context, findings: list[Finding]) -> list[tuple[Finding, float]]:
    """Greedy per axis: the finding that can save the most takes its steps (and, on the schedule
    axis, its share of the headroom pools); the rest count only what is left."""
    claimed: dict[str, set] = {"schedule": set(), "work": set()}
    pools = {layer["layer"]: layer_headroom(layer) for layer in c.data.layers}
    run_pool = [c.run_headroom]

    def saving(f: Finding) -> float:
        taken = claimed[f.axis]
        value = sum(share * c.step_cycles(i) for i, share in f.claims.items() if i not in taken)
        if f.cap is not None:
            value = min(value, f.cap)
        if f.axis == "schedule":
            value = min(value, run_pool[0])
            if f.layers:
                value = min(value, sum(pools.get(x, 0.0) for x in f.layers))
        return max(0.0, value)

    def draw(f: Finding, value: float) -> None:
        if f.axis != "schedule":
            return
        run_pool[0] -= value
        for x in sorted(f.layers, key=lambda x: -pools.get(x, 0.0)):
            take = min(value, pools.get(x, 0.0))
            pools[x] = pools.get(x, 0.0) - take
            value -= take

    ranked, pending = [], list(enumerate(findings))
    while pending:
        pos, best = max(pending, key=lambda item: (saving(item[1]), -item[0]))
        pending.remove((pos, best))
        value = saving(best)
        if value < MIN_IMPACT_SHARE * c.cycles and not best.always:
            continue
        claimed[best.axis].update(best.claims)
        draw(best, value)
        ranked.append((best, value))
    # layers at their roof first (they say what the numbers mean), then by saving
    ranked.sort(key=lambda item: (not (item[0].lead and item[0].always), -item[1]))
    return ranked


def recommendations(data: ProfileData, s: dict) -> list[dict]:
    """Ranked advice: each item has its rule, message, saving (`impact_us`, `impact_kind`
    upper_bound|estimate, `impact_method`) and the numbers behind it."""
    c = _context(data, s)
    findings = [f for rule in RULES for f in rule.find(c)]
    recs = []
    for f, save in _rank(c, findings):
        recs.append({"rule": f.rule, "impact_us": round(c.us(save), 3), "impact_pct": _pct(save, c.cycles),
                     "impact_kind": f.kind, "impact_method": f.method, "axis": f.axis, "message": f.text(save),
                     "numbers": f.numbers})
    return _notes(data, s) + recs


def _notes(data: ProfileData, s: dict) -> list[dict]:
    notes = []
    base = {"impact_us": 0.0, "impact_pct": 0.0, "impact_kind": "none", "impact_method": "", "axis": "none"}
    if s["status"] != "complete":
        notes.append({"rule": "run-stopped", **base, "numbers": {},
                      "message": f"the run stopped ({s['status']}): "
                                 f"{s['problem'].splitlines()[0] if s['problem'] else ''}; "
                                 f"the profile covers what ran until then"})
    dropped = s["trace_info"]["dropped_slices"]
    if dropped:
        notes.append({"rule": "trace-dropped", **base, "numbers": {"dropped_slices": dropped},
                      "message": f"the trace left out {dropped} instruction slices (--max-slices "
                                 f"{data.meta.get('max_slices')}); the database has them all: raise "
                                 f"--max-slices or narrow --layers"})
    return notes


def rank_numbers(recs: list[dict]) -> list[dict]:
    for i, r in enumerate(recs, 1):
        r["rank"] = i
    return recs
