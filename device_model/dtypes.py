"""Device dtype names and their numpy equivalents."""
from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "f16": np.dtype(np.float16),
    "fp8e4": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp8e5": np.dtype(ml_dtypes.float8_e5m2),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "u32": np.dtype(np.uint32),
    "i64": np.dtype(np.int64),
    # storage-only types: HBM can hold them (data movement, host ops); engines do not compute on them
    "f64": np.dtype(np.float64),
    "u16": np.dtype(np.uint16),
    "u64": np.dtype(np.uint64),
    "i4": np.dtype(ml_dtypes.int4),
    "u4": np.dtype(ml_dtypes.uint4),
    "i2": np.dtype(ml_dtypes.int2),
    "u2": np.dtype(ml_dtypes.uint2),
    "fp4e2": np.dtype(ml_dtypes.float4_e2m1fn),
    "fp8e4fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "fp8e5fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
STORAGE_ONLY_DTYPES = ("f64", "u16", "u64", "i4", "u4", "i2", "u2", "fp4e2", "fp8e4fnuz", "fp8e5fnuz")
FLOAT_DTYPES = ("f32", "bf16", "f16", "fp8e4", "fp8e5")
INT_DTYPES = ("i8", "u8", "i16", "i32", "u32", "i64")


def np_dtype(name: str) -> np.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(DTYPES)})") from None


def itemsize(name: str) -> int:
    return np_dtype(name).itemsize


def dtype_name(dt) -> str:
    """The device name of a numpy dtype (bool maps to u8)."""
    dt = np.dtype(dt)
    if dt == np.bool_:
        return "u8"
    for name, d in DTYPES.items():
        if d == dt:
            return name
    raise ValueError(f"dtype {dt} has no device equivalent")
