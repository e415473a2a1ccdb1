"""The nan check: an instruction that writes NaN or Inf although everything it read (operands and
scalar attributes) was finite: where non-finite values are born, not where they spread.

Reads are checked just before the instruction takes effect (their old values), writes right after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_model.dtypes import FLOAT_DTYPES
from device_model.isa import AP, Instr
from device_model.memory import Memory

_SCALAR_ATTRS = ("scale", "bias", "alpha", "s0", "s1", "value", "base", "step", "pstep")


@dataclass(frozen=True)
class NonFinite:
    nan: int
    inf: int
    first: tuple[int, ...]  # index of the first bad element in the written operand's shape
    operand: str
    ap: AP
    inputs: tuple[tuple[str, str], ...]  # (operand, what it held) for each float input

    def describe(self) -> str:
        what = " and ".join(f"{n} {w}" for n, w in ((self.nan, "NaN"), (self.inf, "Inf")) if n)
        ins = "; ".join(f"{name}: {desc}" for name, desc in self.inputs) or "no tensor inputs"
        return (f"writes {what} into {self.operand} (first at element {list(self.first)}) "
                f"from finite inputs ({ins})")


def finite_attrs(ins: Instr) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for k, v in ins.attrs.items() if k in _SCALAR_ATTRS)


class NanWatch:
    """Feed it each operand before the effects (`read`/`written`) and call `completed` after."""

    def __init__(self, memory: Memory):
        self._memory = memory
        self._reads: list[tuple[str, AP]] = []
        self._writes: list[tuple[str, AP]] = []
        self._all_finite = True

    def before(self, operand: str, ap: AP, write: bool) -> None:
        if write:
            self._writes.append((operand, ap))
            return
        self._reads.append((operand, ap))
        if self._all_finite and ap.dtype in FLOAT_DTYPES:
            values = self._view(ap)
            if values is not None and not np.isfinite(values.astype(np.float32)).all():
                self._all_finite = False

    def completed(self, ins: Instr) -> NonFinite | None:
        reads, writes, all_finite = self._reads, self._writes, self._all_finite
        self._reads, self._writes, self._all_finite = [], [], True
        if not all_finite or not finite_attrs(ins):
            return None
        for operand, ap in writes:
            if ap.dtype not in FLOAT_DTYPES:
                continue
            values = self._view(ap)
            if values is None:
                continue
            wide = values.astype(np.float32)
            bad = ~np.isfinite(wide)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                flat = int(np.ravel_multi_index(first, wide.shape))
                written = [w for _, w in writes]
                return NonFinite(int(np.isnan(wide).sum()), int(np.isinf(wide).sum()), first, operand, ap,
                                 tuple((name, self._describe(r, flat, wide.size, written)) for name, r in reads
                                       if r.dtype in FLOAT_DTYPES))
        return None

    def _view(self, ap: AP) -> np.ndarray | None:
        try:
            return self._memory.view(ap)
        except Exception:  # noqa: BLE001 - out of bounds: the bounds check reports it
            return None

    def _describe(self, ap: AP, flat: int, size: int, written: list[AP]) -> str:
        from device_model.access import overlaps

        if any(overlaps(ap, w) for w in written):
            return "overwritten in place"
        values = self._view(ap)
        if values is None:
            return "unreadable"
        wide = values.astype(np.float32).reshape(-1)
        text = f"range [{float(wide.min()):.6g}, {float(wide.max()):.6g}]"
        if wide.size == size:
            text += f", {float(wide[flat]):.6g} at that element"
        return text
