"""The runtime's tap hook and write_tap, and why teacher forcing measures what it claims."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from acc_models import SAMPLES, cancel_chain, inputs_for
from onnx import TensorProto, helper

from xputools.accuracy.analysis import Analysis
from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.runtime import DeviceSession, read_npz
from xputools.runtime.taps import TapHook, read_tap, write_tap


def test_write_tap_is_the_inverse_of_read_tap():
    program = compile_model(SAMPLES / "mlp.onnx", CompileOptions(precision="bf16")).program
    session = DeviceSession(program)
    tap = next(t for t in program.taps if t.pieces)
    value = np.random.default_rng(0).standard_normal(tap.shape).astype(np.float32)
    write_tap(session.machine, tap, value)
    np.testing.assert_array_equal(read_tap(session.machine, tap), value)


def test_fp32_teacher_forced_run_has_no_local_error():
    an = Analysis(SAMPLES / "cnn.onnx", CompileOptions(precision="fp32"))
    feeds = read_npz(SAMPLES / "cnn.inputs.npz")
    an.reference.start(feeds)
    seen = {}
    an.teacher_forced_run(feeds, lambda name, v, r: seen.setdefault(name, float(np.abs(v - r).max())))
    assert len(seen) == len([t for t in an.tensors if t.compared]) > 10
    assert max(seen.values()) < 1e-4


class _EarlyReads:
    """Observer: reads of a tapped HBM region before that tap's point."""

    def __init__(self, taps):
        self.regions = [(t, *t.pieces[0].ap.byte_extent()) for t in taps if t.pieces]
        self.done, self.early = set(), []

    def tap_point(self, tap, value):
        self.done.add(tap.name)

    def on_memory_access(self, acc):
        if acc.kind == "r" and acc.ap.space == "hbm":
            lo, hi = acc.ap.byte_extent()
            self.early.extend(t.name for t, a, b in self.regions if lo < b and a < hi and t.name not in self.done)


@pytest.mark.parametrize("name", ["cnn", "mlp", "detector_head", "int8_qdq"])
def test_no_consumer_reads_a_tapped_value_before_its_tap_point(name):
    """Teacher forcing overwrites a value at its tap point: sound only if nothing read it earlier."""
    program = compile_model(SAMPLES / f"{name}.onnx", CompileOptions(precision="bf16")).program
    watch = _EarlyReads(program.taps)
    session = DeviceSession(program)
    hook = TapHook(session.machine, program.taps, watch.tap_point)
    session.run(read_npz(SAMPLES / f"{name}.inputs.npz"), observers=[hook, watch])
    assert watch.early == []


def test_teacher_forced_value_is_the_node_alone_on_reference_inputs():
    """The local value of the planted MatMul equals compiling that node alone and running it on
    ORT's value of its input: bit for bit."""
    model = cancel_chain()
    feeds = inputs_for(model)
    an = Analysis(model.SerializeToString(), CompileOptions(precision="bf16"))
    an.reference.start(feeds)
    local = {}
    an.teacher_forced_run(feeds, lambda name, v, r: local.__setitem__(name, v))
    x = an.reference.get("bad/concat")
    weight = next(i for i in model.graph.initializer if i.name == "bad.weight")
    alone = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "bad.weight"], ["bad"], name="bad")], "alone",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("bad", TensorProto.FLOAT, [x.shape[0], 64])], [weight]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(alone)
    program = compile_model(alone.SerializeToString(), CompileOptions(precision="bf16")).program
    out = DeviceSession(program).run({"x": x}).outputs["bad"]
    np.testing.assert_array_equal(local["bad"], out)


@pytest.mark.parametrize("seed", [1, 2])
def test_local_values_do_not_depend_on_instruction_timing(seed):
    """Random extra cost per instruction reorders completions across engines; a sound teacher-forced
    run gives the same local values bit for bit."""
    def locals_with(jitter):
        an = Analysis(SAMPLES / "cnn.onnx", CompileOptions(precision="bf16"))
        if jitter:
            an.session = DeviceSession(an.program, cost_jitter=(seed, 64))
        feeds = read_npz(SAMPLES / "cnn.inputs.npz")
        an.reference.start(feeds)
        got = {}
        an.teacher_forced_run(feeds, lambda name, v, r: got.__setitem__(name, v))
        return got

    plain, jittered = locals_with(False), locals_with(True)
    assert plain.keys() == jittered.keys()
    for name in plain:
        np.testing.assert_array_equal(plain[name], jittered[name], err_msg=name)
