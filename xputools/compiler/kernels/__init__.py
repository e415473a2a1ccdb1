"""Kernels: one function per ONNX op (family) that emits the device instructions for a node.

A kernel is `fn(ctx: LoweringContext, node: Node) -> None`, registered with `@kernel("OpType", ...)`
(`lib/registry.py`). It reads its inputs with `ctx.value(name)` (HBM, row-major), allocates its outputs with
`ctx.output(name)` (or `ctx.alias` for pure reshapes) and emits instructions with `ctx.em.emit`.
Synchronisation is automatic (see emitter.py): emit in a correct sequential order and the emitter
adds the semaphores. SBUF/PSUM buffers come from `ctx.em.sbuf.alloc(bytes_per_partition)` /
`ctx.em.psum.alloc(...)`; everything a kernel keeps live at once must fit in half of each memory.

A kernel module holds one op family and imports only `lib/` (the pieces kernels share) and the
compiler's context, emitter and graph, never another kernel module.
"""
from __future__ import annotations

from .lib.registry import KERNELS, Kernel, kernel

__all__ = ["KERNELS", "Kernel", "kernel", "kernels"]

_loaded = False


def kernels() -> dict[str, Kernel]:
    """All registered kernels, by ONNX op type. Every kernel module is imported by name: a module
    that is missing or fails to import is an error, never a silent fallback to the host."""
    global _loaded
    if not _loaded:
        from . import (  # noqa: F401 - importing a kernel module registers its kernels
            conv,
            elementwise,
            lstm,
            matmul,
            movement,
            normalize,
            pool,
            qlinear,
            quant,
            reduce,
            resize,
        )
        _loaded = True
    return KERNELS
