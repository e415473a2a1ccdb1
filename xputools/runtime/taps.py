"""Reading (and, for teacher forcing, writing) ONNX tensors' values in device memory through the
program's taps.

Why writing at the tap point is sound (device_model/machine.py): an instruction's effects apply when
it completes, and observers' `on_complete` runs right after that, before the scheduler issues anything
else. A consumer of a value waits on a semaphore signalled by the value's writer(s), and it reads its
sources only when it completes, at a later cycle. So a value overwritten in `on_complete` of the tap's
instruction is what every consumer reads. (The compiler makes the tap point the last writer of the
value, or a barrier after all of them; tests/accuracy checks on the samples that no consumer reads a
tapped region before its tap point.)
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from device_model.dtypes import np_dtype
from device_model.machine import Machine
from device_model.program import Tap

# on_tap(tap, device_value) -> replacement value or None (keep the device's)
TapCallback = Callable[[Tap, np.ndarray], "np.ndarray | None"]


class TapHook:
    """Observer that calls `on_tap(tap, value)` right after the instruction that makes each tap's
    value valid, with the value read out of device memory; if the callback returns an array, it is
    written back in place of the device's value before any consumer can read it."""

    sees_only_memory = True  # (device_model.events.Observer): a run with taps can replay the schedule

    def __init__(self, machine: Machine, taps: list[Tap], on_tap: TapCallback, names: set[str] | None = None):
        self.machine = machine
        self.on_tap = on_tap
        self._due: dict[tuple[str, int], list[Tap]] = {}
        for tap in taps:
            if tap.pieces and (names is None or tap.name in names):
                self._due.setdefault((tap.after_engine, tap.after_index), []).append(tap)

    def on_complete(self, ev) -> None:
        for tap in self._due.get((ev.engine, ev.index), ()):
            replacement = self.on_tap(tap, read_tap(self.machine, tap))
            if replacement is not None:
                write_tap(self.machine, tap, replacement)


class TapRecorder(TapHook):
    """Observer that copies each tap's value out of device memory right after the instruction
    that makes it valid, so later reuse of the buffer does not matter."""

    def __init__(self, machine: Machine, taps: list[Tap], names: set[str] | None = None):
        self.values: dict[str, np.ndarray] = {}
        super().__init__(machine, taps, self._keep, names)

    def _keep(self, tap: Tap, value: np.ndarray) -> None:
        self.values[tap.name] = value


def _is_whole(tap: Tap) -> bool:
    """One piece that holds the whole tensor contiguously, in order (what the compiler emits)."""
    if len(tap.pieces) != 1:
        return False
    piece = tap.pieces[0]
    size = int(np.prod(tap.shape)) if tap.shape else 1
    return (piece.offset == 0 and piece.strides == (1,) and piece.ap.shape == (size,)
            and piece.ap.dtype == tap.dtype)


def _piece_index(piece) -> np.ndarray:
    """Logical flat element index of every element of `piece.ap`, in the AP's element order."""
    index = np.full(piece.ap.shape, piece.offset, dtype=np.int64)
    for axis, stride in enumerate(piece.strides):
        shape = [1] * len(piece.ap.shape)
        shape[axis] = piece.ap.shape[axis]
        index = index + np.arange(piece.ap.shape[axis], dtype=np.int64).reshape(shape) * stride
    return index.reshape(-1)


def read_tap(machine: Machine, tap: Tap) -> np.ndarray:
    """A tap's logical value (in its logical dtype and shape) from current device memory."""
    if _is_whole(tap):
        return machine.memory.view(tap.pieces[0].ap).reshape(tap.shape).copy()
    size = int(np.prod(tap.shape)) if tap.shape else 1
    wide = np.int64 if np_dtype(tap.dtype).kind in "iub" else np.float64
    flat = np.zeros(size, dtype=wide)
    for piece in tap.pieces:
        flat[_piece_index(piece)] = machine.memory.view(piece.ap).astype(wide).reshape(-1)
    return flat.astype(np_dtype(tap.dtype)).reshape(tap.shape)


def write_tap(machine: Machine, tap: Tap, value: np.ndarray) -> None:
    """The inverse of `read_tap`: store a logical value (cast to each piece's device dtype) where
    the tap says the tensor lives."""
    value = np.asarray(value)
    size = int(np.prod(tap.shape)) if tap.shape else 1
    if value.size != size:
        raise ValueError(f"tap {tap.name}: value has {value.size} elements, the tensor {size}")
    flat = value.reshape(-1)
    for piece in tap.pieces:
        view = machine.memory.view(piece.ap)
        part = flat if _is_whole(tap) else flat[_piece_index(piece)]
        view[...] = part.astype(view.dtype, copy=False).reshape(view.shape)
