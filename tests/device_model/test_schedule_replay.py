"""A run from reset that nobody observes replays the machine's static schedule (the completion order
found once by the scheduler), and a re-run zeroes only the on-chip bytes it must. Both must be
invisible: the same cycles, semaphores, engine states, faults, hang reports and every memory byte
as the scheduler's own loop, an observed run, and a fresh machine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_model.assembly import assemble
from device_model.events import Observer
from device_model.isa import AP
from device_model.machine import _ENGINE_FIELDS, HangError, Machine, MachineError
from device_model.memory import Memory, onchip_cover
from tests.device_model.test_machine import ARCH, load_store_program

PROGRAMS = Path(__file__).resolve().parents[2] / "samples" / "programs"


def _xasm(name: str):
    return assemble((PROGRAMS / name).read_text(), name)


class _Completions(Observer):
    def __init__(self):
        self.order = []

    def on_complete(self, ev) -> None:
        self.order.append((ev.engine, ev.index))


def _state(m: Machine) -> tuple:
    """Everything a run leaves behind: scheduler state and every memory byte."""
    engines = tuple(tuple(getattr(e, f) for f in _ENGINE_FIELDS) for e in m._engines)
    return (m.time, tuple(m.sem), tuple(m.busy_cycles), tuple(m.completed), m.dma_bytes_moved, m.done, engines,
            m.memory.hbm.tobytes(), m.memory.sbuf.tobytes(), m.memory.psum.tobytes())


def _gemm_feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a_t": rng.standard_normal((512, 512)).astype(np.float32),
            "b": rng.standard_normal((512, 512)).astype(np.float32)}


def _loaded(prog, feeds, cost_jitter=None) -> Machine:
    m = Machine(ARCH).load(prog, cost_jitter=cost_jitter)
    for name, value in feeds.items():
        m.write_tensor(name, value)
    return m


@pytest.mark.parametrize("jitter", [None, (5, 200)])
def test_replay_ends_where_the_scheduler_loop_and_the_event_path_end(jitter):
    prog = _xasm("gemm512.xasm")  # double-buffered: DMA queues share bandwidth, engines overlap
    feeds = _gemm_feeds(3)
    replayed = _loaded(prog, feeds, jitter)
    replayed.run()  # from reset, unobserved: finds the schedule and replays it
    watched = _loaded(prog, feeds, jitter)
    log = _Completions()
    watched.attach(log)
    watched.run()  # the event path
    watched.detach(log)
    looped = _loaded(prog, feeds, jitter)
    looped.step()  # no longer at the start: the rest runs in the scheduler's lean loop
    looped.run()
    assert _state(replayed) == _state(watched) == _state(looped)
    assert [(e.name, i) for e, i in replayed._schedule.order] == log.order
    replayed.reset()  # the same machine again: the cached schedule, the same end
    for name, value in feeds.items():
        replayed.write_tensor(name, value)
    replayed.run()
    assert _state(replayed) == _state(watched)


def test_a_fault_in_a_replay_leaves_the_state_and_message_of_the_event_path():
    prog = _xasm("out_of_bounds.xasm")
    x = np.ones((128, 64), np.float32)
    states, messages = [], []
    for observed in (False, True, False):
        m = _loaded(prog, {"x": x})
        if observed:
            m.attach(_Completions())
        with pytest.raises(MachineError) as err:
            m.run()
        messages.append((str(err.value), err.value.engine, err.value.index))
        states.append(_state(m) + (tuple(e.id for e in m._pending), str(m.fault)))
        if not observed:  # a second run from reset of the same machine replays the cached schedule
            m.reset()
            with pytest.raises(MachineError) as again:
                m.run()
            assert str(again.value) == messages[-1][0]
    assert messages[0] == messages[1] == messages[2] and "dve instruction #0" in messages[0][0]
    assert states[0] == states[1] == states[2]


def test_a_hanging_program_hangs_the_same_way_every_run():
    prog = _xasm("deadlock.xasm")
    m = Machine(ARCH).load(prog)
    reports = []
    for _ in range(2):
        with pytest.raises(HangError) as err:
            m.run()
        reports.append((str(err.value), m.time, tuple(m.sem)))
        m.rewind(observed=False)  # a hang has no complete schedule: everything is zeroed
    assert reports[0] == reports[1]
    assert not m.memory.sbuf.any() and not m.memory.psum.any()


@pytest.mark.parametrize("observed_runs", [(), (1,), (0, 2), (2,)])
def test_rewound_reruns_match_fresh_machines_even_when_the_program_reads_psum_before_writing_it(observed_runs):
    # uninit_psum accumulates into PSUM it never wrote (start=0): the bytes a run reads first must be
    # zero again before each re-run, or the second run would add the first run's product
    prog = _xasm("uninit_psum.xasm")

    def feeds(seed):
        rng = np.random.default_rng(seed)
        return {"w": rng.standard_normal((128, 128)).astype(np.float32),
                "x": rng.standard_normal((128, 64)).astype(np.float32)}

    m = Machine(ARCH).load(prog)
    for run in range(4):
        f = feeds(10 + run % 2)
        if run:
            m.rewind(observed=run in observed_runs)
        for name, value in f.items():
            m.write_tensor(name, value)
        log = _Completions()
        if run in observed_runs:
            m.attach(log)
        m.run()
        if run in observed_runs:
            m.detach(log)
        fresh = _loaded(prog, f)
        fresh.run()
        assert _state(m) == _state(fresh), run
    if observed_runs != (0, 2):  # (a rewind after an observed run zeroes everything)
        assert m._first_reads.nbytes > 0  # the PSUM bank the matmul reads first is what gets zeroed


def test_read_before_written_names_only_reads_no_earlier_write_covers():
    mem = Memory(ARCH, 1 << 12, 4096, 2048)
    a = AP("sbuf", 0, ((1, 16),), "f32", 0, 4)
    b_half = AP("sbuf", 32, ((1, 8),), "f32", 0, 4)  # the second half of a
    strided = AP("sbuf", 0, ((2, 8),), "f32", 0, 4)  # every other element of a
    wider = AP("sbuf", 0, ((1, 16),), "f32", 0, 8)  # a on 8 partitions: 4..7 never written
    c = AP("psum", 0, ((1, 4),), "f32", 0, 1)
    accesses = [
        (("r", "src", AP("hbm", 0, ((1, 4),), "f32")), ("w", "dst", a)),
        (("r", "src", b_half), ("r", "b", strided), ("w", "dst", c)),
        (("r", "src", wider), ("r", "c", c), ("w", "dst", b_half)),
    ]
    assert mem.read_before_written(accesses) == [("sbuf", 0, 8, 0, 64)]
    assert mem.read_before_written([(("r", "dst", c), ("w", "dst", c))]) == [("psum", 0, 1, 0, 16)]


def test_cover_rectangles_are_disjoint_and_cover_every_box():
    rng = np.random.default_rng(7)
    bufs = {"sbuf": np.zeros((16, 4096), np.uint8), "psum": np.zeros((16, 1024), np.uint8)}
    boxes = set()
    for _ in range(60):
        space = "sbuf" if rng.random() < 0.7 else "psum"
        rows, cols = bufs[space].shape
        p0 = int(rng.integers(0, rows))
        b0 = int(rng.integers(0, cols))
        boxes.add((space, p0, p0 + int(rng.integers(1, 6)), b0, b0 + int(rng.integers(1, 300))))
    boxes.add(("sbuf", 0, 40, 4000, 5000))  # clipped to the buffer
    counts = {s: np.zeros(b.shape, int) for s, b in bufs.items()}
    for space, (p0, p1, b0, b1) in onchip_cover(boxes, bufs):
        counts[space][p0:p1, b0:b1] += 1
    for space, p0, p1, b0, b1 in boxes:
        assert (counts[space][p0:p1, b0:b1] == 1).all()
    assert all(c.max() <= 1 for c in counts.values())


def test_clear_zeroes_what_views_reached_and_everything_after_a_restore():
    mem = Memory(ARCH, 1 << 12, 4096, 2048)
    mem.view(AP("sbuf", 64, ((1, 16),), "f32", 2, 3))[...] = 1.5
    mem.view(AP("psum", 0, ((1, 4),), "f32", 0, 128))[...] = -2.0
    mem.clear_onchip()
    assert not mem.sbuf.any() and not mem.psum.any()
    mem.sbuf[5, 3000] = 9  # written behind the views' back, then brought back by a restore
    snap = mem.snapshot()
    mem.restore(snap)
    mem.clear_onchip()
    assert not mem.sbuf.any()


def test_replay_and_rewind_keep_a_load_store_program_exact():
    x = np.random.default_rng(1).standard_normal((128, 512)).astype(np.float32)
    m = _loaded(load_store_program(), {"x": x})
    first = m.run()
    m.rewind(observed=False)
    m.write_tensor("x", x)
    second = m.run()
    assert first == second
    np.testing.assert_array_equal(m.read_tensor("y"), np.maximum(x, 0))


def test_rewind_for_an_unobserved_run_keeps_what_the_run_rewrites_unless_an_observer_is_attached():
    x = np.random.default_rng(2).standard_normal((128, 512)).astype(np.float32)
    m = _loaded(load_store_program(), {"x": x})
    m.run()
    m.rewind(observed=False)  # the program writes every on-chip byte before reading it: nothing to zero
    assert m.memory.sbuf.any()
    m.attach(_Completions())  # someone watches the next run: it must see a new load's memory
    m.rewind(observed=False)
    assert not m.memory.sbuf.any() and not m.memory.psum.any()


def test_rewind_after_an_observed_run_zeroes_what_its_observers_wrote():
    x = np.random.default_rng(4).standard_normal((128, 512)).astype(np.float32)
    m = _loaded(load_store_program(), {"x": x})

    class Forces(Observer):  # like a teacher-forcing tap hook: writes memory from a hook
        def on_complete(self, ev) -> None:
            m.memory.view(AP("sbuf", 2048, ((1, 16),), "f32", 0, 128))[...] = 7.0  # no instruction writes it

    forcer = Forces()
    m.attach(forcer)
    m.run()
    m.detach(forcer)
    m.rewind(observed=False)  # the next run is unobserved, but the bytes the hook wrote must go
    assert not m.memory.sbuf.any()
    m.write_tensor("x", x)
    m.run()
    m.rewind(observed=False)  # after an unobserved run, only what it reads first (nothing here)
    assert m.memory.sbuf.any()


class _MemoryOnly(Observer):
    """Looks only at events and memory, so a run with it replays the schedule; can stop or raise at
    the n-th completion, and overwrites the first SBUF element after every completion (a tap hook's
    teacher forcing: later instructions must read what it wrote)."""

    sees_only_memory = True

    def __init__(self, machine, stop_at=None, raise_at=None, detach_at=None):
        self.machine, self.stop_at, self.raise_at, self.detach_at = machine, stop_at, raise_at, detach_at
        self.events, self.seen = [], []

    def on_complete(self, ev) -> None:
        self.events.append(ev)
        view = self.machine.memory.view(AP("sbuf", 0, ((1, 1),), "f32", 0, 1))
        self.seen.append(float(view[0, 0]))
        view[...] = len(self.events)
        if len(self.events) == self.stop_at:
            self.machine.request_stop(("stopped", self.stop_at))
        if len(self.events) == self.raise_at:
            raise KeyError("from a hook")
        if len(self.events) == self.detach_at:
            self.machine.detach(self)  # the rest of the run has nobody to call


class _Ordinary(_MemoryOnly):
    sees_only_memory = False  # the same hook, taken through the event path


@pytest.mark.parametrize("kind", ["complete", "stop", "raise", "detach"])
def test_a_replay_calls_memory_only_hooks_as_the_event_path_does(kind, monkeypatch):
    replays = []
    real_replay = Machine._replay
    monkeypatch.setattr(Machine, "_replay", lambda self, schedule: replays.append(1) or real_replay(self, schedule))
    prog = _xasm("gemm512.xasm")
    feeds = _gemm_feeds(6)
    n = len(prog.instrs)
    runs = []
    for cls in (_MemoryOnly, _Ordinary):
        m = _loaded(prog, feeds)
        m.run()  # (the schedule is found by the first run; the second starts from reset again)
        m.reset()
        for name, value in feeds.items():
            m.write_tensor(name, value)
        obs = cls(m, stop_at=n // 2 if kind == "stop" else None, raise_at=n // 3 if kind == "raise" else None,
                  detach_at=n // 4 if kind == "detach" else None)
        m.attach(obs)
        replays.clear()
        if kind == "raise":
            with pytest.raises(KeyError, match="from a hook"):
                m.run()
        else:
            m.run()
        assert len(replays) == (1 if cls is _MemoryOnly else 0)
        stop = m.stopped
        state = _state(m) + (tuple(e.id for e in m._pending),)
        if kind == "stop":
            m.detach(obs)
            m.run()  # resume to the end without the observer
        elif kind == "detach":
            assert obs not in m._observers and m.done
        runs.append((obs.events, obs.seen, stop, state, _state(m)))
    replayed, event_path = runs
    expected = {"complete": n, "stop": n // 2, "raise": n // 3, "detach": n // 4}[kind]
    assert replayed[0] == event_path[0] and len(replayed[0]) == expected
    assert replayed[1:] == event_path[1:]
    if kind == "stop":
        assert replayed[2].detail == ("stopped", n // 2) and replayed[2].phase == "complete"
