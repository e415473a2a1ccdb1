"""tensor_tensor and tensor_scalar on small f32 tiles through the compiled loops (device_model.tile_alu)
give the bits of the numpy calls they replace: random memory (NaN payloads, infinities, subnormals, -0)
with awkward values written into the operands, both memories compared byte for byte, the operands
changed between two runs; NaN pairs and NaN scalars fall back to numpy's call before anything is
written; layouts the loop cannot do exactly keep numpy's call."""
from __future__ import annotations

import numpy as np
import pytest

from device_model import jit, tile_alu
from device_model.arch import load_arch
from device_model.engines import build_executor
from device_model.isa import Instr
from tests.device_model.test_tiny_instr_paths import _compare, _memories, _nan_payloads, _sb

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
ARCH = load_arch()


@pytest.fixture(autouse=True)
def compiled_loops(monkeypatch):
    """The compiled loops, also where the environment says XPU_JIT=0."""
    monkeypatch.delenv("XPU_JIT", raising=False)
    for name in ("BINARY", "STAGES"):
        kernel = getattr(tile_alu, name)
        fresh = jit.Kernel(kernel.py_func, kernel.signature, kernel.helpers)
        assert fresh.compiled() is not None, fresh.unavailable
        monkeypatch.setattr(tile_alu, name, fresh)


def _executor_name(ins: Instr) -> str:
    mem, _ = _memories(1)
    return build_executor(ins, mem, ARCH).__name__


TT_LAYOUTS = {  # (a, b, dst)
    "distinct": (_sb(0, 32, ((1, 2),)), _sb(64, 32, ((1, 2),)), _sb(128, 32, ((1, 2),))),
    "dst is a": (_sb(0, 32, ((1, 8),)), _sb(64, 32, ((1, 8),)), _sb(0, 32, ((1, 8),))),
    "dst is b": (_sb(0, 16, ((1, 8),)), _sb(64, 16, ((1, 8),)), _sb(64, 16, ((1, 8),))),
    "a is b": (_sb(0, 32, ((1, 4),)), _sb(0, 32, ((1, 4),)), _sb(128, 32, ((1, 4),))),
    "psum operand": (_sb(0, 32, ((1, 8),), space="psum"), _sb(64, 32, ((1, 8),)), _sb(128, 32, ((1, 8),))),
    "3-d": (_sb(0, 32, ((2, 4), (1, 2))), _sb(256, 32, ((2, 4), (1, 2))), _sb(512, 32, ((2, 4), (1, 2)))),
    "one partition": (_sb(0, 1, ((1, 40),)), _sb(256, 1, ((1, 40),)), _sb(512, 1, ((1, 40),))),
}


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("layout", sorted(TT_LAYOUTS))
def test_tensor_tensor_tile_matches_numpys_call(op, layout, monkeypatch):
    a, b, dst = TT_LAYOUTS[layout]
    ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op})
    assert _executor_name(ins) == "tensor_tensor_tile"
    _compare(ins, 500 + sorted(TT_LAYOUTS).index(layout), monkeypatch, "binary_tile", fill=("a", "b"), runs=2)


@pytest.mark.parametrize("layout", ["distinct", "one partition", "dst is a"])
def test_tensor_tensor_tile_leaves_nan_pairs_to_numpy(layout):
    """Both operands NaN (payloads differ) at some elements: the instruction runs numpy's call, whose
    payload choice the loop does not reproduce (numpy's add and multiply keep the second operand's
    payload in a row of 17 or more, the loop would keep the first's); the other elements are numpy's too."""
    rng = np.random.default_rng(7)
    a, b, dst = TT_LAYOUTS[layout]
    for op, ufunc in (("add", np.add), ("mul", np.multiply), ("sub", np.subtract), ("div", np.divide)):
        ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": op})
        mem, _ = _memories(8)
        shape = mem.view(a).shape
        values_a, values_b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
        pairs = rng.random(shape) < 0.5
        values_a[pairs], values_b[pairs] = _nan_payloads(rng, int(pairs.sum())), _nan_payloads(rng, int(pairs.sum()))
        mem.view(a)[...], mem.view(b)[...] = values_a, values_b
        expected = ufunc(values_a, values_b)
        build_executor(ins, mem, ARCH)()
        assert np.array_equal(mem.view(dst).view(np.uint32), expected.view(np.uint32)), op


