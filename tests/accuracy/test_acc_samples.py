"""Every sample model compares in bf16 and int8 without error."""
from __future__ import annotations

import pytest
from acc_models import SAMPLES

from xputools.accuracy import compare
from xputools.compiler.context import CompileOptions
from xputools.runtime import read_npz

SHAPES = {"transformer": {"input_ids": (2, 16)}}


def _options(name: str, precision: str) -> CompileOptions:
    calib = None
    if precision == "int8" and name != "int8_qdq":
        path = SAMPLES / f"{name}.calib.npz"
        one = read_npz(SAMPLES / f"{name}.inputs.npz")
        calib = read_npz(path) if path.exists() else {k: v[None] for k, v in one.items()}
    return CompileOptions(precision=precision, shapes=SHAPES.get(name, {}), calibration=calib)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "detector_head", "int8_qdq", "lstm", "transformer"])
def test_sample_compares(name, precision):
    doc = compare(SAMPLES / f"{name}.onnx", _options(name, precision), [read_npz(SAMPLES / f"{name}.inputs.npz")],
                  recover_top=0)
    assert doc["errors"] == []
    assert doc["outputs"] and all(o["accumulated"]["cosine"] > 0.5 for o in doc["outputs"])
    compared = [r for r in doc["tensors"] if r["accumulated"] is not None]
    assert compared and all(r["local"] is not None for r in compared)
    assert len(doc["tensors"]) == len(compared) + len(doc["not_compared"])
