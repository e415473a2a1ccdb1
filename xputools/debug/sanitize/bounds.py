"""The bounds check, done on the program text before it runs: every access pattern must lie inside
its memory (partitions, bytes per partition, HBM size) and an HBM pattern that touches a declared
tensor (input, output, constant, scratch) must stay inside that one tensor.

HBM that no declared tensor covers (the compiler's values between nodes) is not checked against a
tensor. Data-dependent faults (a gather index out of range) surface when the run faults.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from device_model.arch import Arch
from device_model.isa import AP
from device_model.program import Program, Tensor


@dataclass(frozen=True)
class OutOfBounds:
    engine: str
    index: int
    operand: str
    ap: AP
    kind: str  # "memory" or "tensor"
    why: str
    tensors: tuple[str, ...] = ()


def memory_problem(ap: AP, arch: Arch) -> str | None:
    """Why `ap` leaves its memory on `arch`, or None."""
    first, end = ap.byte_extent()
    if ap.space == "hbm":
        if end > arch.hbm_bytes:
            return f"reaches HBM byte {end - 1:#x}; the device has {arch.hbm_bytes:#x} bytes"
        return None
    parts = arch.partitions if ap.space == "sbuf" else arch.raw["psum"]["partitions"]
    row = arch.sbuf_bytes if ap.space == "sbuf" else arch.psum_bytes
    if ap.pstart + ap.pcount > parts:
        return f"partitions {ap.pstart}..{ap.pstart + ap.pcount - 1} exceed the {parts} of {ap.space}"
    if end > row:
        return f"reaches byte {end - 1:#x} of a {ap.space} partition of {row:#x} bytes"
    return None


class TensorMap:
    """The program's declared HBM tensors by address."""

    def __init__(self, tensors: list[Tensor]):
        self._tensors = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
        self._starts = [t.offset for t in self._tensors]

    def touched(self, first: int, end: int) -> list[Tensor]:
        i = max(bisect.bisect_right(self._starts, first) - 1, 0)
        out = []
        while i < len(self._tensors) and self._tensors[i].offset < end:
            t = self._tensors[i]
            if t.offset + t.nbytes > first:
                out.append(t)
            i += 1
        return out

    def containing(self, first: int, end: int) -> Tensor | None:
        for t in self.touched(first, end):
            if t.offset <= first and end <= t.offset + t.nbytes:
                return t
        return None


def tensor_problem(ap: AP, tensors: TensorMap) -> tuple[str, tuple[str, ...]] | None:
    """Why an HBM pattern leaves the declared tensor it touches, or None."""
    first, end = ap.byte_extent()
    touched = tensors.touched(first, end)
    if not touched or tensors.containing(first, end) is not None:
        return None
    names = tuple(t.name for t in touched)
    spans = ", ".join(f"{t.name} {t.offset:#x}..{t.offset + t.nbytes - 1:#x}" for t in touched)
    return f"bytes {first:#x}..{end - 1:#x} are not inside one declared tensor (touches {spans})", names


def check_program(program: Program, arch: Arch) -> list[OutOfBounds]:
    """Every out-of-bounds operand of `program`, in program order."""
    tensors = TensorMap(program.tensors)
    counts: dict[str, int] = {}
    found = []
    for ins in program.instrs:
        index = counts.get(ins.engine, 0)
        counts[ins.engine] = index + 1
        for name, ap in ins.operands.items():
            why = memory_problem(ap, arch)
            if why:
                found.append(OutOfBounds(ins.engine, index, name, ap, "memory", why))
                continue
            if ap.space == "hbm":
                problem = tensor_problem(ap, tensors)
                if problem:
                    found.append(OutOfBounds(ins.engine, index, name, ap, "tensor", *problem))
    return found
