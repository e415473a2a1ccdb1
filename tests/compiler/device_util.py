"""Helpers for compiler tests: build a one-node model, run it on the emulated XPU and on ONNX
Runtime, compare."""
from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.outputs import onnx_output_dtype
from xputools.runtime import run_program


def one_node_model(op_type, inputs: dict[str, np.ndarray], outputs: list[str], initializers: dict | None = None,
                   opset: int = 17, **attrs) -> onnx.ModelProto:
    """A model with one node. `inputs` gives graph inputs (by example array), `initializers` constants."""
    initializers = initializers or {}
    node = helper.make_node(op_type, list(inputs) + list(initializers), outputs, name=f"{op_type.lower()}0", **attrs)
    g = helper.make_graph(
        [node], "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outputs],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def device_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], precision: str = "fp32", **options):
    """Compile for the XPU and run on the emulator. Returns (outputs, program, run result)."""
    compiled = compile_model(model, CompileOptions(precision=precision, **options))
    prog = compiled.program
    out = run_program(prog, feeds)
    outputs = {k: v.astype(onnx_output_dtype(prog, k)) for k, v in out.outputs.items()}
    return outputs, prog, out.result


def assert_matches_ort(model, feeds, rtol=1e-4, atol=1e-5, precision="fp32", on_device=True, **options):
    """Device outputs equal ORT's within rtol, and atol relative to each output's scale. With
    `on_device`, also check that no instruction ran on the host."""
    got, prog, _ = device_run(model, feeds, precision, **options)
    want = ort_run(model, feeds)
    for name, ref in want.items():
        scale = max(float(np.max(np.abs(ref.astype(np.float64)))) if ref.size else 1.0, 1e-30)
        np.testing.assert_allclose(got[name].astype(np.float64), ref.astype(np.float64), rtol=rtol,
                                   atol=atol * max(scale, 1.0), err_msg=name)
    if on_device:
        assert not prog.host_ops, f"ran on the host: {[h.op_type for h in prog.host_ops]}"
    return got, prog


def cosine(a, b) -> float:
    """Cosine similarity of two arrays, in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def seeded_rand(*shape, scale=1.0) -> np.ndarray:
    """Standard-normal float32 data seeded by its shape, so each test case is reproducible."""
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def softmax_allowed_error(logits, probs, rtol: float = 1e-4) -> float:
    """The error a correct float32 evaluation may make on softmax(logits) = `probs`: logits allowed
    an absolute error d = rtol*max|logits| move each probability p by up to p*(exp(2d) - 1). Random
    weights drive the onnx light models' logits to ~1e10, where one ULP is ~1e3 and the result is
    decided by summation order (BLAS kernel, onnxruntime version): there only a distribution is left
    to check, and the bound says so (1.0)."""
    import math

    scale = float(np.abs(probs).max()) or 1.0
    d = rtol * (float(np.abs(logits).max()) or 1.0)
    return rtol * scale + min(1.0, scale * math.expm1(min(2 * d, 700.0)))
