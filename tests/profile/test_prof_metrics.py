"""The numbers peers show (issue 12 §2): MFU and achieved TFLOP/s, PE array occupancy, DMA efficiency,
compute-DMA overlap, each re-derived from the database by hand."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from prof_helpers import ROOT

from device_model.arch import load_arch
from device_model.assembly import assemble
from xputools.profile.database import open_profile
from xputools.profile.recorder import record
from xputools.profile.summary import build_summary, render_summary


@pytest.fixture(scope="module")
def gemm(tmp_path_factory):
    program = assemble((ROOT / "samples/programs/gemm512.xasm").read_text())
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in program.inputs()}
    out = tmp_path_factory.mktemp("metrics") / "gemm.pftrace"
    result = record(program, feeds, out)
    return result, build_summary(open_profile(result.db_path))


def test_mfu_is_model_flops_over_latency_times_peak(gemm):
    result, s = gemm
    arch = load_arch("xpu1")
    seconds = s["latency"]["cycles"] / (arch.clock_ghz * 1e9)
    flops = 2 * 512 ** 3
    assert s["compute"]["pe_flops"] == flops and s["compute"]["flops"] >= flops
    assert s["compute"]["mfu_pct"] == pytest.approx(100 * flops / seconds / arch.peak_flops("bf16"), abs=0.01)
    assert s["compute"]["pe_tflops"] == pytest.approx(flops / seconds / 1e12, rel=1e-4)
    assert "MFU" in render_summary(s)


def test_pe_array_occupancy_per_matmul_and_per_layer(gemm):
    result, s = gemm
    con = sqlite3.connect(result.db_path)
    shapes = set(con.execute("SELECT pe_rows, pe_cols, pe_n FROM instructions WHERE op = 'matmul'"))
    assert shapes == {(128, 128, 512)}
    assert con.execute("SELECT COUNT(*) FROM instructions WHERE op != 'matmul' AND pe_rows > 0").fetchone()[0] == 0
    con.close()
    layer = next(x for x in s["layers"] if x["name"] == "gemm")
    assert layer["pe_occupancy_pct"] == 100.0 and layer["pe_shape"] == {"rows": 128, "cols": 128, "n": 512}


def test_dma_efficiency_payload_fabric_runs_and_queues(gemm):
    result, s = gemm
    d = s["dma"]
    con = sqlite3.connect(result.db_path)
    rows = con.execute("SELECT bytes, fabric_bytes, runs, src_dtype, dst_dtype, queue FROM dma_transfers").fetchall()
    con.close()
    overhead = load_arch("xpu1").raw["dma"]["run_overhead_bytes"]
    assert d["bytes"] == sum(r[0] for r in rows) and d["fabric_bytes"] == sum(r[1] for r in rows)
    assert d["descriptor_overhead_bytes"] == sum(r[2] for r in rows) * overhead
    for nbytes, fabric, runs, src, dst, _q in rows:    # fabric = the wider side's payload + run overhead
        wider = nbytes * (2 if (src, dst) == ("f32", "bf16") else 1)
        assert fabric == wider + runs * overhead
    assert d["efficiency_pct"] == pytest.approx(100 * d["bytes"] / d["fabric_bytes"], abs=0.05)
    assert sum(q["transfers"] for q in d["queues"]) == len(rows)
    assert sum(b["transfers"] for b in d["sizes"]) == len(rows) and sum(b["bytes"] for b in d["sizes"]) == d["bytes"]
    for q in d["queues"]:
        assert q["gbps"] > 0 and q["bytes"] == sum(r[0] for r in rows if r[5] == q["queue"])


def test_compute_dma_overlap(gemm):
    result, s = gemm
    o = s["overlap"]
    assert 0 < o["overlap_us"] <= min(o["compute_us"], o["dma_us"])
    assert o["dma_overlapped_pct"] == pytest.approx(100 * o["overlap_us"] / o["dma_us"], abs=0.1)
    recs = result.profile.selected
    busy = set()
    for kinds in (("pe", "act", "dve", "pool"), ("dma",)):
        cycles = set()
        for r in recs:
            if r.engine.rstrip("0123456789") in kinds:
                cycles.update(range(r.issue, r.end))
        busy.add(frozenset(cycles))
    a, b = busy
    assert round(len(a & b) / 1.4e3, 3) == pytest.approx(o["overlap_us"], abs=1e-3)
