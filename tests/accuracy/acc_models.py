"""Test models where the accuracy answer is known, built with onnx.helper.

- `cancel_chain`: ordinary MatMul+Relu, Concat([h, h]), then the planted MatMul `bad` whose weights
  are [[K + w], [-K]]: its output is h·w, computed from terms K·h that cancel. In bf16, K + w rounds
  to K (w is lost), so `bad` introduces a large error; the ordinary MatMuls after it inherit it.
- `cancel_branches`: two such planted nodes (`bad_a`, `bad_b`) on parallel branches, summed.
- `wide_channel`: for int8 with calibration: `mm1` makes one channel ~100x wider than the rest, so
  `mm2`, which quantizes that activation per tensor, loses the other channels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
K = 64.0


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "acc_test", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def _w(rng, shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _cancel_weight(rng, n: int) -> np.ndarray:
    w = _w(rng, (n, n))
    return np.concatenate([K + w, np.full((n, n), -K, np.float32)], axis=0).astype(np.float32)


def _planted(prefix: str, src: str, rng, n: int, inits: dict) -> list:
    """Concat([src, src]) -> MatMul with cancelling weights (the planted node is named `prefix`)."""
    inits[f"{prefix}.weight"] = _cancel_weight(rng, n)
    return [helper.make_node("Concat", [src, src], [f"{prefix}/concat"], name=f"{prefix}/concat", axis=1),
            helper.make_node("MatMul", [f"{prefix}/concat", f"{prefix}.weight"], [prefix], name=prefix)]


def cancel_chain(seed: int = 0, n: int = 64, rows: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"pre.weight": _w(rng, (n, n)), "post1.weight": _w(rng, (n, n)), "post2.weight": _w(rng, (n, n))}
    nodes = [helper.make_node("MatMul", ["x", "pre.weight"], ["pre"], name="pre"),
             helper.make_node("Relu", ["pre"], ["pre/relu"], name="pre/relu")]
    nodes += _planted("bad", "pre/relu", rng, n, inits)
    nodes += [helper.make_node("MatMul", ["bad", "post1.weight"], ["post1"], name="post1"),
              helper.make_node("Tanh", ["post1"], ["post1/tanh"], name="post1/tanh"),
              helper.make_node("MatMul", ["post1/tanh", "post2.weight"], ["y"], name="post2")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], inits)


def cancel_branches(seed: int = 0, n: int = 64, rows: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"pre.weight": _w(rng, (n, n)), "a.weight": _w(rng, (n, n)), "b.weight": _w(rng, (n, n)),
             "post.weight": _w(rng, (n, n))}
    nodes = [helper.make_node("MatMul", ["x", "pre.weight"], ["pre"], name="pre"),
             helper.make_node("Relu", ["pre"], ["pre/relu"], name="pre/relu")]
    nodes += _planted("bad_a", "pre/relu", rng, n, inits)
    nodes += _planted("bad_b", "pre/relu", rng, n, inits)
    nodes += [helper.make_node("MatMul", ["bad_a", "a.weight"], ["a"], name="a"),
              helper.make_node("MatMul", ["bad_b", "b.weight"], ["b"], name="b"),
              helper.make_node("Add", ["a", "b"], ["sum"], name="sum"),
              helper.make_node("MatMul", ["sum", "post.weight"], ["y"], name="post")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], inits)


def wide_channel(seed: int = 0, n: int = 32, rows: int = 8, wide: int = 5) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = _w(rng, (n, n))
    w1[:, wide] *= 100.0
    w2 = _w(rng, (n, n))
    w2[wide, :] /= 100.0
    inits = {"mm1.weight": w1, "mm2.weight": w2, "mm3.weight": _w(rng, (n, n))}
    nodes = [helper.make_node("MatMul", ["x", "mm1.weight"], ["mm1"], name="mm1"),
             helper.make_node("MatMul", ["mm1", "mm2.weight"], ["mm2"], name="mm2"),
             helper.make_node("Relu", ["mm2"], ["mm2/relu"], name="mm2/relu"),
             helper.make_node("MatMul", ["mm2/relu", "mm3.weight"], ["y"], name="mm3")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], inits)


def inputs_for(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return {vi.name: rng.standard_normal(shape).astype(np.float32)}


def calibration_for(model: onnx.ModelProto, samples: int = 8, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return {vi.name: rng.standard_normal([samples] + shape).astype(np.float32)}


def host_fallback(seed: int = 0, n: int = 32, rows: int = 4) -> onnx.ModelProto:
    """MatMul -> Sin (no device kernel: runs on the host) -> MatMul."""
    rng = np.random.default_rng(seed)
    inits = {"w1": _w(rng, (n, n)), "w2": _w(rng, (n, n))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
             helper.make_node("Sin", ["h"], ["c"], name="sin"),
             helper.make_node("MatMul", ["c", "w2"], ["y"], name="out")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], inits)
