"""The kernel registry: `@kernel("OpType", ...)` registers a kernel function in KERNELS. It lives in
the library (not in the kernels package) so kernel modules do not import the package that imports
them: the import graph has no circle."""
from __future__ import annotations

from collections.abc import Callable

from ...context import LoweringContext
from ...graph import Node

Kernel = Callable[[LoweringContext, Node], None]
KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    """Register the decorated function as the kernel of `op_types`."""
    def register(fn: Kernel) -> Kernel:
        for op in op_types:
            KERNELS[op] = fn
        return fn
    return register
