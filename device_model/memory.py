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


@dataclass(frozen=True)
class OnchipRegions:
    """Disjoint rectangles of SBUF/PSUM: (space, first partition, end partition, first byte, end byte)."""

    rects: tuple[tuple[str, int, int, int, int], ...]

    @property
    def nbytes(self) -> int:
        return sum((p1 - p0) * (b1 - b0) for _, p0, p1, b0, b1 in self.rects)


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
        self._sbuf_rows = _padded_rows(arch.partitions, sbuf_row)
        self._psum_rows = _padded_rows(arch.raw["psum"]["partitions"], psum_row)
        self.sbuf = self._sbuf_rows[:, :sbuf_row]
        self.psum = self._psum_rows[:, :psum_row]
        self._views: dict[AP, np.ndarray] = {}  # buffers never move, so a view is built once
        # On-chip bytes are written only through views (and restore): clear_onchip zeroes the
        # bounding boxes of the views handed out, not all of SBUF (a 12 MiB fill per run).
        self._new_boxes: list[tuple[str, int, int, int, int]] = []
        self._boxes: set[tuple[str, int, int, int, int]] = set()
        self._viewed = OnchipRegions(())
        self._onchip_unknown = False  # after a restore anything may be non-zero: clear it all
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
        rows = self._sbuf_rows if ap.space == "sbuf" else self._psum_rows
        row = rows.shape[1]
        first, end = ap.byte_extent()
        self._new_boxes.append((ap.space, ap.pstart, ap.pstart + ap.pcount, first, end))
        return np.ndarray((ap.pcount,) + free_shape, dtype=dt, buffer=rows,
                          offset=ap.pstart * row + ap.offset, strides=(row,) + free_strides)

    def clear_onchip(self, only: OnchipRegions | None = None) -> None:
        """Zero SBUF and PSUM in place (views stay valid), as a new Memory has them: only what a
        view reaches can have been written (all of both after a restore). `only`: zero just those
        regions, for a caller that knows no other byte will be read (Machine.rewind)."""
        if self._onchip_unknown:
            self._onchip_unknown = False
            self.sbuf.fill(0)
            self.psum.fill(0)
            if self.tracking:
                self._dirty[1][:] = True
                self._dirty[2][:] = True
            return
        if only is None:
            if self._new_boxes:
                self._boxes.update(self._new_boxes)
                self._new_boxes = []
                self._viewed = self.regions(self._boxes)
            only = self._viewed
        for space, p0, p1, b0, b1 in only.rects:
            (self.sbuf if space == "sbuf" else self.psum)[p0:p1, b0:b1] = 0
            if self.tracking:
                self._dirty[1 if space == "sbuf" else 2][b0 // ONCHIP_PAGE:(b1 - 1) // ONCHIP_PAGE + 1] = True

    def regions(self, boxes) -> OnchipRegions:
        """Boxes (space, first partition, end partition, first byte, end byte) as disjoint
        rectangles of this memory, ready for clear_onchip."""
        return OnchipRegions(tuple((space, *rect) for space, rect in onchip_cover(boxes, {"sbuf": self.sbuf,
                                                                                          "psum": self.psum})))

    def read_before_written(self, accesses) -> list[tuple[str, int, int, int, int]]:
        """The on-chip reads, among `accesses` (per instruction in the order they apply: its
        (kind "r"/"w", operand, AP) tuples, reads first), that touch a byte no earlier write
        wrote: their boxes (space, first partition, end partition, first byte, end byte).
        Everything else a run with this order reads is its own output, so only these bytes
        need to be zero before it. Out-of-bounds patterns are left out (they fault instead)."""
        written = {"sbuf": np.zeros(self.sbuf.shape, bool), "psum": np.zeros(self.psum.shape, bool)}
        first_reads = []
        for instr in accesses:
            for kind, _, ap in instr:
                if ap.space == "hbm" or self.check(ap):
                    continue
                bytes_ = _byte_view(written[ap.space], ap)
                if kind == "w":
                    bytes_[...] = True
                elif not bytes_.all():
                    first, end = ap.byte_extent()
                    first_reads.append((ap.space, ap.pstart, ap.pstart + ap.pcount, first, end))
        return first_reads

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
        self._onchip_unknown = True
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


_ROW_ALIGN = 64  # bytes: a cache line
_ROW_SKEW = 17 * _ROW_ALIGN  # an odd number of cache lines between partitions' sets (see _padded_rows)


def _padded_rows(partitions: int, row_bytes: int) -> np.ndarray:
    """Zeroed [partitions, padded row] bytes whose first `row_bytes` of each row hold one partition.
    Rows are a multiple of 4 KiB apart when unpadded (SBUF 192 KiB, PSUM 16 KiB), so the same byte of
    every partition falls into the same L1/L2 cache sets: an instruction over 128 partitions then
    evicts its own lines. Padding each row by an odd number of cache lines spreads the partitions
    over the sets; each row starts on a cache line (the same alignment for all partitions)."""
    stride = -(-row_bytes // _ROW_ALIGN) * _ROW_ALIGN + _ROW_SKEW
    raw = np.zeros(partitions * stride + _ROW_ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ROW_ALIGN
    return raw[start:start + partitions * stride].reshape(partitions, stride)


def _byte_view(mask: np.ndarray, ap: AP) -> np.ndarray:
    """Every byte of every element of on-chip `ap`, in a [partitions, bytes] array like its memory."""
    size, row = np_dtype(ap.dtype).itemsize, mask.shape[1]
    shape = (ap.pcount,) + tuple(c for _, c in ap.dims) + (size,)
    strides = (row,) + tuple(s * size for s, _ in ap.dims) + (1,)
    return np.ndarray(shape, bool, buffer=mask, offset=ap.pstart * row + ap.offset, strides=strides)


def onchip_cover(boxes, bufs: dict[str, np.ndarray]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Disjoint rectangles (space, (p0, p1, b0, b1)) of partitions x bytes that cover every box
    (space, p0, p1, first byte, end byte), clipped to the buffers. Boxes are grouped by partition
    range, the partition axis is cut where a range starts or ends, and each band gets the merged
    byte intervals of the ranges spanning it; a gap too small to be worth a second fill is filled."""
    by_range: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    for space, p0, p1, b0, b1 in boxes:
        rows, cols = bufs[space].shape
        p1, b1 = min(p1, rows), min(b1, cols)
        if p0 < p1 and b0 < b1:
            by_range.setdefault((space, p0, p1), []).append((b0, b1))
    out = []
    for space in sorted({k[0] for k in by_range}):
        ranges = {(p0, p1): spans for (s, p0, p1), spans in by_range.items() if s == space}
        cuts = sorted({p for r in ranges for p in r})
        bands: list[tuple[int, int, list[tuple[int, int]]]] = []
        for lo, hi in zip(cuts, cuts[1:]):
            spans = [sp for (p0, p1), group in ranges.items() if p0 <= lo and hi <= p1 for sp in group]
            merged = _merge_spans(spans, max(64, 16384 // (hi - lo)))
            if bands and bands[-1][1] == lo and bands[-1][2] == merged:
                bands[-1] = (bands[-1][0], hi, merged)
            elif merged:
                bands.append((lo, hi, merged))
        out += [(space, (lo, hi, b0, b1)) for lo, hi, merged in bands for b0, b1 in merged]
    return out


def _merge_spans(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for b0, b1 in sorted(spans):
        if merged and b0 <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b1))
        else:
            merged.append((b0, b1))
    return merged
