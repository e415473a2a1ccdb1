"""A run nobody observes (or only tap readers) replays the machine's static schedule; one with an
issue observer takes the event path; a re-run in a session zeroes only what it must. All must give
the same cycles, per-engine counts, tap values, output bits and memory as each other and as a fresh
session."""
from __future__ import annotations

from pathlib import Path

import pytest

from device_model.events import Observer
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.runtime import DeviceSession, random_inputs, read_npz

ROOT = Path(__file__).resolve().parents[2]


class _CountsIssues(Observer):
    def __init__(self):
        self.issued = 0

    def on_issue(self, ev) -> None:
        self.issued += 1


@pytest.mark.parametrize(("name", "precision", "shapes"), [
    ("cnn", "bf16", {}), ("transformer", "fp32", {"input_ids": (2, 16)}), ("lstm", "fp32", {}),
])
@pytest.mark.parametrize("jitter", [None, (3, 300)])
def test_observed_and_unobserved_runs_agree(name, precision, shapes, jitter):
    program = compile_model(ROOT / f"samples/{name}.onnx", CompileOptions(precision=precision, shapes=shapes)).program
    feeds = read_npz(ROOT / f"samples/{name}.inputs.npz")
    session = DeviceSession(program, cost_jitter=jitter)
    lean = session.run(feeds)
    watcher = _CountsIssues()
    watched = session.run(feeds, observers=[watcher])
    assert watcher.issued == len(program.instrs)  # the event path really ran
    assert (lean.result.cycles, lean.result.busy, lean.result.instructions, lean.result.dma_bytes) == \
        (watched.result.cycles, watched.result.busy, watched.result.instructions, watched.result.dma_bytes)
    for out in lean.outputs:
        assert lean.outputs[out].tobytes() == watched.outputs[out].tobytes(), out


@pytest.mark.parametrize(("name", "precision", "shapes"), [
    ("cnn", "bf16", {}), ("transformer", "fp32", {"input_ids": (2, 16)}), ("lstm", "fp32", {}),
    ("detector_head", "fp16", {}), ("int8_qdq", "int8", {}),
])
def test_reruns_in_one_session_match_fresh_sessions(name, precision, shapes):
    """Re-runs replay the cached schedule and zero only the on-chip bytes they read before writing
    (or, observed, everything a view reached): each must end exactly as a fresh session's run does,
    outputs, statistics and every byte of HBM, SBUF and PSUM."""
    program = compile_model(ROOT / f"samples/{name}.onnx", CompileOptions(precision=precision, shapes=shapes)).program
    sample = read_npz(ROOT / f"samples/{name}.inputs.npz")
    other = random_inputs(program, seed=5)
    session = DeviceSession(program)
    for feeds, observed in ((sample, False), (other, False), (sample, True), (other, False), (sample, False)):
        out = session.run(feeds, observers=[_CountsIssues()] if observed else ())
        fresh_session = DeviceSession(program)
        fresh = fresh_session.run(feeds)
        assert out.result == fresh.result
        for k in fresh.outputs:
            assert out.outputs[k].tobytes() == fresh.outputs[k].tobytes(), k
        mine, new = session.machine.memory, fresh_session.machine.memory
        for space in ("hbm", "sbuf", "psum"):
            assert getattr(mine, space).tobytes() == getattr(new, space).tobytes(), space


@pytest.mark.parametrize(("name", "precision", "shapes"), [
    ("cnn", "bf16", {}), ("transformer", "fp32", {"input_ids": (2, 16)}),
])
def test_tapped_runs_replay_and_read_what_the_event_path_reads(name, precision, shapes):
    """Tap readers look only at memory after completions, so a tapped run replays the schedule; an
    observer with an issue hook forces the event path: every tap value and output must agree."""
    program = compile_model(ROOT / f"samples/{name}.onnx", CompileOptions(precision=precision, shapes=shapes)).program
    feeds = read_npz(ROOT / f"samples/{name}.inputs.npz")
    session = DeviceSession(program)
    replayed = session.run(feeds, taps=True)
    watcher = _CountsIssues()
    stepped = session.run(feeds, taps=True, observers=[watcher])
    assert watcher.issued == len(program.instrs) and replayed.taps
    assert replayed.result == stepped.result
    assert replayed.taps.keys() == stepped.taps.keys()
    for k in stepped.taps:
        assert replayed.taps[k].tobytes() == stepped.taps[k].tobytes(), k
    for k in stepped.outputs:
        assert replayed.outputs[k].tobytes() == stepped.outputs[k].tobytes(), k
