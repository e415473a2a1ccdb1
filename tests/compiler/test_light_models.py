"""The `light_*` models shipped in the onnx wheel (real CNN topologies at 224x224 with constant
weights) compile for the XPU and match ONNX Runtime in fp32."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from device_util import softmax_allowed_error

from xputools.compiler.driver import compile_model
from xputools.runtime import run_program
from xputools.runtime.host_runner import expose_values

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
    names = [o.name for o in model.graph.output]
    logits_of = _softmax_logits(model)
    sess = ort.InferenceSession(expose_values(model, sorted(set(logits_of.values()))).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for name_ in names:
        ref = want[name_]
        if name_ in logits_of:  # a softmax: as well determined as its logits are
            allowed = softmax_allowed_error(want[logits_of[name_]], ref)
            assert float(np.abs(got[name_] - ref).max()) <= allowed, name_
            assert got[name_].min() >= 0 and got[name_].max() <= 1 + 1e-6, name_
            continue
        scale = max(float(np.abs(ref).max()), 1e-30)
        np.testing.assert_allclose(got[name_], ref, rtol=1e-4, atol=1e-5 * scale)


def _softmax_logits(model) -> dict[str, str]:
    """Graph outputs computed by a Softmax (through pure data movement) -> the Softmax's input."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Softmax":
            found[out.name] = node.input[0]
    return found
