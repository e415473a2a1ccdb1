"""Compiler output is clean under every sanitizer (a finding there is a compiler bug), and the
checks do see into compiled programs: removing a wait or a start flag is caught."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from device_model.isa import ENGINES
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.debug.sanitize import sanitize
from xputools.runtime import read_npz

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "compiler"))
from model_builders import F32, make_model  # noqa: E402

SHAPES = {"transformer": {"input_ids": (2, 16)}}
CALIBRATION = {"cnn": "cnn.calib.npz", "int8_qdq": "int8_qdq.calib.npz"}
SAMPLES = ["mlp", "cnn", "transformer", "lstm", "detector_head", "int8_qdq"]
# one model per precision runs in every test session; the rest are marked heavy
QUICK = {("mlp", "fp32"), ("transformer", "bf16"), ("int8_qdq", "int8")}


def _compile(name: str, precision: str):
    calib = read_npz(ROOT / "samples" / CALIBRATION[name]) if precision == "int8" else None
    options = CompileOptions(precision=precision, shapes=SHAPES.get(name, {}), calibration=calib)
    return compile_model(ROOT / f"samples/{name}.onnx", options).program


def _cases():
    for precision in ("fp32", "bf16", "int8"):
        for name in SAMPLES:
            if precision == "int8" and name not in CALIBRATION:
                continue
            marks = () if (name, precision) in QUICK else (pytest.mark.heavy,)
            yield pytest.param(name, precision, marks=marks, id=f"{name}-{precision}")


@pytest.mark.parametrize("name,precision", list(_cases()))
def test_compiled_sample_is_clean(name, precision):
    program = _compile(name, precision)
    report = sanitize(program, read_npz(ROOT / f"samples/{name}.inputs.npz"))
    assert report.completed
    assert report.clean, "\n".join(f.message for f in report.findings)


def _stream_index(program, position: int) -> tuple[str, int]:
    ins = program.instrs[position]
    return ins.engine, sum(1 for other in program.instrs[:position] if other.engine == ins.engine)


def test_a_removed_wait_in_compiled_code_is_a_race_naming_that_instruction():
    program = _compile("mlp", "fp32")
    feeds = read_npz(ROOT / "samples/mlp.inputs.npz")
    # the first instruction that waits for a DMA load: drop its waits
    position = next(i for i, ins in enumerate(program.instrs)
                    if ins.engine == "pe" and any(ENGINES[s].startswith("dma") for s, _ in ins.waits))
    broken = copy.deepcopy(program)
    broken.instrs[position].waits = ()
    report = sanitize(broken, feeds, "race")
    assert report.findings and all(f.check == "race" for f in report.findings)
    engine, index = _stream_index(program, position)
    assert all((engine, index) in [(a.engine, a.index) for a in f.accesses] for f in report.findings)
    assert {f.kind for f in report.findings} == {"RAW"}
    assert all(a.node for f in report.findings for a in f.accesses)  # ONNX nodes named


def test_a_cleared_start_flag_in_compiled_code_is_an_uninit_read():
    program = _compile("mlp", "fp32")
    feeds = read_npz(ROOT / "samples/mlp.inputs.npz")
    position = next(i for i, ins in enumerate(program.instrs) if ins.op == "matmul" and ins.attrs.get("start") == 1)
    broken = copy.deepcopy(program)
    broken.instrs[position].attrs["start"] = 0
    report = sanitize(broken, feeds, "uninit")
    assert [(f.check, f.accesses[0].engine, f.accesses[0].index, f.accesses[0].operand)
            for f in report.findings] == [("uninit", *_stream_index(program, position), "dst")]


def _host_model():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sin", ["r"], ["v"], name="sin"),  # an op the device lacks
             helper.make_node("Neg", ["v"], ["y"], name="neg")]
    return make_model(nodes, [("x", F32, [4, 16])], [("y", F32, None)])


def test_host_calls_are_clean_and_their_accesses_are_checked():
    program = compile_model(_host_model()).program
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    assert program.host_ops
    assert sanitize(program, feeds).clean
    position = next(i for i, ins in enumerate(program.instrs) if ins.op == "host_call")
    broken = copy.deepcopy(program)
    broken.instrs[position].waits = ()
    report = sanitize(broken, feeds, "race")
    assert report.findings
    assert all(("host", 0) in [(a.engine, a.index) for a in f.accesses] for f in report.findings)


def test_findings_beyond_the_cap_are_counted_not_listed():
    program = copy.deepcopy(_compile("mlp", "fp32"))
    for ins in program.instrs:
        ins.waits = ()
    report = sanitize(program, read_npz(ROOT / "samples/mlp.inputs.npz"), "race", max_findings=3)
    assert len(report.findings) == 3
    assert report.suppressed["race"] > 0
    assert report.to_json()["suppressed"] == {"race": report.suppressed["race"]}
