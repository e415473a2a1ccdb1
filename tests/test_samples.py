"""Committed sample models: valid, runnable, sane outputs, and what samples/build_samples.py builds."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _load_builder():
    # samples/ is not a package; register the module so its dataclasses can resolve their module
    name = "_samples_build_samples"
    spec = importlib.util.spec_from_file_location(name, SAMPLES / "build_samples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bs = _load_builder()
MODEL_NAMES = list(bs.MODELS)


def _session(model: str | Path | bytes) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _inputs(name: str) -> dict[str, np.ndarray]:
    with np.load(SAMPLES / f"{name}.inputs.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_expected_models_are_registered():
    assert MODEL_NAMES == ["mlp", "cnn", "transformer", "lstm", "detector_head", "int8_qdq"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_model_is_valid_and_runs_on_its_sample_inputs(name):
    model = onnx.load(SAMPLES / f"{name}.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert len({node.name for node in model.graph.node}) == len(model.graph.node), "node names must be unique"

    inputs = _inputs(name)
    graph_inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == set(graph_inputs)
    for key, value in inputs.items():
        dims = graph_inputs[key].type.tensor_type.shape.dim
        assert value.ndim == len(dims)
        assert all(d.dim_param or d.dim_value == n for d, n in zip(dims, value.shape))

    for output in _session(SAMPLES / f"{name}.onnx").run(None, inputs):
        assert np.isfinite(output).all()
        assert np.ptp(output) > 1e-3, "output is (nearly) constant"


def test_committed_models_are_small():
    total = sum((SAMPLES / f"{name}.onnx").stat().st_size for name in MODEL_NAMES)
    assert total < 5 * 1024 * 1024
    assert (SAMPLES / "cnn.onnx").stat().st_size < 1024 * 1024


def test_build_is_deterministic_and_matches_committed_files(tmp_path):
    first = bs.build_all(tmp_path / "a")
    second = bs.build_all(tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    expected = {f"{n}.onnx" for n in MODEL_NAMES} | {f"{n}.inputs.npz" for n in MODEL_NAMES}
    assert expected <= {p.name for p in first}
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two builds"
        committed = SAMPLES / a.name
        assert committed.exists(), f"{a.name} is not committed; run python samples/build_samples.py"
        assert committed.read_bytes() == a.read_bytes(), f"samples/{a.name} is stale; rebuild it"


def test_cli_writes_into_out_dir(tmp_path, capsys):
    assert bs.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "mlp.onnx") in printed
    assert (tmp_path / "cnn.calib.npz").exists()


def test_calibration_sets_have_a_leading_sample_axis():
    with np.load(SAMPLES / "cnn.calib.npz", allow_pickle=False) as calib:
        assert calib.files == ["x"]
        assert calib["x"].shape == (8, 1, 3, 32, 32) and calib["x"].dtype == np.float32
        outputs = [_session(SAMPLES / "cnn.onnx").run(None, {"x": sample})[0] for sample in calib["x"]]
    assert not np.allclose(outputs[0], outputs[1])


def test_npz_writer_round_trips_without_pickle_and_rejects_objects(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.full((1,), 1.5, np.float32)}
    bs.save_npz(tmp_path / "t.npz", arrays)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as loaded:
        assert loaded.files == ["a", "b"]
        np.testing.assert_array_equal(loaded["a"], arrays["a"])
        assert loaded["b"].dtype == np.float32
    with pytest.raises(ValueError, match="dtype object"):
        bs.save_npz(tmp_path / "bad.npz", {"o": np.array([None, 1], dtype=object)})


def test_transformer_batch_is_symbolic_and_rows_are_independent():
    model = onnx.load(SAMPLES / "transformer.onnx")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = _session(SAMPLES / "transformer.onnx")
    ids = _inputs("transformer")["input_ids"]
    assert ids.shape == (2, 16)
    both = session.run(None, {"input_ids": ids})[0]
    assert both.shape == (2, 16, 64)
    first_alone = session.run(None, {"input_ids": ids[:1]})[0]
    np.testing.assert_allclose(first_alone[0], both[0], rtol=1e-5, atol=1e-5)
    tripled = session.run(None, {"input_ids": np.concatenate([ids, ids[:1]])})[0]
    assert tripled.shape == (3, 16, 64)
    # attention mixes positions: changing one token changes the other positions' outputs
    changed = ids[:1].copy()
    changed[0, 0] = (changed[0, 0] + 1) % 100
    moved = session.run(None, {"input_ids": changed})[0]
    assert np.abs(moved[0, 1:] - first_alone[0, 1:]).max() > 1e-4


def test_transformer_uses_the_spelled_out_encoder_ops():
    ops = [node.op_type for node in onnx.load(SAMPLES / "transformer.onnx").graph.node]
    for op, count in {"Erf": 2, "LayerNormalization": 5, "Softmax": 2, "Gather": 1}.items():
        assert ops.count(op) == count, op


def test_int8_qdq_model_is_quantized_and_close_to_its_float_model():
    model = onnx.load(SAMPLES / "int8_qdq.onnx")
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and len(dequantize) > len(quantize)
    for node in quantize:
        assert initializers[node.input[2]].dtype == np.int8
    conv_weight_names = ("conv1.weight_quantized", "conv2.weight_quantized")
    conv_weights = [n for n in dequantize if n.input[0] in conv_weight_names]
    assert len(conv_weights) == 2
    for node in conv_weights:
        assert initializers[node.input[0]].dtype == np.int8
        assert initializers[node.input[1]].shape == (initializers[node.input[0]].shape[0],)  # per channel
        assert {a.name: a.i for a in node.attribute}.get("axis") == 0
        assert np.abs(initializers[node.input[0]]).max() == 127  # scale derived from the weights' range

    x = _inputs("int8_qdq")["x"]
    quantized = _session(SAMPLES / "int8_qdq.onnx").run(None, {"x": x})[0]
    reference = bs.int8_float_reference(x)
    error = np.abs(quantized - reference).max() / np.abs(reference).max()
    assert 0 < error < 0.05


def test_bert_mini_builder_shares_the_encoder_and_runs(tmp_path):
    path = bs.build_bert_mini(tmp_path / "bert.onnx", layers=1, hidden=32, heads=2, seq=8)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert sum(node.op_type == "Erf" for node in model.graph.node) == 1
    with np.load(tmp_path / "bert.inputs.npz", allow_pickle=False) as archive:
        ids = archive["input_ids"]
    assert ids.shape == (1, 8) and ids.max() < 1000
    (hidden,) = _session(path).run(None, {"input_ids": np.concatenate([ids, ids])})
    assert hidden.shape == (2, 8, 32)
    assert np.isfinite(hidden).all() and np.ptp(hidden) > 1e-3
    np.testing.assert_allclose(hidden[0], hidden[1], rtol=1e-5, atol=1e-5)


def test_encoder_rejects_heads_that_do_not_divide_hidden(tmp_path):
    with pytest.raises(ValueError, match="multiple of heads"):
        bs.build_bert_mini(tmp_path / "bad.onnx", layers=1, hidden=30, heads=4, seq=8)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize(("builder", "kwargs"), [
    ("build_yolo", {"size": 64, "width": 8, "classes": 3}),
    ("build_crnn", {"height": 32, "width": 32, "hidden": 16, "classes": 5}),
    ("build_resnet", {"size": 32, "blocks": (1, 1), "width": 8}),
])
def test_bench_model_builders_compile_on_the_device_and_match_onnxruntime(tmp_path, builder, kwargs):
    """The benchmark model classes (small versions): valid ONNX, every node on the device, fp32 matches ORT."""
    from xputools.compiler.context import CompileOptions
    from xputools.compiler.driver import compile_model
    from xputools.runtime import read_npz, run_program

    path = getattr(bs, builder)(tmp_path / "model.onnx", **kwargs)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    feeds = read_npz(tmp_path / "model.inputs.npz")
    program = compile_model(path, CompileOptions(precision="fp32")).program
    assert not program.host_ops
    got = run_program(program, feeds).outputs
    want = _session(path).run(None, feeds)
    for (name, value), ref in zip(got.items(), want):
        assert value.shape == ref.shape, name
        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
