"""Scheduler, timing, observers, step/snapshot and hang detection of the emulated XPU."""
from __future__ import annotations

import math

import numpy as np
import pytest

from device_model.arch import load_arch
from device_model.isa import AP, Instr
from device_model.machine import HangError, Machine, MachineError
from device_model.program import Program, Tensor

ARCH = load_arch("xpu1")
BPC = 400.0 / 1.4  # fabric bytes per cycle on xpu1
LAT = 1400


def sb(off, n, dtype="f32", parts=128):
    return AP("sbuf", off, ((1, n),), dtype, 0, parts)


def hbm(off, rows, n, dtype="f32"):
    return AP("hbm", off, ((n, rows), (1, n)), dtype)


def program(instrs, tensors):
    return Program(ARCH, instrs, tensors)


def load_store_program(with_act=True):
    ins = [Instr("dma0", "dma_copy", {"dst": sb(0, 512), "src": hbm(0, 128, 512)}, signals=((0, 1),))]
    if with_act:
        ins.append(Instr("act", "activate", {"dst": sb(4096, 512), "src": sb(0, 512)},
                         {"func": "relu", "mode": "exact"}, waits=((0, 1),), signals=((1, 1),)))
    ins.append(Instr("dma1", "dma_copy", {"dst": hbm(1 << 20, 128, 512), "src": sb(4096 if with_act else 0, 512)},
                     waits=((1, 1),) if with_act else ((0, 1),)))
    tensors = [Tensor("x", "input", 0, (128, 512), "f32"), Tensor("y", "output", 1 << 20, (128, 512), "f32")]
    return program(ins, tensors)


def dma_cycles(nbytes, runs, sharing=1):
    return math.ceil((nbytes + runs * 64) / (BPC / sharing)) + LAT


def run(prog, feeds=None, **kw):
    m = Machine(ARCH).load(prog, **kw)
    for k, v in (feeds or {}).items():
        m.write_tensor(k, v)
    return m, m.run()


def test_serial_program_cycles_follow_the_documented_formulas():
    x = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)
    m, r = run(load_store_program(), {"x": x})
    dma = dma_cycles(128 * 512 * 4, 128)
    assert dma == 2347  # the worked number in docs/timing.md
    assert r.cycles == dma + (224 + 512) + dma
    assert r.busy == {"act": 736, "dma0": dma, "dma1": dma}
    np.testing.assert_array_equal(m.read_tensor("y"), np.maximum(x, 0))


def test_dma_and_pe_in_parallel_finish_sooner_than_serialised():
    def prog(serial: bool):
        ins = [Instr("dma0", "dma_copy", {"dst": sb(0, 512), "src": hbm(0, 128, 512)}, signals=((0, 1),)),
               Instr("pe", "matmul", {"dst": AP("psum", 0, ((1, 512),), "f32", 0, 128),
                                      "stat": sb(8192, 128, "bf16"), "mov": sb(16384, 512, "bf16")},
                     waits=((0, 1),) if serial else ())]
        return program(ins, [Tensor("x", "input", 0, (128, 512), "f32")])

    _, par = run(prog(False))
    _, ser = run(prog(True))
    dma, mm = dma_cycles(128 * 512 * 4, 128), 128 + 254 + 512 + 64   # a lone matmul pays the stationary load
    assert par.cycles == max(dma, mm)
    assert ser.cycles == dma + mm
    assert par.cycles < ser.cycles


def test_two_dma_queues_share_bandwidth():
    def prog(queues):
        ins = [Instr(q, "dma_copy", {"dst": sb(i * 4096, 512), "src": hbm(0, 128, 512)}) for i, q in enumerate(queues)]
        return program(ins, [Tensor("x", "input", 0, (128, 512), "f32")])

    _, one = run(prog(["dma0"]))
    _, two = run(prog(["dma0", "dma1"]))
    assert one.cycles == dma_cycles(128 * 512 * 4, 128)
    assert two.cycles == dma_cycles(128 * 512 * 4, 128, sharing=2)
    assert one.cycles < two.cycles < 2 * one.cycles  # slower each, but latency overlaps


