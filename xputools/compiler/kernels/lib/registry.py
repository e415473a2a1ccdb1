"""The kernel registry: `@kernel("OpType", ...)` records a kernel module's functions by ONNX op type.
It lives apart from the package so kernel modules can register without importing the package that
imports them (no import circle)."""
from __future__ import annotations

from collections.abc import Callable

KERNELS: dict[str, Callable] = {}


def kernel(*op_types: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as the kernel of `op_types`."""
    def register(fn: Callable) -> Callable:
        for op in op_types:
            KERNELS[op] = fn
        return fn
    return register
