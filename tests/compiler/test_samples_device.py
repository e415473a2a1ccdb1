"""Every bundled sample compiled for the XPU and run on the emulator: fp32 matches ONNX Runtime,
bf16 stays close, and outputs do not depend on instruction timing (race check by perturbation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from device_util import cosine, ort_run

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.outputs import onnx_outputs
from xputools.runtime import read_npz, run_program

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ["mlp", "cnn", "transformer", "lstm", "detector_head", "int8_qdq"]
SHAPES = {"transformer": {"input_ids": (2, 16)}}


def _run(name, precision="fp32", cost_jitter=None):
    feeds = read_npz(ROOT / f"samples/{name}.inputs.npz")
    compiled = compile_model(ROOT / f"samples/{name}.onnx",
                             CompileOptions(precision=precision, shapes=SHAPES.get(name, {})))
    out = run_program(compiled.program, feeds, cost_jitter=cost_jitter)
    return onnx_outputs(compiled.program, out.outputs), feeds, compiled.program


def _reference(name, feeds):
    return ort_run(onnx.load(ROOT / f"samples/{name}.onnx"), feeds)



@pytest.mark.parametrize("name", SAMPLES)
def test_sample_fp32_matches_onnxruntime(name):
    got, feeds, _ = _run(name)
    for out, ref in _reference(name, feeds).items():
        scale = max(float(np.abs(ref).max()), 1e-30)
        np.testing.assert_allclose(got[out], ref, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name}:{out}")


@pytest.mark.parametrize("name", [s for s in SAMPLES if s != "int8_qdq"])
def test_sample_bf16_cosine(name):
    got, feeds, program = _run(name, "bf16")
    assert program.meta["precision"] == "bf16"
    for out, ref in _reference(name, feeds).items():
        assert cosine(got[out], ref) >= 0.999, (name, out)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_outputs_do_not_depend_on_instruction_timing(name):
    """A missing semaphore would let a reader see a value early or late under other timings."""
    base, _, _ = _run(name)
    for seed in (1, 2):
        jittered, _, _ = _run(name, cost_jitter=(seed, 500))
        for k in base:
            assert base[k].tobytes() == jittered[k].tobytes(), (name, k, seed)


def test_keep_overrides_precision_per_node_and_by_glob(tmp_path):
    feeds = read_npz(ROOT / "samples/mlp.inputs.npz")

    def matmul_dtypes(keep):
        prog = compile_model(ROOT / "samples/mlp.onnx", CompileOptions(precision="bf16", keep=keep)).program
        by_origin = {}
        for ins in prog.instrs:
            if ins.op == "matmul":
                by_origin.setdefault(prog.origins[ins.dbg].name, set()).add(ins.operands["mov"].dtype)
        return by_origin, prog

    plain, _ = matmul_dtypes([])
    assert plain == {"fc1": {"bf16"}, "fc2/matmul": {"bf16"}, "fc3": {"bf16"}}
    kept, prog = matmul_dtypes([("fc2/*", "fp32"), ("fc3", "fp32")])
    assert kept == {"fc1": {"bf16"}, "fc2/matmul": {"f32"}, "fc3": {"f32"}}
    out = onnx_outputs(prog, run_program(prog, feeds).outputs)
    ref = _reference("mlp", feeds)
    assert cosine(out["probs"], ref["probs"]) >= 0.9999


def test_a_loaded_session_runs_again_with_identical_results():
    from xputools.runtime import DeviceSession

    compiled = compile_model(ROOT / "samples/cnn.onnx")
    feeds = read_npz(ROOT / "samples/cnn.inputs.npz")
    other = {"x": np.ascontiguousarray(feeds["x"][:, :, ::-1, :])}
    session = DeviceSession(compiled.program)
    first = session.run(feeds)
    session.run(other)
    again = session.run(feeds)
    fresh = run_program(compiled.program, feeds)
    assert first.outputs["logits"].tobytes() == again.outputs["logits"].tobytes() == fresh.outputs["logits"].tobytes()
    assert first.result.cycles == again.result.cycles == fresh.result.cycles
