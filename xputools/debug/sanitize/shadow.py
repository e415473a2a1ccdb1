"""The uninit check's shadow memory: one byte per device byte, all ones once anything wrote it.

The shadow buffers have the shapes of the machine's HBM/SBUF/PSUM buffers, and an access pattern
is seen through the same strided view as the data, with an unsigned element type of the operand's
width: marking a write is one assignment, checking a read one comparison, both in numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_model.dtypes import itemsize
from device_model.isa import AP
from device_model.memory import Memory
from device_model.program import Program

INITIAL_KINDS = ("input", "const")  # HBM tensors that hold values before the first instruction


@dataclass(frozen=True)
class Unwritten:
    """The never-written bytes one read touched: bounding partitions and bytes, and how many."""

    space: str
    partitions: tuple[int, int]  # first, last (0, 0 for HBM)
    bytes: tuple[int, int]  # first, last byte inside a partition (or HBM)
    count: int  # elements with at least one unwritten byte

    def describe(self) -> str:
        b = f"bytes {self.bytes[0]:#x}..{self.bytes[1]:#x}"
        if self.space == "hbm":
            return f"hbm {b}"
        p0, p1 = self.partitions
        return f"{self.space} partitions {p0}..{p1} {b}"


class InitShadow:
    def __init__(self, memory: Memory, program: Program):
        self._spaces = {"hbm": np.zeros_like(memory.hbm), "sbuf": np.zeros_like(memory.sbuf),
                        "psum": np.zeros_like(memory.psum)}
        for t in program.tensors:
            if t.kind in INITIAL_KINDS:
                self._spaces["hbm"][t.offset:t.offset + t.nbytes] = 0xFF
        self._views: dict[AP, np.ndarray] = {}

    def _view(self, ap: AP) -> np.ndarray | None:
        view = self._views.get(ap)
        if view is None:
            view = self._views[ap] = _strided(self._spaces[ap.space], ap)
        return view

    def write(self, ap: AP) -> None:
        view = self._view(ap)
        if view is not None:
            view[...] = _ones(view)

    def read(self, ap: AP) -> Unwritten | None:
        """The bytes of `ap` no one has written, or None. They are then marked written, so each
        never-written byte is reported at its first read only."""
        view = self._view(ap)
        if view is None:
            return None
        ones = _ones(view)
        bad = view != ones
        if not bad.any():
            return None
        found = _locate(self._spaces[ap.space], view, bad, ap)
        view[...] = ones
        return found


def _ones(view: np.ndarray):
    return np.iinfo(view.dtype).max


def _strided(buf: np.ndarray, ap: AP) -> np.ndarray | None:
    """The elements of `ap` over `buf`, as unsigned integers of the element width (None when the
    pattern leaves the buffer: the bounds check reports that)."""
    size = itemsize(ap.dtype)
    first, end = ap.byte_extent()
    free_shape = tuple(c for _, c in ap.dims)
    free_strides = tuple(s * size for s, _ in ap.dims)
    dt = np.dtype(f"u{size}")
    if ap.space == "hbm":
        if end > buf.size:
            return None
        return np.ndarray(free_shape, dtype=dt, buffer=buf, offset=ap.offset, strides=free_strides)
    parts, row = buf.shape
    if ap.pstart + ap.pcount > parts or end > row:
        return None
    return np.ndarray((ap.pcount,) + free_shape, dtype=dt, buffer=buf, offset=ap.pstart * row + ap.offset,
                      strides=(row,) + free_strides)


def _locate(buf: np.ndarray, view: np.ndarray, bad: np.ndarray, ap: AP) -> Unwritten:
    """Bounding box of the unwritten elements, from their byte addresses in the buffer."""
    base = buf.__array_interface__["data"][0]
    addr = view.__array_interface__["data"][0] - base
    offsets = np.zeros(view.shape, dtype=np.int64) + addr
    for axis, stride in enumerate(view.strides):
        shape = [1] * view.ndim
        shape[axis] = view.shape[axis]
        offsets = offsets + np.arange(view.shape[axis], dtype=np.int64).reshape(shape) * stride
    hit = offsets[bad]
    size = view.dtype.itemsize
    if ap.space == "hbm":
        return Unwritten("hbm", (0, 0), (int(hit.min()), int(hit.max()) + size - 1), int(hit.size))
    row = buf.shape[1]
    parts, inner = hit // row, hit % row
    return Unwritten(ap.space, (int(parts.min()), int(parts.max())),
                     (int(inner.min()), int(inner.max()) + size - 1), int(hit.size))
