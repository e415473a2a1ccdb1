"""Work arrays that executors reuse instead of allocating a temporary on every instruction.

A machine runs one instruction at a time, and an executor writes all of a work array before it
reads it back, so the executors built on one `Memory` can share them. Each use names a role (the
operand it holds) so that one executor never gets the same array for two operands. An array is a
view of a per-role byte buffer; a buffer that is too small is replaced by a larger one (executors
built earlier keep the old one), so the working set stays a few buffers that stay in cache.
"""
from __future__ import annotations

import weakref

import numpy as np

_BUFFERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> {role: uint8 buffer}
_ALIGN = 64  # bytes: a cache line


def work_array(owner: object, role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array of `shape` and `dtype` for `role`, shared with every other executor of
    `owner` (their Memory) that uses the same role. Its contents are garbage until written."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    pool = _BUFFERS.get(owner)
    if pool is None:
        pool = _BUFFERS[owner] = {}
    buf = pool.get(role)
    if buf is None or buf.size < nbytes:
        size = max(nbytes, 2 * (buf.size if buf is not None else 0))
        raw = np.empty(size + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        buf = pool[role] = raw[start:start + size]
    return buf[:nbytes].view(dtype).reshape(shape)
