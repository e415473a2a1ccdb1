"""Taps: every tensor computed on the device can be read back in ONNX layout without changing the
program; tensors that fusion removed are listed as fused into their consumer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xputools.compiler.context import CompileOptions
from xputools.compiler.driver import compile_model
from xputools.compiler.host import run_graph_reference
from xputools.runtime import read_npz, run_program

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,shapes", [("cnn", {}), ("transformer", {"input_ids": (2, 16)}), ("mlp", {})])
def test_taps_read_every_computed_tensor_in_onnx_layout(name, shapes):
    feeds = read_npz(ROOT / f"samples/{name}.inputs.npz")
    compiled = compile_model(ROOT / f"samples/{name}.onnx", CompileOptions(shapes=shapes))
    program, graph = compiled.program, compiled.graph
    plain = run_program(program, feeds)
    tapped = run_program(program, feeds, taps=True)
    for k in plain.outputs:  # reading taps changes nothing
        assert plain.outputs[k].tobytes() == tapped.outputs[k].tobytes()
    assert plain.result.cycles == tapped.result.cycles
    reference = run_graph_reference(graph, feeds)
    computed = [o for n in graph.nodes for o in n.outputs if o]
    assert computed and all(o in tapped.taps for o in computed)
    for o in computed:
        ref = np.asarray(reference[o])
        got = tapped.taps[o]
        assert got.shape == ref.shape, o
        scale = max(float(np.abs(ref.astype(np.float64)).max()), 1e-30) if ref.size else 1.0
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-4,
                                   atol=1e-5 * scale, err_msg=o)


def test_fused_tensors_are_listed_with_their_consumer():
    compiled = compile_model(ROOT / "samples/cnn.onnx")
    fused = {t.name: t.fused_into for t in compiled.program.taps if t.fused_into}
    assert fused, "the CNN's conv+BN+ReLU chains fuse"
    by_node = {n.name: n for n in compiled.graph.nodes}
    for name, consumer in fused.items():
        assert any(name in n.fused and consumer in n.outputs for n in by_node.values()), (name, consumer)
