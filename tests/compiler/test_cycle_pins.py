"""Pinned cycle counts of compiled samples: a change to a kernel, the scheduler or the cost model
that moves any of them fails here, so performance never drifts silently. Only cycles and
instruction counts are pinned (not output bits, which may depend on the host's BLAS).

After a deliberate change, regenerate the table with `PYTHONPATH=. python tests/compiler/test_cycle_pins.py`
and say in the commit why the numbers moved."""
from __future__ import annotations

from pathlib import Path

import pytest

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.runtime import read_npz, run_program

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"transformer": {"input_ids": (2, 16)}}

# (sample, precision): (cycles, instructions)
PINS = {
    ("mlp", "fp32"): (15617, 27),
    ("cnn", "fp32"): (61226, 96),
    ("cnn", "bf16"): (53982, 101),
    ("transformer", "bf16"): (133166, 248),
    ("lstm", "fp32"): (27508, 110),
    ("detector_head", "fp32"): (16356, 24),
    ("int8_qdq", "int8"): (25346, 46),
}


def measure(name: str, precision: str) -> tuple[int, int]:
    """(cycles, instructions) of a sample compiled at `precision` and run on its bundled inputs."""
    options = CompileOptions(precision=precision, shapes=SHAPES.get(name, {}))
    program = compile_model(ROOT / f"samples/{name}.onnx", options).program
    result = run_program(program, read_npz(ROOT / f"samples/{name}.inputs.npz")).result
    return int(result.cycles), len(program.instrs)


@pytest.mark.parametrize(("name", "precision"), sorted(PINS))
def test_cycle_count_is_pinned(name, precision):
    assert measure(name, precision) == PINS[(name, precision)]


if __name__ == "__main__":
    for key in sorted(PINS):
        print(f"    {key!r}: {measure(*key)!r},")
