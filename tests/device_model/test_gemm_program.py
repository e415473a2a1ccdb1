"""The hand-written tiled GEMM (samples/programs/gemm512.xasm): numerics, timing, determinism."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from device_model.assembly import assemble
from device_model.machine import Machine

ROOT = Path(__file__).resolve().parents[2]
GEMM = ROOT / "samples/programs/gemm512.xasm"


def load():
    return assemble(GEMM.read_text(), str(GEMM))


def feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"a_t": rng.standard_normal((512, 512)).astype(np.float32),
            "b": rng.standard_normal((512, 512)).astype(np.float32)}


def run(prog, f, **kw):
    m = Machine("xpu1").load(prog, **kw)
    for k, v in f.items():
        m.write_tensor(k, v)
    r = m.run()
    return m.read_tensor("c"), r


def test_committed_program_is_what_the_generator_writes():
    out = subprocess.run([sys.executable, str(ROOT / "samples/programs/make_gemm.py")], capture_output=True,
                         text=True, check=True).stdout
    assert out == GEMM.read_text()


def test_gemm_matches_numpy_within_bf16_tolerance():
    f = feeds()
    c, _ = run(load(), f)
    bf = lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float64)  # noqa: E731
    exact_on_rounded = bf(f["a_t"]).T @ bf(f["b"])
    # products of bf16 values are exact in f32; only the f32 accumulation rounds
    np.testing.assert_allclose(c, exact_on_rounded, rtol=1e-5, atol=1e-4)
    full = f["a_t"].astype(np.float64).T @ f["b"].astype(np.float64)
    scale = np.abs(full).max()
    assert np.abs(c - full).max() / scale < 2 ** -7  # bf16 inputs: ~3 significant digits


def test_gemm_cycles_follow_the_cost_formulas():
    durations: dict[str, list[int]] = {}

    class Durations:
        def on_complete(self, ev):
            durations.setdefault(ev.instr.op, []).append(ev.end - ev.issue)

    m = Machine("xpu1").load(load())
    m.attach(Durations())
    r = m.run()
    # docs/timing.md, "The PE": stationary load 128 + skew 128 + 128 - 2 + N * 1 (bf16) + fixed 64; the
    # first matmul of each M-tile waits for its A block and pays the load, the next three hide it
    first, hidden = 128 + 254 + 512 + 64, 254 + 512 + 64
    assert durations["matmul"] == [first, hidden, hidden, hidden] * 4
    assert durations["activate"] == [224 + 512] * 4
    bpc = 400 / 1.4
    for d in durations["dma_copy"]:
        assert d >= 1400 + 262144 / bpc  # latency + payload at full fabric bandwidth, at least
    assert r.busy["pe"] == 4 * first + 12 * hidden == 13792
    # PE (13,792 cycles) overlaps the DMA of the next stationary block; the total is the load of B and
    # the first A block sharing the fabric, the PE/ACT chain, and the last store.
    assert r.cycles == 24125
    assert r.cycles < sum(r.busy.values())  # engines really ran in parallel


def test_gemm_is_deterministic_across_runs_processes_and_timing_jitter():
    prog = load()
    f = feeds(3)
    c1, r1 = run(prog, f)
    c2, r2 = run(prog, f)
    assert r1.cycles == r2.cycles and c1.tobytes() == c2.tobytes()
    c3, r3 = run(prog, f, cost_jitter=(7, 300))
    assert c3.tobytes() == c1.tobytes()  # semaphores order everything that matters
    assert r3.cycles != r1.cycles
    code = (
        "import sys, json, hashlib; sys.path.insert(0, %r)\n"
        "from tests.device_model.test_gemm_program import load, feeds, run\n"
        "c, r = run(load(), feeds(3))\n"
        "print(json.dumps([hashlib.sha256(c.tobytes()).hexdigest(), r.cycles]))\n" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == [hashlib.sha256(c1.tobytes()).hexdigest(), r1.cycles]


@pytest.mark.parametrize("missing_wait", ["wait=s0>=4,s1>=1", "wait=s2>=1"])
def test_removing_a_semaphore_wait_shows_up_under_jitter(missing_wait):
    text = GEMM.read_text().replace(f" {missing_wait}", "", 1)
    assert text != GEMM.read_text()
    prog = assemble(text)
    f = feeds(5)
    good, _ = run(load(), f)
    diffs = 0
    for seed in range(6):
        c, _ = run(prog, f, cost_jitter=(seed, 2000))
        diffs += int(c.tobytes() != good.tobytes())
    assert diffs > 0
