"""A run nobody observes takes the machine's lean scheduler loop; one with an observer takes the
event path. Both must give the same cycles, per-engine counts and output bits."""
from __future__ import annotations

from pathlib import Path

import pytest

from device_model.events import Observer
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.runtime import DeviceSession, read_npz

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
