"""The machine API the debugger and the sanitizers stand on: typed observers, stop requests at
issue and completion, one-engine stepping, the engine view, values of memory accesses, host-call
operands, and copy-on-write snapshots that rewind observers too."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_model.assembly import assemble
from device_model.events import Observer, SemaphoreEvent
from device_model.machine import Machine
from tests.device_model.test_machine import ARCH, load_store_program


def loaded(seed=0):
    x = np.random.default_rng(seed).standard_normal((128, 512)).astype(np.float32)
    m = Machine(ARCH).load(load_store_program())
    m.write_tensor("x", x)
    return m, x


class Log(Observer):
    def __init__(self):
        self.issued, self.completed, self.sems = [], [], []

    def on_issue(self, ev):
        self.issued.append((ev.engine, ev.index))

    def on_complete(self, ev):
        self.completed.append((ev.engine, ev.index))

    def on_semaphore(self, ev: SemaphoreEvent):
        self.sems.append((ev.sem, ev.old, ev.new))


def test_unoverridden_hooks_are_not_registered():
    class OnlyComplete(Observer):
        def on_complete(self, ev):
            pass

    m, _ = loaded()
    m.attach(OnlyComplete())
    assert [len(m._hooks[h]) for h in ("on_issue", "on_complete", "on_memory_access")] == [0, 1, 0]


def test_stop_at_issue_leaves_the_instruction_unissued_and_resumes_without_repeating_it():
    plain, x = loaded()
    ref = plain.run()

    class StopAtAct(Log):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def on_issue(self, ev):
            super().on_issue(ev)
            if ev.engine == "act":
                self.m.request_stop("bp")

    m, _ = loaded()
    log = StopAtAct(m)
    m.attach(log)
    m.run()
    assert m.stopped.phase == "issue" and (m.stopped.engine, m.stopped.index, m.stopped.detail) == ("act", 0, "bp")
    view = m.engine("act")
    assert view.pc == 0 and not view.in_flight and view.last_retired == -1
    r = m.run()
    assert m.stopped is None and m.done
    assert log.issued.count(("act", 0)) == 1 and log.completed == [("dma0", 0), ("act", 0), ("dma1", 0)]
    assert log.sems == [(0, 0, 1), (1, 0, 1)]
    assert r.cycles == ref.cycles
    np.testing.assert_array_equal(m.read_tensor("y"), np.maximum(x, 0))


def test_stop_at_completion_from_a_memory_hook_runs_and_signals_once():
    class StopOnWrite(Log):
        def __init__(self, m):
            super().__init__()
            self.m, self.old, self.new = m, None, None

        def on_memory_access(self, acc):
            if acc.engine == "act" and acc.kind == "w":
                self.old = self.m.read_ap(acc.ap)
                self.m.request_stop()

    m, x = loaded()
    log = StopOnWrite(m)
    m.attach(log)
    m.run()
    assert (m.stopped.phase, m.stopped.engine, m.stopped.index) == ("complete", "act", 0)
    assert m.engine("act").state == "DONE" and m.sem[1] == 1
    dst = m.instr("act", 0).operands["dst"]
    assert not log.old.any()  # SBUF was zero before the write
    np.testing.assert_array_equal(m.read_ap(dst), np.maximum(x, 0))  # the new value, after completion
    m.run()
    assert log.sems == [(0, 0, 1), (1, 0, 1)] and m.done


def test_stepping_one_engine_freezes_the_others():
    m, _ = loaded()
    assert m.step("dma0", freeze_others=True).engine == "dma0"
    assert m.step("act", freeze_others=True).engine == "act"
    before = {v.name: v.pc for v in m.engines()}
    assert before == {"act": 1, "dma0": 1, "dma1": 0}
    # dma1 is done waiting: stepping act (finished) does nothing; stepping dve (no code) neither
    assert m.step("act", freeze_others=True) is None
    assert m.engine("dma1").pc == 0 and m.engine("dma1").state == "RUNNING"


def test_step_into_a_wait_on_a_frozen_engine_says_who_must_signal():
    m, _ = loaded()
    assert m.step("act", freeze_others=True) is None
    assert m.stopped.reason == "blocked" and m.stopped.engine == "act"
    (b,) = [b for b in m.stopped.detail.blocked if b.engine == "act"]
    assert b.unmet == [(0, 1, 0)] and b.signallers[0] == ["dma0"]
    assert m.engine("dma0").pc == 0  # dma0 never moved
    r = m.run()  # thawed: the run completes normally
    assert m.done and r.instructions == {"act": 1, "dma0": 1, "dma1": 1}


def test_engine_view_of_a_deadlock():
    prog = assemble(Path("samples/programs/deadlock.xasm").read_text(), "deadlock.xasm")
    m = Machine(ARCH).load(prog)
    views = {v.name: v for v in m.engines()}
    assert views["pe"].state == "BLOCKED" and views["pe"].blocked_on == (1, 1, 0)
    assert views["act"].blocked_on == (2, 1, 0)


def test_snapshots_share_unchanged_pages_restore_bit_identically_and_rewind_observers():
    class Counter(Observer):
        def __init__(self):
            self.n = 0

        def on_complete(self, ev):
            self.n += 1

        def save_state(self):
            return self.n

        def restore_state(self, state):
            self.n = state

    m, _ = loaded()
    c = Counter()
    m.attach(c)
    s0 = m.snapshot()
    m.step()
    s1 = m.snapshot()
    shared = sum(a is b for a, b in zip(s0.memory.pages[0], s1.memory.pages[0]))
    assert shared == len(s0.memory.pages[0])  # the load wrote SBUF only
    assert any(a is not b for a, b in zip(s0.memory.pages[1], s1.memory.pages[1]))
    m.run()
    final = (m.memory.hbm.copy(), m.memory.sbuf.copy(), m.time)
    m.restore(s1)
    assert c.n == 1 and m.retired == 1 and m.engine("dma0").pc == 1
    m.restore(s0)
    assert not m.memory.sbuf.any() and c.n == 0
    m.run()
    assert c.n == 3
    np.testing.assert_array_equal(m.memory.hbm, final[0])
    np.testing.assert_array_equal(m.memory.sbuf, final[1])
    assert m.time == final[2]


def test_host_calls_carry_their_hbm_operands_and_report_the_write():
    from onnx import helper

    from xputools.compiler.driver import compile_model
    from xputools.runtime.host_runner import OnnxHostRunner

    g = helper.make_graph([helper.make_node("Relu", ["x0"], ["x"]), helper.make_node("Sin", ["x"], ["y"]),
                           helper.make_node("Relu", ["y"], ["z"])], "g",
                          [helper.make_tensor_value_info("x0", 1, [4, 8])],
                          [helper.make_tensor_value_info("z", 1, None)])
    prog = compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).program
    (call,) = [i for i in prog.instrs if i.op == "host_call"]
    assert set(call.operands) == {"src0", "dst0"} and call.operands["dst0"].space == "hbm"

    class Writes(Observer):
        def __init__(self):
            self.seen = []

        def on_memory_access(self, acc):
            if acc.engine == "host":
                self.seen.append((acc.kind, acc.operand))

    m = Machine(ARCH, host_runner=OnnxHostRunner()).load(prog)
    m.write_tensor("x0", np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32))
    w = Writes()
    m.attach(w)
    m.run()
    assert w.seen == [("r", "src0"), ("w", "dst0")]


@pytest.mark.parametrize("snap_at", [0, 1, 2])
def test_restore_then_replay_gives_identical_cycles(snap_at):
    m, _ = loaded(snap_at)
    for _ in range(snap_at):
        m.step()
    s = m.snapshot()
    r1 = m.run()
    y1 = m.read_tensor("y")
    m.restore(s)
    r2 = m.run()
    assert r1 == r2
    np.testing.assert_array_equal(m.read_tensor("y"), y1)


def test_an_instruction_stopped_at_issue_is_reported_once_even_if_others_issue_first():
    from device_model.isa import AP, Instr
    from device_model.program import Program
    from tests.device_model.test_machine import ARCH as arch

    sb = lambda off: AP("sbuf", off, ((1, 8),), "f32", 0, 128)  # noqa: E731
    prog = Program(arch, [Instr("dve", "memset", {"dst": sb(0)}, {"value": 1.0}),
                          Instr("pool", "memset", {"dst": sb(64)}, {"value": 2.0})])
    m = Machine(arch).load(prog)

    class StopAtDve(Log):
        def on_issue(self, ev):
            super().on_issue(ev)
            if ev.engine == "dve" and self.issued.count(("dve", 0)) == 1:
                m.request_stop()

    log = StopAtDve()
    m.attach(log)
    m.run()
    assert m.stopped.phase == "issue" and m.stopped.engine == "dve"
    assert m.step("pool", freeze_others=True).engine == "pool"  # pool issues while dve waits, frozen
    m.run()
    assert log.issued.count(("dve", 0)) == 1 and log.completed.count(("dve", 0)) == 1
