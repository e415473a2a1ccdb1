"""A compiled program's outputs in the dtypes the ONNX model declares (the device stores bool as u8)."""
from __future__ import annotations

import json

import numpy as np

from device_model.dtypes import np_dtype
from device_model.program import Program

ONNX_DTYPES_KEY = "onnx_dtypes"  # Program.meta key: JSON object {output name: numpy dtype name}


def onnx_dtypes_meta(outputs) -> dict[str, str]:
    """The Program.meta entry recording each graph output's (name, numpy dtype) ONNX dtype."""
    return {ONNX_DTYPES_KEY: json.dumps({v.name: np.dtype(v.dtype).name for v in outputs})}


def onnx_output_dtype(program: Program, name: str) -> np.dtype:
    """The ONNX dtype of the graph output `name` (the device dtype for hand-written programs)."""
    try:
        dtype = np.dtype(json.loads(program.meta.get(ONNX_DTYPES_KEY, "{}"))[name])
    except (ValueError, TypeError, KeyError, RecursionError):  # absent or not ours: the device's dtype
        dtype = None
    return dtype if dtype is not None and dtype.kind in "biuf" else np_dtype(program.tensor(name).dtype)


def onnx_outputs(program: Program, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Device outputs converted to their ONNX dtypes (bool comes back from u8)."""
    return {k: v.astype(onnx_output_dtype(program, k), copy=False) for k, v in outputs.items()}