def test_layouts_the_loop_cannot_do_exactly_keep_numpys_call():
    shifted = Instr("dve", "tensor_tensor", {"dst": _sb(4, 32, ((1, 8),)), "a": _sb(0, 32, ((1, 8),)),
                                             "b": _sb(64, 32, ((1, 8),))}, {"op": "add"})
    large = Instr("dve", "tensor_tensor", {"dst": _sb(0, 128, ((1, 64),)), "a": _sb(512, 128, ((1, 64),)),
                                           "b": _sb(1024, 128, ((1, 64),))}, {"op": "mul"})
    maximum = Instr("dve", "tensor_tensor", {"dst": _sb(0, 32, ((1, 8),)), "a": _sb(64, 32, ((1, 8),)),
                                             "b": _sb(128, 32, ((1, 8),))}, {"op": "max"})
    to_bf16 = Instr("dve", "tensor_tensor", {"dst": _sb(0, 32, ((1, 8),), "bf16"), "a": _sb(64, 32, ((1, 8),)),
                                             "b": _sb(128, 32, ((1, 8),))}, {"op": "add"})
    scalar_in_dst = Instr("dve", "tensor_scalar", {"dst": _sb(512, 32, ((1, 2),)), "src": _sb(0, 32, ((1, 2),)),
                                                   "s0_ap": _sb(516, 32, ((1, 1),))}, {"op0": "mul"})
    not_2d = Instr("dve", "tensor_tensor", {"dst": _sb(0, 32, ((16, 4), (1, 2))), "a": _sb(512, 32, ((16, 4), (1, 2))),
                                            "b": _sb(1024, 32, ((16, 4), (1, 2)))}, {"op": "add"})
    for ins in (shifted, large, maximum, to_bf16, scalar_in_dst, not_2d):
        assert _executor_name(ins) not in ("tensor_tensor_tile", "tensor_scalar_tile"), ins


STAGES = [{"op0": "mul", "s0": 2.0, "op1": "sub", "s1": 1.0},
          {"op0": "add"},
          {"op0": "div", "s0": 3.0, "rev0": 1},
          {"op0": "sub", "s0": 0.5, "rev0": 1, "op1": "div", "s1": -0.0},
          {"op0": "mul", "op1": "add", "s1": float("inf")},
          {"op0": "add", "s0": 1.0, "op1": "mul", "s1": float("nan")},  # a NaN immediate: numpy's call
          {"op0": "mul", "s0": 1e-45, "op1": "bypass"}]
TS_LAYOUTS = {  # (src, dst)
    "distinct": (_sb(0, 32, ((1, 2),)), _sb(512, 32, ((1, 2),))),
    "in place": (_sb(0, 32, ((1, 16),)), _sb(0, 32, ((1, 16),))),
    "from psum": (_sb(0, 32, ((1, 16),), space="psum"), _sb(512, 32, ((1, 16),))),
    "3-d": (_sb(0, 32, ((2, 4), (1, 2))), _sb(512, 32, ((2, 4), (1, 2)))),
}


@pytest.mark.parametrize("stages", STAGES, ids=[str(i) for i in range(len(STAGES))])
@pytest.mark.parametrize("layout", sorted(TS_LAYOUTS))
def test_tensor_scalar_tile_matches_numpys_calls(stages, layout, monkeypatch):
    """Per-partition scalars (random memory, NaN payloads included: numpy's call then) and immediates."""
    src, dst = TS_LAYOUTS[layout]
    ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src, "s0_ap": _sb(2048, 32, ((1, 1),))}, stages)
    if "nan" not in str(stages):
        assert _executor_name(ins) == "tensor_scalar_tile"
    _compare(ins, 600 + sorted(TS_LAYOUTS).index(layout), monkeypatch, "stages_tile", fill=("src", "s0_ap"), runs=2)
    immediate = {**stages, "s0": stages.get("s0", 1.5)}
    ins = Instr("dve", "tensor_scalar", {"dst": dst, "src": src}, immediate)
    _compare(ins, 650 + sorted(TS_LAYOUTS).index(layout), monkeypatch, "stages_tile", fill=("src",), runs=2)


def test_without_a_compiled_loop_the_instruction_runs_numpys_call(monkeypatch):
    monkeypatch.setenv("XPU_JIT", "0")
    for name in ("BINARY", "STAGES"):
        kernel = getattr(tile_alu, name)
        monkeypatch.setattr(tile_alu, name, jit.Kernel(kernel.py_func, kernel.signature, kernel.helpers))
    a, b, dst = TT_LAYOUTS["distinct"]
    ins = Instr("dve", "tensor_tensor", {"dst": dst, "a": a, "b": b}, {"op": "mul"})
    _compare(ins, 700, monkeypatch, "binary_tile", fill=("a", "b"), runs=2)
    assert tile_alu.BINARY.compiled() is None
