"""LSTM on the emulated XPU against ONNX Runtime: directions, optional inputs and outputs, layout 1,
clip, several hidden/input tiles and time chunks, and the support rule's host fallbacks."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from device_util import assert_matches_ort, device_run, ort_run
from onnx import TensorProto, helper, numpy_helper

from xputools.compiler.driver import compile_model
from xputools.compiler.support import placement
from xputools.runtime import read_npz

ROOT = Path(__file__).resolve().parents[2]


def _lstm(seq, batch, inputs, hidden, direction="forward", bias=True, initial=False, layout=0,
          outputs=("Y", "Y_h", "Y_c"), weights=None, **attrs):
    """(model, feeds): one LSTM node with constant W/R/B; initial_h/initial_c are graph inputs."""
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(zlib.crc32(repr((seq, batch, inputs, hidden, direction, initial)).encode()))
    if weights is None:
        weights = {"W": rng.uniform(-0.5, 0.5, (dirs, 4 * hidden, inputs)).astype(np.float32),
                   "R": rng.uniform(-0.5, 0.5, (dirs, 4 * hidden, hidden)).astype(np.float32)}
        if bias:
            weights["B"] = rng.uniform(-0.5, 0.5, (dirs, 8 * hidden)).astype(np.float32)
    x_shape = (batch, seq, inputs) if layout else (seq, batch, inputs)
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    ins = ["x", "W", "R", "B" if "B" in weights else "", "L" if "L" in weights else ""]
    if initial:
        state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
        feeds["h0"] = rng.standard_normal(state).astype(np.float32)
        feeds["c0"] = rng.standard_normal(state).astype(np.float32)
        ins += ["h0", "c0"]
    if "P" in weights:
        ins += [""] * (7 - len(ins)) + ["P"]
    node = helper.make_node("LSTM", ins, list(outputs), name="lstm", hidden_size=hidden, direction=direction,
                            layout=layout, **attrs)
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()]
    g = helper.make_graph([node], "lstm", inputs,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o],
                          [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model), feeds, weights


CASES = [
    dict(seq=5, batch=2, inputs=3, hidden=4),
    dict(seq=5, batch=2, inputs=3, hidden=4, direction="reverse"),
    dict(seq=6, batch=3, inputs=7, hidden=8, direction="bidirectional", initial=True),
    dict(seq=4, batch=1, inputs=5, hidden=6, bias=False, initial=True, direction="reverse"),
    dict(seq=7, batch=2, inputs=5, hidden=6, clip=0.5, initial=True),
    dict(seq=3, batch=1, inputs=130, hidden=140, direction="bidirectional"),  # two input and hidden tiles
    dict(seq=5, batch=2, inputs=3, hidden=4, outputs=("", "Y_h", "")),
    dict(seq=5, batch=2, inputs=3, hidden=4, outputs=("Y", "", "Y_c"), direction="bidirectional"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_lstm_matches_onnxruntime(case):
    model, feeds, _ = _lstm(**case)
    assert_matches_ort(model, feeds)


def test_long_sequences_run_in_time_chunks_and_large_batches_in_tiles():
    # 300 steps x 3 = 900 columns: two chunks of unequal length walked in opposite directions
    model, feeds, _ = _lstm(300, 3, 4, 5, direction="bidirectional", initial=True)
    assert_matches_ort(model, feeds)
    model, feeds, _ = _lstm(2, 130, 4, 5, initial=True)  # batch beyond 128: two independent tiles
    assert_matches_ort(model, feeds)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_first_layout(direction):
    model, feeds, weights = _lstm(4, 2, 5, 6, direction=direction, initial=True, layout=1)
    got, prog, _ = device_run(model, feeds)
    assert not prog.host_ops
    # onnxruntime has no layout=1 LSTM: compare with the same LSTM in layout 0, transposed
    ref_model, _, _ = _lstm(4, 2, 5, 6, direction=direction, initial=True, weights=weights)
    ref_feeds = {k: v.transpose(1, 0, 2) for k, v in feeds.items()}
    want = ort_run(ref_model, ref_feeds)
    np.testing.assert_allclose(got["Y"], want["Y"].transpose(2, 0, 1, 3), rtol=1e-4, atol=1e-5)
    for name in ("Y_h", "Y_c"):
        np.testing.assert_allclose(got[name], want[name].transpose(1, 0, 2), rtol=1e-4, atol=1e-5)


def test_full_length_sequence_lens_runs_on_the_device():
    _, _, weights = _lstm(5, 3, 4, 6)
    model, feeds, _ = _lstm(5, 3, 4, 6, weights=dict(weights, L=np.full(3, 5, np.int32)))
    assert_matches_ort(model, feeds)


def test_lstm_sample_fp32_and_bf16():
    model = onnx.load(ROOT / "samples/lstm.onnx")
    feeds = read_npz(ROOT / "samples/lstm.inputs.npz")
    _, prog = assert_matches_ort(model, feeds)
    steps = [i for i in prog.instrs if i.op == "activate" and i.attrs.get("func") == "sigmoid"]
    assert len(steps) == 8  # one sigmoid over the four gates per time step
    got, prog, _ = device_run(model, feeds, "bf16")
    want = ort_run(model, feeds)["logits"]
    cos = float(got["logits"].ravel() @ want.ravel() / np.linalg.norm(got["logits"]) / np.linalg.norm(want))
    assert cos >= 0.999
    lstm_matmuls = [i for i in prog.instrs if i.op == "matmul" and prog.origins[i.dbg].name == "lstm"]
    # weights and h in bf16; the input projection (with its bias) is added in f32 by an identity
    assert {i.operands["stat"].dtype for i in lstm_matmuls if i.operands["mov"].dtype != "f32"} == {"bf16"}


def _host_reason(model):
    graph = compile_model(model).graph
    node = next(n for n in graph.nodes if n.op_type == "LSTM")
    return placement(node, graph)


def test_what_the_device_cannot_run_falls_back_to_the_host():
    _, _, weights = _lstm(4, 3, 3, 4)
    cases = [
        (dict(weights=dict(weights, L=np.array([4, 2, 4], np.int32))), "shorter"),
        (dict(weights=dict(weights, P=np.ones((1, 12), np.float32))), "peepholes"),
        (dict(weights=weights, activations=["Sigmoid", "Relu", "Tanh"]), "activations"),
        (dict(weights=weights, input_forget=1), "input_forget"),
    ]
    for kwargs, reason in cases:
        model, feeds, _ = _lstm(4, 3, 3, 4, **kwargs)
        where, why = _host_reason(model)
        assert where == "host" and reason in why, (reason, why)
        if reason in ("shorter", "peepholes", "activations"):  # onnxruntime computes these
            assert_matches_ort(model, feeds, on_device=False)
