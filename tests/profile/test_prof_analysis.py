"""The profile analysis on hand-made cases: critical path, wait attribution, bound rules, layer
lanes, capture windows."""
from __future__ import annotations

import pytest

from device_model.arch import load_arch
from device_model.assembly import assemble
from device_model.program import Origin
from xputools.errors import UserError
from xputools.profile.analysis import LayerStats, _assign_lanes, classify, union_length
from xputools.profile.recorder import parse_layer_window, record

CHAIN = """
.arch xpu1
.tensor input a @0x0 shape=128x64 dtype=f32
.tensor output c @0x8000 shape=128x64 dtype=f32
.origin 0 load DMA
.origin 1 act Relu
.origin 2 side Memset
.origin 3 store DMA
dma0 dma_copy dst=sbuf[0:+128]@0x0{1:64}:f32 src=hbm@0x0{64:128,1:64}:f32 signal=s0+=1 dbg=0
dve  memset dst=sbuf[0:+128]@0x400{1:64}:f32 value=0.0 dbg=2
act  activate dst=sbuf[0:+128]@0x200{1:64}:f32 src=sbuf[0:+128]@0x0{1:64}:f32 func=relu \
     wait=s0>=1 signal=s1+=1 dbg=1
dma1 dma_copy dst=hbm@0x8000{64:128,1:64}:f32 src=sbuf[0:+128]@0x200{1:64}:f32 wait=s1>=1 dbg=3
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import numpy as np

    program = assemble(CHAIN)
    out = tmp_path_factory.mktemp("chain") / "chain.pftrace"
    return record(program, {"a": np.ones((128, 64), np.float32)}, out, flows=True)


def test_critical_path_follows_the_semaphores(chain):
    p = chain.profile
    steps = [(s.engine, s.via) for s in p.critical_path]
    assert steps == [("dma0", "start"), ("act", "s0"), ("dma1", "s1")]   # the memset is off the path
    by_engine = {r.engine: r for r in p.instrs}
    assert by_engine["act"].issue == by_engine["dma0"].end
    assert by_engine["act"].wait == by_engine["dma0"].end            # free since 0, blocked on s0
    assert by_engine["act"].released_by == by_engine["dma0"].id
    assert p.meta["cycles"] == by_engine["dma1"].end
    assert not by_engine["dve"].critical and by_engine["act"].critical


def test_engine_waits_are_attributed_to_the_releasing_engine(chain):
    engines = {e.engine: e for e in chain.profile.engines}
    by_engine = {r.engine: r for r in chain.profile.instrs}
    assert engines["act"].waits_on == {"dma0": by_engine["dma0"].end}
    assert engines["dma1"].waits_on == {"act": by_engine["act"].end}
    total = chain.profile.meta["cycles"]
    for e in engines.values():
        assert e.busy + e.wait + e.idle == total
    assert engines["act"].critical == by_engine["act"].cycles
    assert engines["dve"].critical == 0


def test_flows_pair_signal_and_wait(chain):
    ids = {r.id: r.engine for r in chain.profile.instrs}
    assert sorted((ids[a], ids[b], s) for a, b, s in chain.profile.flows) == [("act", "dma1", 1),
                                                                             ("dma0", "act", 0)]
    assert chain.trace.flows == 2


def test_counters_of_a_known_program(chain):
    p = chain.profile
    counters = {c.name: c for c in p.counters}
    sbuf = counters["SBUF in use"].samples
    # the load writes 128 x 64 f32 of SBUF; the memset as well: both in flight at cycle 0
    assert sbuf[0] == (0, 2 * 128 * 64 * 4)
    assert max(v for _, v in sbuf) == 2 * 128 * 64 * 4 and sbuf[-1][1] == 0
    assert [s for s in counters["s0"].samples] == [(p.instrs[0].end, 1)]


def test_union_length():
    assert union_length([]) == 0
    assert union_length([(0, 10), (5, 15), (20, 30), (30, 31)]) == 26
    assert union_length([(3, 4), (0, 10)]) == 10


def test_overlapping_layers_get_separate_lanes():
    def layer(i, start, end):
        st = LayerStats(i, f"l{i}", "")
        st.first_issue, st.last_end = start, end
        return st

    layers = [layer(0, 0, 10), layer(1, 5, 20), layer(2, 10, 15), layer(3, 12, 30), layer(4, 20, 25)]
    _assign_lanes(layers)
    assert [st.lane for st in layers] == [0, 1, 0, 2, 0]
    for a in layers:
        for b in layers:
            if a is not b and a.lane == b.lane:
                assert a.last_end <= b.first_issue or b.last_end <= a.first_issue


def _stats(time=1000, **kw) -> LayerStats:
    st = LayerStats(0, "x", "Op")
    st.start, st.first_issue, st.last_end = 0, 0, time
    st.active = kw.pop("active", time)
    for key, value in kw.items():
        setattr(st, key, value)
    return st


def test_bound_rules():
    arch = load_arch("xpu1")
    bw_per_cycle = arch.hbm_bytes_per_second() / (arch.clock_ghz * 1e9)
    pe_per_cycle = arch.peak_flops("bf16") / (arch.clock_ghz * 1e9)
    assert classify(_stats(host_active=600), arch)[0] == "host"
    assert classify(_stats(active=400), arch)[0] == "sync"
    mem = _stats(hbm_bytes=int(0.7 * 1000 * bw_per_cycle), hbm_bytes_in_time=0.7 * 1000 * bw_per_cycle,
                 dma_active=900, roof_engine="dve", peak_flops=1e11, flops=1000)
    label, reason = classify(mem, arch)
    assert label == "memory" and "HBM at 70% of its 400 GB/s roof" in reason and "< ridge" in reason
    cmp_ = _stats(pe_flops=int(0.8 * 1000 * pe_per_cycle), flops=int(0.8 * 1000 * pe_per_cycle),
                  roof_engine="pe", peak_flops=arch.peak_flops("bf16"), dtype="bf16",
                  hbm_bytes=4096, hbm_bytes_in_time=4096.0, compute_active=950)
    label, reason = classify(cmp_, arch)
    assert label == "compute" and "80.0% of its peak" in reason
    small = _stats(pe_flops=10_000, flops=10_000, roof_engine="pe", peak_flops=arch.peak_flops("bf16"),
                   hbm_bytes=100_000, hbm_bytes_in_time=100_000.0)
    assert classify(small, arch)[0] == "latency"
    # the memory side needs half the roof: just below -> latency
    below = _stats(hbm_bytes=1, hbm_bytes_in_time=0.49 * 1000 * bw_per_cycle)
    assert classify(below, arch)[0] == "latency"


def test_an_op_at_a_large_share_of_peak_compute_is_compute_bound_whatever_its_intensity():
    # the bf16 512^3 GEMM case: 64.6% of peak, but f32 bytes put its intensity below the ridge
    arch = load_arch("xpu1")
    pe_per_cycle = arch.peak_flops("bf16") / (arch.clock_ghz * 1e9)
    flops = int(0.646 * 1000 * pe_per_cycle)
    st = _stats(pe_flops=flops, flops=flops, roof_engine="pe", peak_flops=arch.peak_flops("bf16"), dtype="bf16",
                hbm_bytes=flops // 100, hbm_bytes_in_time=0.3 * (flops // 100), pe_active=700, compute_active=700)
    label, reason = classify(st, arch)
    assert label == "compute" and "64.6% of its peak" in reason and "< ridge" in reason


def test_a_busy_but_underfilled_pe_is_named_with_its_array_occupancy():
    # the 3x3 64->64 conv case: PE busy 80%, a quarter of the array, 17.6% of peak
    arch = load_arch("xpu1")
    pe_per_cycle = arch.peak_flops("bf16") / (arch.clock_ghz * 1e9)
    flops = int(0.176 * 1000 * pe_per_cycle)
    st = _stats(pe_flops=flops, flops=flops, roof_engine="pe", peak_flops=arch.peak_flops("bf16"), dtype="bf16",
                pe_active=800, compute_active=850, pe_busy=800, pe_cells=800 * 0.25, pe_rows=64, pe_cols=64,
                pe_n=504)
    label, reason = classify(st, arch)
    assert label == "compute"
    assert "PE busy 80%" in reason and "64 of 128 rows x 64 of 128 columns" in reason and "25% array" in reason
    assert "fixed per-instruction costs" not in reason


def test_layer_window_spec():
    origins = [Origin("x"), Origin("a:b"), Origin("y"), Origin("z")]
    assert parse_layer_window("a:b", origins) == (1, 1)
    assert parse_layer_window("x:a:b", origins) == (0, 1)
    assert parse_layer_window("1:", origins) == (1, 3)
    assert parse_layer_window(":2", origins) == (0, 2)
    assert parse_layer_window("y", origins) == (2, 2)
    for bad, words in (("7", "out of range"), ("z:x", "comes after"), ("q", "no layer named")):
        with pytest.raises(UserError, match=words):
            parse_layer_window(bad, origins)


def test_allocations_of_a_known_program(chain):
    p = chain.profile
    by_engine = {r.engine: r for r in p.instrs}
    allocs = {(a.space, a.lo): a for a in p.allocations}
    load, memset, relu = allocs[("sbuf", 0x0)], allocs[("sbuf", 0x400)], allocs[("sbuf", 0x200)]
    assert (load.first, load.last, load.reads) == (by_engine["dma0"].issue, by_engine["act"].end, 1)
    assert (memset.first, memset.last, memset.reads) == (by_engine["dve"].issue, by_engine["dve"].end, 0)
    assert (relu.first, relu.last, relu.reads) == (by_engine["act"].issue, by_engine["dma1"].end, 1)
    assert load.bytes == 128 * 64 * 4 and load.pcount == 128
    reserved = {c.name: c.samples for c in p.counters}["SBUF reserved"]
    assert max(v for _, v in reserved) == 2 * 128 * 64 * 4 and reserved[-1][1] == 0


def test_accumulating_matmuls_extend_one_psum_value():
    from xputools.profile.allocation import allocations
    from xputools.profile.analysis import InstrRecord

    prog = assemble("""
.arch xpu1
pe matmul dst=psum[0:+128]@0x0{1:128}:f32 stat=sbuf[0:+128]@0x0{1:128}:bf16 mov=sbuf[0:+128]@0x100{1:128}:bf16 start=1
pe matmul dst=psum[0:+128]@0x0{1:128}:f32 stat=sbuf[0:+128]@0x0{1:128}:bf16 mov=sbuf[0:+128]@0x100{1:128}:bf16 start=0
pe matmul dst=psum[0:+128]@0x0{1:128}:f32 stat=sbuf[0:+128]@0x0{1:128}:bf16 mov=sbuf[0:+128]@0x100{1:128}:bf16 start=1
""")
    recs = [InstrRecord(i, "pe", i, ins, -1, 10 * i, 10 * i + 10, 0) for i, ins in enumerate(prog.instrs)]
    psum = [a for a in allocations(recs) if a.space == "psum"]
    assert [(a.first, a.last) for a in psum] == [(0, 20), (20, 30)]    # accumulate extends; start=1 replaces
