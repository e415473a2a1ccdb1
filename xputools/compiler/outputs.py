"""A compiled program's outputs in the dtypes the ONNX model declares (the device stores bool as u8)."""
from __future__ import annotations

import numpy as np

from device_model.dtypes import np_dtype
from device_model.program import Program


def onnx_output_dtype(program: Program, name: str) -> np.dtype:
    """The ONNX dtype of the graph output `name` (the device dtype for hand-written programs)."""
    for item in program.meta.get("onnx_dtypes", "").split(","):
        if item.rpartition(":")[0] == name:
            return np.dtype(item.rpartition(":")[2])
    return np_dtype(program.tensor(name).dtype)


def onnx_outputs(program: Program, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Device outputs converted to their ONNX dtypes (bool comes back from u8)."""
    return {k: v.astype(onnx_output_dtype(program, k), copy=False) for k, v in outputs.items()}
