"""Graph passes: numerics against onnxruntime on the original model, and what fusion records."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from device_util import softmax_allowed_error
from model_builders import F32, const, make_model, ort_run, rand
from onnx import helper

from xputools.compiler.errors import CompileError
from xputools.compiler.expand import graph_to_onnx
from xputools.compiler.frontend import import_model, load_model
from xputools.compiler.host import run_graph_reference
from xputools.compiler.passes import PASSES, run_passes

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _compile(model, shapes=None, disable=()):
    graph = import_model(model, shapes)
    return graph, run_passes(graph, {"disable": set(disable)})


def _check_same_as_ort(model, graph, feeds, rtol=1e-5, atol=1e-5):
    want = ort_run(model, feeds)
    got = run_graph_reference(graph, feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)
    # The graph converts back to plain ONNX (fusions expanded) and runs in onnxruntime too.
    back = ort_run(graph_to_onnx(graph), feeds)
    for name, value in want.items():
        np.testing.assert_allclose(back[name], value, rtol=rtol, atol=atol, err_msg=f"to_onnx {name}")


def _bn_inits(rng, prefix, c):
    return [const(f"{prefix}_g", rng.random(c).astype(np.float32) + 0.5), const(f"{prefix}_b", rand(rng, c)),
            const(f"{prefix}_m", rand(rng, c)), const(f"{prefix}_v", rng.random(c).astype(np.float32) + 0.1)]


def _bn(x, y, prefix, name="bn"):
    params = [f"{prefix}_{p}" for p in "gbmv"]
    return helper.make_node("BatchNormalization", [x, *params], [y], name=name, epsilon=1e-3)


# ---- BatchNorm folding -------------------------------------------------------------------------------
def test_conv_batchnorm_fold_matches_ort():
    rng = np.random.default_rng(8996)
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["y"], name="conv", pads=[1, 1, 1, 1], group=2),
             _bn("y", "z", "bn")]
    inits = [const("w", rand(rng, 6, 2, 3, 3)), const("cb", rand(rng, 6))] + _bn_inits(rng, "bn", 6)
    model = make_model(nodes, [("x", F32, [2, 4, 5, 5])], [("z", F32, None)], inits)
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["Conv"]
    conv = graph.nodes[0]
    assert conv.origin == ["conv", "bn"] and conv.fused == ["y"] and conv.outputs == ["z"]
    assert graph.values["y"].shape == (2, 6, 5, 5)  # kept for taps...
    assert graph.producer("y") is None  # ...but no longer computed
    _check_same_as_ort(model, graph, {"x": rand(rng, 2, 4, 5, 5)})


def test_conv_transpose_grouped_batchnorm_fold_matches_ort():
    rng = np.random.default_rng(3392)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", strides=[2, 2], group=2),
             _bn("y", "z", "bn")]
    inits = [const("w", rand(rng, 4, 3, 2, 2))] + _bn_inits(rng, "bn", 6)
    model = make_model(nodes, [("x", F32, [1, 4, 3, 3])], [("z", F32, None)], inits)
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["ConvTranspose"] and len(graph.nodes[0].inputs) == 3
    _check_same_as_ort(model, graph, {"x": rand(rng, 1, 4, 3, 3)})


@pytest.mark.parametrize("trans_b,with_c", [(0, False), (1, True)])
def test_gemm_batchnorm_fold_matches_ort(trans_b, with_c):
    rng = np.random.default_rng(8034)
    w = rand(rng, 5, 8) if trans_b else rand(rng, 8, 5)
    ins = ["x", "w", "c"] if with_c else ["x", "w"]
    nodes = [helper.make_node("Gemm", ins, ["y"], name="gemm", transB=trans_b, alpha=0.7, beta=1.3),
             _bn("y", "z", "bn")]
    inits = [const("w", w), const("c", rand(rng, 5))] + _bn_inits(rng, "bn", 5)
    model = make_model(nodes, [("x", F32, [3, 8])], [("z", F32, None)], inits)
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["Gemm"] and graph.nodes[0].attrs["beta"] == 1.0
    _check_same_as_ort(model, graph, {"x": rand(rng, 3, 8)})


def test_matmul_batchnorm_fold_gives_a_fused_bias():
    rng = np.random.default_rng(3013)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), _bn("y", "z", "bn")]
    inits = [const("w", rand(rng, 8, 6))] + _bn_inits(rng, "bn", 6)
    model = make_model(nodes, [("x", F32, [4, 8])], [("z", F32, None)], inits)
    _, graph = _compile(model)
    mm = graph.nodes[0]
    assert [n.op_type for n in graph.nodes] == ["MatMul"] and mm.attrs["fused_bias"] == mm.inputs[2]
    assert graph.values[mm.inputs[2]].shape == (6,)
    _check_same_as_ort(model, graph, {"x": rand(rng, 4, 8)})


def test_batchnorm_stays_when_it_cannot_fold():
    rng = np.random.default_rng(5490)
    # BN on a graph input, and BN whose input another node also reads.
    nodes = [_bn("x", "a", "bn1", name="bn_alone"),
             helper.make_node("Conv", ["a", "w"], ["y"], name="conv"),
             _bn("y", "z", "bn2", name="bn_shared"),
             helper.make_node("Add", ["z", "y"], ["out"], name="add")]
    inits = [const("w", rand(rng, 3, 3, 1, 1))] + _bn_inits(rng, "bn1", 3) + _bn_inits(rng, "bn2", 3)
    model = make_model(nodes, [("x", F32, [1, 3, 4, 4])], [("out", F32, None)], inits)
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["BatchNormalization", "Conv", "BatchNormalization", "Add"]
    _check_same_as_ort(model, graph, {"x": rand(rng, 1, 3, 4, 4)})


# ---- bias and activation fusion ----------------------------------------------------------------------
def _mm_bias_act(rng, act_node, bias_shape=(6,), act_inits=()):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm_out"], name="mm"),
             helper.make_node("Add", ["bias", "mm_out"], ["add_out"], name="add"), act_node]
    inits = [const("w", rand(rng, 8, 6)), const("bias", rand(rng, *bias_shape))] + list(act_inits)
    return make_model(nodes, [("x", F32, [2, 3, 8])], [("y", F32, None)], inits)


def test_bias_and_relu_fuse_into_matmul_and_are_recorded():
    rng = np.random.default_rng(3887)
    model = _mm_bias_act(rng, helper.make_node("Relu", ["add_out"], ["y"], name="relu"))
    original, graph = _compile(model)
    assert len(original.nodes) == 3  # passes work on a copy
    (mm,) = graph.nodes
    assert mm.op_type == "MatMul" and mm.outputs == ["y"]
    assert mm.attrs["fused_activation"] == {"name": "Relu"}
    assert mm.attrs["fused_bias"] == mm.inputs[2]
    assert mm.origin == ["mm", "add", "relu"]
    assert mm.fused == ["mm_out", "add_out"]
    _check_same_as_ort(model, graph, {"x": rand(rng, 2, 3, 8)})


def test_fusion_can_be_disabled_by_name():
    rng = np.random.default_rng(9792)
    model = _mm_bias_act(rng, helper.make_node("Relu", ["add_out"], ["y"], name="relu"))
    _, no_act = _compile(model, disable={"fuse_activation"})
    assert [n.op_type for n in no_act.nodes] == ["MatMul", "Relu"] and "fused_bias" in no_act.nodes[0].attrs
    _, nothing = _compile(model, disable={"fuse_activation", "fuse_bias"})
    assert [n.op_type for n in nothing.nodes] == ["MatMul", "Add", "Relu"]
    feeds = {"x": rand(rng, 2, 3, 8)}
    _check_same_as_ort(model, no_act, feeds)
    _check_same_as_ort(model, nothing, feeds)


def test_unknown_pass_name_is_an_error():
    rng = np.random.default_rng(5120)
    expected = "unknown pass name.*fuse_everything.*passes are: " + ", ".join(PASSES)
    with pytest.raises(CompileError, match=expected):
        run_passes(import_model(_mm_bias_act(rng, helper.make_node("Relu", ["add_out"], ["y"]))),
                   {"disable": {"fuse_everything"}})


@pytest.mark.parametrize("act,attrs,inits,spec", [
    ("LeakyRelu", {"alpha": 0.2}, [], {"name": "LeakyRelu", "alpha": pytest.approx(0.2)}),
    ("Clip", {}, [const("lo", np.array(0, np.float32)), const("hi", np.array(6, np.float32))],
     {"name": "Clip", "min": 0.0, "max": 6.0}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, [], {"name": "HardSigmoid", "alpha": pytest.approx(0.3),
                                                      "beta": pytest.approx(0.4)}),
    ("HardSwish", {}, [], {"name": "HardSwish"}),
    ("Sigmoid", {}, [], {"name": "Sigmoid"}),
    ("Tanh", {}, [], {"name": "Tanh"}),
])
def test_activation_specs(act, attrs, inits, spec):
    rng = np.random.default_rng(7000)
    ins = ["add_out", "lo", "hi"] if act == "Clip" else ["add_out"]
    model = _mm_bias_act(rng, helper.make_node(act, ins, ["y"], name="act", **attrs), act_inits=inits)
    _, graph = _compile(model)
    assert len(graph.nodes) == 1 and graph.nodes[0].attrs["fused_activation"] == spec
    _check_same_as_ort(model, graph, {"x": 3 * rand(rng, 2, 3, 8)})


def test_conv_bias_add_broadcast_per_channel_fuses_and_non_channel_add_does_not():
    rng = np.random.default_rng(7720)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "per_channel"], ["a"], name="add_ch"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
             helper.make_node("Add", ["c2", "per_pixel"], ["y"], name="add_px")]
    inits = [const("w", rand(rng, 4, 3, 3, 3)), const("per_channel", rand(rng, 1, 4, 1, 1)),
             const("w2", rand(rng, 4, 4, 1, 1)), const("per_pixel", rand(rng, 1, 1, 4, 4))]
    model = make_model(nodes, [("x", F32, [1, 3, 6, 6])], [("y", F32, None)], inits)
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["Conv", "Conv", "Add"]
    conv = graph.nodes[0]
    assert conv.origin == ["conv", "add_ch", "relu"] and graph.values[conv.inputs[2]].shape == (4,)
    _check_same_as_ort(model, graph, {"x": rand(rng, 1, 3, 6, 6)})


def test_sub_of_constant_fuses_as_negative_bias():
    rng = np.random.default_rng(277)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="gemm", transB=1),
             helper.make_node("Sub", ["g", "b"], ["y"], name="sub")]
    model = make_model(nodes, [("x", F32, [2, 4])], [("y", F32, None)],
                       [const("w", rand(rng, 3, 4)), const("b", rand(rng, 3))])
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["Gemm"]
    _check_same_as_ort(model, graph, {"x": rand(rng, 2, 4)})


def test_no_fusion_when_the_intermediate_has_other_readers_or_is_an_output():
    rng = np.random.default_rng(6513)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Add", ["m", "r"], ["y"], name="add"),
             helper.make_node("MatMul", ["x", "w"], ["m2"], name="mm2"),
             helper.make_node("Sigmoid", ["m2"], ["s"], name="sig")]
    model = make_model(nodes, [("x", F32, [2, 8])], [("y", F32, None), ("m2", F32, None), ("s", F32, None)],
                       [const("w", rand(rng, 8, 8))])
    _, graph = _compile(model)
    assert [n.op_type for n in graph.nodes] == ["MatMul", "Relu", "Add", "MatMul", "Sigmoid"]
    assert not any(n.fused for n in graph.nodes)


# ---- GELU --------------------------------------------------------------------------------------------
def _gelu_model(rng, variant: str, opset: int = 17):
    pre = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm")]
    if variant == "div":  # (x * (1 + erf(x / sqrt2))) * 0.5, as torch exports nn.GELU
        body = [helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
                helper.make_node("Erf", ["d"], ["e"], name="erf"),
                helper.make_node("Add", ["e", "one"], ["p"], name="add1"),
                helper.make_node("Mul", ["h", "p"], ["m"], name="mul_x"),
                helper.make_node("Mul", ["m", "half"], ["y"], name="mul_half")]
    elif variant == "half_first":  # (0.5 * x) * (1 + erf(x * (1/sqrt2)))
        body = [helper.make_node("Mul", ["h", "inv_sqrt2"], ["d"], name="scale"),
                helper.make_node("Erf", ["d"], ["e"], name="erf"),
                helper.make_node("Add", ["one", "e"], ["p"], name="add1"),
                helper.make_node("Mul", ["half", "h"], ["hx"], name="half_x"),
                helper.make_node("Mul", ["hx", "p"], ["y"], name="mul")]
    else:  # ((1 + erf(x / sqrt2)) * 0.5) * x
        body = [helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
                helper.make_node("Erf", ["d"], ["e"], name="erf"),
                helper.make_node("Add", ["e", "one"], ["p"], name="add1"),
                helper.make_node("Mul", ["p", "half"], ["m"], name="mul_half"),
                helper.make_node("Mul", ["m", "h"], ["y"], name="mul_x")]
    inits = [const("w", rand(rng, 8, 8)), const("sqrt2", np.array(math.sqrt(2), np.float32)),
             const("inv_sqrt2", np.array(1 / math.sqrt(2), np.float32)),
             const("one", np.array(1, np.float32)),
             const("half", np.array(0.5, np.float32))]
    return make_model(pre + body, [("x", F32, [3, 8])], [("y", F32, None)], inits, opset=opset)


@pytest.mark.parametrize("variant", ["div", "half_first", "half_last"])
@pytest.mark.parametrize("opset", [17, 20])
def test_erf_gelu_pattern_becomes_gelu_fused_into_matmul(variant, opset):
    rng = np.random.default_rng(129)
    model = _gelu_model(rng, variant, opset)
    _, graph = _compile(model)
    (mm,) = graph.nodes
    assert mm.attrs["fused_activation"] == {"name": "Gelu", "approximate": "none"}
    assert mm.origin[0] == "mm" and len(mm.origin) == 6
    assert set(mm.fused) == {"h", "d", "e", "p", "m" if variant != "half_first" else "hx"}
    _check_same_as_ort(model, graph, {"x": rand(rng, 3, 8)})


def test_standalone_gelu_in_an_old_opset_runs_on_the_host():
    rng = np.random.default_rng(9227)
    model = _gelu_model(rng, "div")
    _, graph = _compile(model, disable={"fuse_activation"})
    assert [n.op_type for n in graph.nodes] == ["MatMul", "Gelu"]
    _check_same_as_ort(model, graph, {"x": rand(rng, 3, 8)})


# ---- no-ops ------------------------------------------------------------------------------------------
def test_noops_are_removed_and_outputs_keep_their_names():
    rng = np.random.default_rng(8084)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i1"], name="id1"),
             helper.make_node("Dropout", ["i1"], ["d"], name="drop"),
             helper.make_node("Cast", ["d"], ["c"], name="cast", to=F32),
             helper.make_node("Reshape", ["c", "same"], ["rs"], name="reshape"),
             helper.make_node("Neg", ["rs"], ["n"], name="neg"),
             helper.make_node("Identity", ["n"], ["y"], name="id_out"),
             helper.make_node("Identity", ["x"], ["x_copy"], name="id_in")]
    model = make_model(nodes, [("x", F32, [2, 3])], [("y", F32, None), ("x_copy", F32, None)],
                       [const("same", np.array([2, 3], np.int64))])
    _, graph = _compile(model)
    kept = [(n.op_type, n.outputs) for n in graph.nodes]
    assert kept == [("Relu", ["r"]), ("Neg", ["y"]), ("Identity", ["x_copy"])]
    assert graph.nodes[1].inputs == ["r"]
    assert graph.aliases == {"i1": "r", "d": "r", "c": "r", "rs": "r", "n": "y"}
    _check_same_as_ort(model, graph, {"x": rand(rng, 2, 3)})


# ---- host evaluation where onnx.reference is wrong --------------------------------------------------
def test_host_matches_ort_for_ops_the_onnx_reference_gets_wrong():
    rng = np.random.default_rng(2590)
    # Standalone BN at opset 13 (the reference uses batch statistics), LRN, grouped ConvTranspose.
    nodes = [_bn("x", "b", "bn"),
             helper.make_node("LRN", ["b"], ["l"], name="lrn", size=3, alpha=0.01, beta=0.75, bias=1.0),
             helper.make_node("ConvTranspose", ["l", "w"], ["y"], name="deconv", group=2)]
    inits = [const("w", rand(rng, 4, 1, 2, 2))] + _bn_inits(rng, "bn", 4)
    model = make_model(nodes, [("x", F32, [2, 4, 3, 3])], [("y", F32, None)], inits, opset=13)
    _, graph = _compile(model, disable={"decompose"})  # LRN itself on the host (decompose would rewrite it)
    assert [n.op_type for n in graph.nodes] == ["BatchNormalization", "LRN", "ConvTranspose"]
    _check_same_as_ort(model, graph, {"x": 5 * rand(rng, 2, 4, 3, 3)})
    _check_same_as_ort(model, _compile(model)[1], {"x": 5 * rand(rng, 2, 4, 3, 3)})


# ---- committed samples -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.onnx")), ids=lambda p: p.stem)
def test_sample_models_after_passes_match_ort(path):
    inputs_file = path.with_name(f"{path.stem}.inputs.npz")
    if not inputs_file.exists():
        pytest.skip(f"no sample inputs for {path.name}")
    with np.load(inputs_file, allow_pickle=False) as archive:
        feeds = {k: archive[k] for k in archive.files}
    model = load_model(path)
    graph = run_passes(import_model(model, {k: v.shape for k, v in feeds.items()}))
    assert len(graph.nodes) <= len(model.graph.node)
    want = ort_run(model, feeds)
    got = run_graph_reference(graph, feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


# ---- peer suite: the light_* models shipped in the onnx wheel ------------------------------------------
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


# Ops that only move or relabel elements: a tensor they produce is as well conditioned as their input.
_MOVES = {"Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Transpose"}


def _softmax_source(graph, name):
    """The Softmax node `name` comes from through pure data movement, or None."""
    node = graph.producer(name)
    while node is not None and node.op_type in _MOVES:
        node = graph.producer(node.inputs[0])
    return node if node is not None and node.op_type == "Softmax" else None


def _allowed_error(graph, got, want, name, rtol=1e-4):
    """The error a correct float32 evaluation may make on `name`, whatever the summation order:
    `rtol` of its scale, or for a softmax what its logits' error allows (device_util)."""
    softmax = _softmax_source(graph, name)
    if softmax is None:
        return rtol * (float(np.abs(want[name]).max()) or 1.0)
    return softmax_allowed_error(got[softmax.inputs[0]], want[name], rtol)


