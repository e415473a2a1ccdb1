"""Device memories (HBM, SBUF, PSUM) as byte arrays, and typed strided views onto them."""
from __future__ import annotations

import numpy as np

from .arch import Arch
from .dtypes import np_dtype
from .errors import XpuError
from .isa import AP


class AccessError(XpuError, RuntimeError):
    """An access pattern that reaches outside its memory."""


class Memory:
    """HBM is sized to what the program reaches (the preset's size is the logical limit);
    SBUF and PSUM are [partitions, bytes_per_partition]."""

    def __init__(self, arch: Arch, hbm_bytes: int, sbuf_row_bytes: int | None = None,
                 psum_row_bytes: int | None = None):
        """Only the bytes a program reaches are backed (`*_row_bytes` per partition, default the
        whole memory): allocating and freeing 24 MiB of SBUF per run cost more than a GEMM."""
        if hbm_bytes > arch.hbm_bytes:
            raise AccessError(f"program needs {hbm_bytes} bytes of HBM, device has {arch.hbm_bytes}")
        self.arch = arch
        sbuf_row = arch.sbuf_bytes if sbuf_row_bytes is None else min(max(sbuf_row_bytes, 1), arch.sbuf_bytes)
        psum_row = arch.psum_bytes if psum_row_bytes is None else min(max(psum_row_bytes, 1), arch.psum_bytes)
        self.hbm = np.zeros(max(hbm_bytes, 1), dtype=np.uint8)
        self.sbuf = np.zeros((arch.partitions, sbuf_row), dtype=np.uint8)
        self.psum = np.zeros((arch.raw["psum"]["partitions"], psum_row), dtype=np.uint8)
        self._views: dict[AP, np.ndarray] = {}  # buffers never move, so a view is built once

    def space(self, name: str) -> np.ndarray:
        return {"hbm": self.hbm, "sbuf": self.sbuf, "psum": self.psum}[name]

    def check(self, ap: AP) -> str | None:
        """Why `ap` is out of bounds, or None."""
        first, end = ap.byte_extent()
        if ap.space == "hbm":
            if end > self.arch.hbm_bytes:
                return f"reaches HBM byte {end - 1}, device HBM has {self.arch.hbm_bytes} bytes"
            if end > self.hbm.size:
                return f"reaches HBM byte {end - 1} beyond the {self.hbm.size} bytes this program maps"
            return None
        buf = self.space(ap.space)
        parts, mapped = buf.shape
        row = self.arch.sbuf_bytes if ap.space == "sbuf" else self.arch.psum_bytes
        if ap.pstart + ap.pcount > parts:
            return (f"partitions {ap.pstart}..{ap.pstart + ap.pcount - 1} exceed the {parts} "
                    f"partitions of {ap.space}")
        if end > row:
            return f"reaches byte {end - 1} of a {ap.space} partition of {row} bytes"
        if end > mapped:
            return f"reaches {ap.space} byte {end - 1} beyond the {mapped} bytes per partition this program maps"
        return None

    def view(self, ap: AP) -> np.ndarray:
        """A writable typed view of the elements `ap` names (no copy)."""
        cached = self._views.get(ap)
        if cached is not None:
            return cached
        cached = self._views[ap] = self._make_view(ap)
        return cached

    def _make_view(self, ap: AP) -> np.ndarray:
        why = self.check(ap)
        if why:
            raise AccessError(f"out of bounds: {ap} {why}")
        dt = np_dtype(ap.dtype)
        size = dt.itemsize
        buf = self.space(ap.space)
        free_shape = tuple(c for _, c in ap.dims)
        free_strides = tuple(s * size for s, _ in ap.dims)
        if ap.space == "hbm":
            return np.ndarray(free_shape, dtype=dt, buffer=buf, offset=ap.offset, strides=free_strides)
        row = buf.shape[1]
        return np.ndarray((ap.pcount,) + free_shape, dtype=dt, buffer=buf,
                          offset=ap.pstart * row + ap.offset, strides=(row,) + free_strides)

    def clear_onchip(self) -> None:
        """Zero SBUF and PSUM in place (views stay valid)."""
        self.sbuf.fill(0)
        self.psum.fill(0)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.hbm.copy(), self.sbuf.copy(), self.psum.copy()

    def restore(self, snap: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        # copy in place: views built on these buffers stay valid
        np.copyto(self.hbm, snap[0])
        np.copyto(self.sbuf, snap[1])
        np.copyto(self.psum, snap[2])