def test_observers_see_every_instruction_semaphore_and_access():
    class Rec:
        def __init__(self):
            self.issued, self.completed, self.sems, self.accesses = [], [], [], []

        def on_issue(self, ev):
            self.issued.append((ev.engine, ev.index, ev.issue))

        def on_complete(self, ev):
            self.completed.append((ev.engine, ev.index, ev.issue, ev.end, ev.wait))

        def on_semaphore(self, ev):
            self.sems.append((ev.sem, ev.old, ev.new, ev.engine))

        def on_memory_access(self, acc):
            self.accesses.append((acc.engine, acc.kind, acc.operand))

    rec = Rec()
    m = Machine(ARCH).load(load_store_program())
    m.attach(rec)
    r = m.run()
    assert [c[:2] for c in rec.completed] == [("dma0", 0), ("act", 0), ("dma1", 0)]
    assert len(rec.issued) == 3
    assert rec.sems == [(0, 0, 1, "dma0"), (1, 0, 1, "act")]
    assert ("act", "r", "src") in rec.accesses and ("act", "w", "dst") in rec.accesses
    # the act instruction waited on s0 for the whole DMA
    act = [c for c in rec.completed if c[0] == "act"][0]
    assert act[2] == 2347 and act[4] == 2347 and act[3] - act[2] == 736
    assert sum(c[3] - c[2] for c in rec.completed) == sum(r.busy.values())


def test_hang_report_names_the_blocked_engines_and_the_cycle():
    from pathlib import Path

    from device_model.assembly import assemble

    prog = assemble(Path("samples/programs/deadlock.xasm").read_text(), "deadlock.xasm")
    m = Machine(ARCH).load(prog)
    with pytest.raises(HangError) as err:
        m.run()
    report = err.value.report
    blocked = {b.engine: b for b in report.blocked}
    assert set(blocked) == {"pe", "act", "dma0"}
    assert blocked["pe"].unmet == [(1, 1, 0)] and blocked["pe"].signallers[1] == ["act"]
    assert blocked["act"].signallers[2] == ["pe"]
    assert report.cycle in (["pe", "act"], ["act", "pe"])
    assert "deadlock cycle" in str(err.value)


def test_wait_that_nothing_can_signal_is_reported_as_never_met():
    ins = [Instr("dve", "memset", {"dst": sb(0, 8)}, {"value": 1.0}, waits=((5, 2),)),
           Instr("act", "activate", {"dst": sb(64, 8), "src": sb(128, 8)}, signals=((5, 1),))]
    m = Machine(ARCH).load(program(ins, []))
    with pytest.raises(HangError) as err:
        m.run()
    (b,) = err.value.report.blocked
    assert b.engine == "dve" and b.unmet == [(5, 2, 1)] and b.signallers[5] == []
    assert "can never be met" in str(err.value)


def test_out_of_bounds_read_names_engine_index_and_pattern():
    from pathlib import Path

    from device_model.assembly import assemble

    prog = assemble(Path("samples/programs/out_of_bounds.xasm").read_text(), "oob.xasm")
    m = Machine(ARCH).load(prog)
    m.write_tensor("x", np.ones((128, 64), np.float32))
    with pytest.raises(MachineError) as err:
        m.run()
    msg = str(err.value)
    assert "dve instruction #0" in msg and "0x2ff80" in msg and "out of bounds" in msg


def test_step_and_snapshot_restore_replay_identically():
    x = np.random.default_rng(1).standard_normal((128, 512)).astype(np.float32)
    m = Machine(ARCH).load(load_store_program())
    m.write_tensor("x", x)
    first = m.step()
    assert (first.engine, first.index) == ("dma0", 0)
    snap = m.snapshot()
    ev = m.step("dma1")
    assert ev.engine == "dma1" and m.step() is None
    end1, y1 = m.time, m.read_tensor("y")
    m.restore(snap)
    assert m.time == first.end
    r = m.run()
    assert r.cycles == end1
    np.testing.assert_array_equal(m.read_tensor("y"), y1)


def test_semaphore_that_does_not_exist_is_rejected():
    ins = [Instr("dve", "memset", {"dst": sb(0, 8)}, waits=((64, 1),))]
    with pytest.raises(MachineError, match="s64 does not exist"):
        Machine(ARCH).load(program(ins, []))
