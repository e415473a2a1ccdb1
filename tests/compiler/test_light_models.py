"""The `light_*` models shipped in the onnx wheel (real CNN topologies at 224x224 with constant
weights) compile for the XPU and match ONNX Runtime in fp32."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from xputools.compiler.driver import compile_model
from xputools.runtime import run_program

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT) if f.endswith(".onnx"))


def test_the_wheel_ships_the_light_models():
    assert {"resnet50", "squeezenet", "vgg19", "densenet121"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_light_model_fp32_matches_onnxruntime(name):
    model = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    program = compile_model(model).program
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in program.inputs()}
    got = run_program(program, feeds).outputs
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for name_, ref in zip(names, sess.run(names, feeds)):
        scale = max(float(np.abs(ref).max()), 1e-30)
        np.testing.assert_allclose(got[name_], ref, rtol=1e-4, atol=1e-5 * scale)
