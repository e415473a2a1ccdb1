"""`sweep`: batch binding rules, latency/throughput per batch, the sweet spot and the plot."""
from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from prof_helpers import SAMPLES

from xputools.errors import UserError
from xputools.profile.cli import prof
from xputools.profile.sweep import SweepPoint, batch_axes, batch_shapes, parse_batches, sweet_spot


def run(*args):
    result = CliRunner().invoke(prof, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _model(*inputs):
    vis = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs]
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0][0]], ["y"])], "g", vis,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph)


def test_batch_binding_rules():
    m = _model(("x", ["batch", 16]), ("mask", [16]))
    assert batch_axes(m) == {"x": 0}
    assert batch_shapes(m, 8) == {"x": (8, 16)}          # fixed-shape inputs are left alone
    seq_first = _model(("x", [10, "n", 4]))
    assert batch_shapes(seq_first, 3) == {"x": (10, 3, 4)}  # the first symbolic dim, wherever it is
    two = _model(("x", ["batch", "seq"]))
    with pytest.raises(UserError, match=r"--shape x=1xN"):
        batch_shapes(two, 2)
    assert batch_shapes(two, 2, {"x": (1, 128)}) == {"x": (2, 128)}
    fixed = onnx.load(SAMPLES / "cnn.onnx")
    with pytest.raises(UserError, match="fixed batch"):
        batch_shapes(fixed, 2)
    assert parse_batches("8, 1,2,2") == [1, 2, 8]
    for bad in ("", "0", "1,x", "-1"):
        with pytest.raises(UserError):
            parse_batches(bad)


def test_sweet_spot_is_the_best_throughput_within_the_slo():
    pts = [SweepPoint(b, 0, lat, tp, 0, 0.0, 0.0) for b, lat, tp in
           [(1, 0.1, 10.0), (2, 0.15, 13.0), (4, 0.3, 13.5), (8, 0.6, 13.0)]]
    assert sweet_spot(pts, None).batch == 4
    assert sweet_spot(pts, 0.2).batch == 2
    assert [p.meets_slo for p in pts] == [True, True, False, False]
    assert sweet_spot(pts, 0.05) is None


def test_sweep_transformer(tmp_path):
    plot = tmp_path / "sweep.png"
    batches = [16, *range(1, 16)]  # every size 1..16: ragged ones (3, 7, 15) must not be slower than the next
    code, out, err = run("sweep", SAMPLES / "transformer.onnx", "--batch", ",".join(map(str, batches)), "-o", plot,
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["schema"] == "xpu-prof-sweep" and report["version"] == 1
    pts = report["points"]
    assert [p["batch"] for p in pts] == list(range(1, 17))
    latencies = [p["latency_ms"] for p in pts]
    assert latencies == sorted(latencies)                 # latency does not decrease with batch
    for p in pts:
        assert p["throughput"] == pytest.approx(p["batch"] / (p["latency_ms"] / 1e3))
    assert report["sweet_spot"] == max(pts, key=lambda p: p["throughput"])["batch"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an SLO between batch 1 and 2 leaves batch 1 as the sweet spot
    slo = (latencies[0] + latencies[1]) / 2
    code, out, _ = run("sweep", SAMPLES / "transformer.onnx", "--batch", "1,2", "--latency-slo", slo,
                       "--no-plot")
    assert code == 0 and "<- sweet spot" in out.splitlines()[2] and "over SLO" in out.splitlines()[3]
    code, _, err = run("sweep", SAMPLES / "transformer.onnx", "--batch", "1", "-o", plot)
    assert code == 2 and "--force" in err
