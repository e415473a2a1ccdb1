"""Shared helpers for the profiler tests: compiled samples (cached) and recorded profiles."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.runtime import random_inputs

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
# name -> shapes to bind (the transformer has a symbolic batch)
SAMPLE_SHAPES = {"mlp": {}, "cnn": {}, "transformer": {"input_ids": (2, 16)}, "lstm": {},
                 "detector_head": {}, "int8_qdq": {}}


@functools.lru_cache(maxsize=None)
def compiled(name: str, precision: str = "fp32", batch: int | None = None):
    shapes = dict(SAMPLE_SHAPES.get(name, {}))
    if batch is not None:
        shapes = {"input_ids": (batch, 16)}
    return compile_model(SAMPLES / f"{name}.onnx", CompileOptions(precision=precision, shapes=shapes)).program


def feeds(program):
    return random_inputs(program, 0)


def host_fallback_model(path: Path) -> Path:
    """x[batch, 64] -> MatMul -> Sin (no device kernel: runs on the host) -> Relu."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Sin", ["h"], ["c"], name="sin"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "hostdemo",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, path)
    return path


def add_model(path: Path, n: int = 4096, graph_name: str = "main_graph") -> Path:
    """x[n, n] + y[n, n] in f32, fixed shapes (no batch dimension); the graph has a generic name."""
    vis = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"], name="add")], graph_name, vis,
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [n, n])])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def conv_model(path: Path, channels: int = 64, size: int = 56, seed: int = 0) -> Path:
    """One 3x3 conv, `channels` -> `channels`, pad 1, on a 1 x channels x size x size input."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])], [w])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def matmul_model(path: Path, m: int = 512, k: int = 512, n: int = 512, seed: int = 0) -> Path:
    """x[m, k] @ w[k, n] with a constant weight."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
