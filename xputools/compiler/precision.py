"""The precision vocabulary: the names users give (`--precision`, `--keep`, a profile's precision)
and the device dtypes they mean, and the one rule for what a node computes in."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable

# `--precision` names -> the device dtype of matmul/conv operands (and whether activations use tables)
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "fp8": "fp8e4", "int8": "i8"}
# every spelling `--keep NODE=DTYPE` accepts -> device dtype
DTYPE_ALIASES = {"fp32": "f32", "f32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
                 "fp16": "f16", "f16": "f16", "float16": "f16", "fp8": "fp8e4", "fp8e4": "fp8e4",
                 "fp8e4m3": "fp8e4", "fp8e5": "fp8e5", "fp8e5m2": "fp8e5", "int8": "i8", "i8": "i8"}


def keep_matches(pattern: str, node) -> bool:
    """Whether a `--keep` pattern (a glob) names `node`: its name, an ONNX node it stands for, or
    its op type."""
    names = [node.name] + list(getattr(node, "origin", None) or [])
    return any(fnmatch.fnmatchcase(n, pattern) for n in names) or fnmatch.fnmatchcase(node.op_type, pattern)


def node_compute_dtype(node, precision: str, keep: Iterable[tuple[str, str]] = ()) -> str:
    """The device dtype `node`'s matmul/conv operands are computed in: the first `keep` override
    (pattern, dtype alias) that matches it, else the global `precision`."""
    for pattern, dtype in keep:
        if keep_matches(pattern, node):
            return DTYPE_ALIASES[dtype]
    return PRECISIONS[precision]


def unmatched_keep_patterns(keep: Iterable[tuple[str, str]], nodes) -> list[str]:
    """The `--keep` patterns that name none of `nodes` (a typo, or a node the passes removed)."""
    nodes = list(nodes)
    return [pattern for pattern, _ in keep if not any(keep_matches(pattern, n) for n in nodes)]
