"""Reading ONNX tensors' values out of device memory through the program's taps."""
from __future__ import annotations

import numpy as np

from device_model.dtypes import np_dtype
from device_model.machine import Machine
from device_model.program import Tap


class TapRecorder:
    """Observer that copies each tap's value out of device memory right after the instruction
    that makes it valid, so later reuse of the buffer does not matter."""

    def __init__(self, machine: Machine, taps: list[Tap], names: set[str] | None = None):
        self.machine = machine
        self.values: dict[str, np.ndarray] = {}
        self._due: dict[tuple[str, int], list[Tap]] = {}
        for tap in taps:
            if tap.pieces and (names is None or tap.name in names):
                self._due.setdefault((tap.after_engine, tap.after_index), []).append(tap)

    def on_complete(self, ev) -> None:
        for tap in self._due.get((ev.engine, ev.index), ()):
            self.values[tap.name] = read_tap(self.machine, tap)


def read_tap(machine: Machine, tap: Tap) -> np.ndarray:
    """A tap's logical value (in its logical dtype and shape) from current device memory."""
    size = int(np.prod(tap.shape)) if tap.shape else 1
    wide = np.int64 if np_dtype(tap.dtype).kind in "iub" else np.float64
    flat = np.zeros(size, dtype=wide)
    for piece in tap.pieces:
        values = machine.memory.view(piece.ap).astype(wide)
        index = np.full(piece.ap.shape, piece.offset, dtype=np.int64)
        for axis, stride in enumerate(piece.strides):
            shape = [1] * len(piece.ap.shape)
            shape[axis] = piece.ap.shape[axis]
            index = index + np.arange(piece.ap.shape[axis], dtype=np.int64).reshape(shape) * stride
        flat[index.reshape(-1)] = values.reshape(-1)
    return flat.astype(np_dtype(tap.dtype)).reshape(tap.shape)