@pytest.mark.parametrize("name", ["squeezenet", "bvlc_alexnet", "shufflenet"])
def test_onnx_light_models_match_ort_on_every_remaining_tensor(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    path = LIGHT / f"light_{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path.name} is not in this onnx wheel")
    model = load_model(path)
    graph = run_passes(import_model(model))
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}
    original = {o for n in model.graph.node for o in n.output}
    names = [o for n in graph.nodes for o in n.outputs if o in original]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    want = ort_run(exposed, feeds)
    got = run_graph_reference(graph, feeds)
    for n in names:
        assert float(np.abs(got[n] - want[n]).max()) <= _allowed_error(graph, got, want, n), n
        if _softmax_source(graph, n) is not None:  # whatever the conditioning, still a distribution
            assert got[n].min() >= 0 and got[n].max() <= 1 and abs(float(got[n].sum()) - 1) < 1e-3, n


def test_softmax_tolerance_is_tight_for_well_conditioned_logits():
    # The widened tolerance above must not hide a real softmax error on ordinary logits.
    rng = np.random.default_rng(4242)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["l"], name="mm"),
             helper.make_node("Softmax", ["l"], ["y"], name="sm", axis=-1)]
    model = make_model(nodes, [("x", F32, [2, 8])], [("y", F32, None)], [const("w", rand(rng, 8, 10))])
    graph = run_passes(import_model(model))
    feeds = {"x": rand(rng, 2, 8)}
    want = ort_run(model, feeds)
    got = run_graph_reference(graph, feeds)
    allowed = _allowed_error(graph, got, want, "y")
    assert allowed < 1e-2 * float(want["y"].max())
    assert float(np.abs(got["y"] - want["y"]).max()) <= allowed
