"""Device memories (HBM, SBUF, PSUM) as byte arrays, and typed strided views onto them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arch import Arch
from .dtypes import np_dtype
from .errors import XpuError
from .isa import AP


class AccessError(XpuError, RuntimeError):
    """An access pattern that reaches outside its memory."""


HBM_PAGE = 64 << 10  # bytes of HBM per snapshot page
ONCHIP_PAGE = 512  # bytes per partition of an SBUF/PSUM page (the page spans every partition)


@dataclass(frozen=True)
class MemorySnapshot:
    """The memories' contents as pages (read-only arrays). Consecutive snapshots share the page
    objects of pages nobody wrote in between, so a snapshot costs only what changed."""

    pages: tuple[tuple[np.ndarray, ...], ...]  # per space (hbm, sbuf, psum)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for space in self.pages for p in space)


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
        # dirty tracking starts with the first snapshot: until then writes cost nothing extra
        self.tracking = False
        self._last: MemorySnapshot | None = None
        self._dirty: tuple[np.ndarray, ...] = ()

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
        if self.tracking:
            self._dirty[1][:] = True
            self._dirty[2][:] = True

    def write_hbm(self, offset: int, data: np.ndarray) -> None:
        """Write raw bytes to HBM (inputs, host ops): the way to write memory from outside an
        instruction, so snapshots see it."""
        self.hbm[offset:offset + data.size] = data
        if self.tracking and data.size:
            self._dirty[0][offset // HBM_PAGE:(offset + data.size - 1) // HBM_PAGE + 1] = True

    def mark_written(self, ap: AP) -> None:
        """Note that `ap`'s bytes are about to change (the machine calls this for every written
        operand while tracking)."""
        first, end = ap.byte_extent()
        if ap.space == "hbm":
            self._dirty[0][first // HBM_PAGE:(end - 1) // HBM_PAGE + 1] = True
        else:
            self._dirty[1 if ap.space == "sbuf" else 2][first // ONCHIP_PAGE:(end - 1) // ONCHIP_PAGE + 1] = True

    # ---- snapshots ------------------------------------------------------------------------
    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.hbm, self.sbuf, self.psum

    @staticmethod
    def _page(buf: np.ndarray, i: int) -> np.ndarray:
        if buf.ndim == 1:
            return buf[i * HBM_PAGE:(i + 1) * HBM_PAGE]
        return buf[:, i * ONCHIP_PAGE:(i + 1) * ONCHIP_PAGE]

    def _page_counts(self) -> tuple[int, int, int]:
        return (-(-self.hbm.size // HBM_PAGE), -(-self.sbuf.shape[1] // ONCHIP_PAGE),
                -(-self.psum.shape[1] // ONCHIP_PAGE))

    def snapshot(self) -> MemorySnapshot:
        """The current contents. The first snapshot copies everything and starts dirty tracking;
        later ones copy only the pages written since the previous snapshot (or restore)."""
        spaces = []
        for k, buf in enumerate(self._buffers()):
            n = self._page_counts()[k]
            if self._last is None:
                pages = [self._frozen_copy(self._page(buf, i)) for i in range(n)]
            else:
                pages = list(self._last.pages[k])
                for i in np.flatnonzero(self._dirty[k]).tolist():
                    pages[i] = self._frozen_copy(self._page(buf, i))
            spaces.append(tuple(pages))
        snap = MemorySnapshot(tuple(spaces))
        self._set_base(snap)
        return snap

    def restore(self, snap: MemorySnapshot) -> None:
        """Back to `snap`: copies in place (views stay valid), only the pages that may differ."""
        for k, buf in enumerate(self._buffers()):
            pages = snap.pages[k]
            if self._last is None:
                changed = range(len(pages))
            else:
                last = self._last.pages[k]
                changed = sorted(set(np.flatnonzero(self._dirty[k]).tolist())
                                 | {i for i in range(len(pages)) if last[i] is not pages[i]})
            for i in changed:
                np.copyto(self._page(buf, i), pages[i])
        self._set_base(snap)

    def _set_base(self, snap: MemorySnapshot) -> None:
        self._last = snap
        self.tracking = True
        self._dirty = tuple(np.zeros(n, dtype=bool) for n in self._page_counts())

    @staticmethod
    def _frozen_copy(page: np.ndarray) -> np.ndarray:
        out = page.copy()
        out.flags.writeable = False
        return out
