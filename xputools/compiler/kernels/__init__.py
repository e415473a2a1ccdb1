"""Kernels: one function per ONNX op (family) that emits the device instructions for a node.

A kernel is `fn(ctx: LoweringContext, node) -> None`, registered with `@kernel("OpType", ...)`.
It reads its inputs with `ctx.value(name)` (HBM, row-major), allocates its outputs with
`ctx.output(name)` (or `ctx.alias` for pure reshapes) and emits instructions with `ctx.em.emit`.
Synchronisation is automatic (see emitter.py): emit in a correct sequential order and the emitter
adds the semaphores. SBUF/PSUM buffers come from `ctx.em.sbuf.alloc(bytes_per_partition)` /
`ctx.em.psum.alloc(...)`; everything a kernel keeps live at once must fit in half of each memory.
"""
from __future__ import annotations

import importlib
from typing import Callable

KERNELS: dict[str, Callable] = {}
_MODULES = ("elementwise", "movement", "matmul", "conv", "reduce", "normalize", "pool", "resize",
            "lstm", "quant")
_loaded = False


def kernel(*op_types: str):
    def register(fn):
        for op in op_types:
            KERNELS[op] = fn
        return fn
    return register


def kernels() -> dict[str, Callable]:
    """All registered kernels (kernel modules not written yet are simply absent)."""
    global _loaded
    if not _loaded:
        for name in _MODULES:
            try:
                importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
        _loaded = True
    return KERNELS
