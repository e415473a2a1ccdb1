"""SBUF/PSUM buffers a kernel reuses.

`SlotPool`: a fixed set of buffers allocated once, handed out round-robin. A kernel that takes its
short-lived tiles from a pool allocates a bounded amount however long it runs, so the ring
allocator never comes back over a tile that must live longer (resident weights, an index tile,
partial results); reusing a slot is ordered after its last reader by the emitter's hazard tracking,
so loads of the next tile overlap compute on the current one.

`RingTiles`: fresh tiles straight from the ring allocator, remembering how much was allocated
since each one, for kernels whose tiles vary in size.
"""
from __future__ import annotations

from device_model.dtypes import itemsize
from device_model.isa import AP

from ...context import LoweringContext
from ...emitter import SBUF_BLOCK, RingAllocator
from .ap import sbuf_ap


def padded(nbytes: int, align: int = SBUF_BLOCK) -> int:
    """`nbytes` (at least 1) rounded up to `align`."""
    return -(-max(nbytes, 1) // align) * align


class SlotPool:
    """`count` buffers of `nbytes` per partition, handed out round-robin. Sizes are rounded up to
    the emitter's hazard-tracking block so that two buffers never share a block (which would
    serialise their users). `SlotPool(...)` allocates each buffer on its own; `SlotPool.block(...)`
    takes them as one contiguous allocation."""

    def __init__(self, allocator: RingAllocator, nbytes: int, count: int, contiguous: bool = False):
        self.nbytes = padded(nbytes, SBUF_BLOCK)
        count = max(count, 1)
        if contiguous:
            base = allocator.alloc(count * self.nbytes)
            self.offsets = [base + i * self.nbytes for i in range(count)]
        else:
            self.offsets = [allocator.alloc(self.nbytes) for _ in range(count)]
        self._next = 0

    @classmethod
    def block(cls, ctx: LoweringContext, count: int, nbytes: int) -> SlotPool:
        """`count` SBUF slots of `nbytes` per partition in one allocation."""
        return cls(ctx.em.sbuf, nbytes, count, contiguous=True)

    def take(self) -> int:
        """The byte offset of the next buffer."""
        off = self.offsets[self._next % len(self.offsets)]
        self._next += 1
        return off

    def tile(self, partitions: int, free: int, dtype: str) -> AP:
        """The next buffer as a contiguous [partitions, free] SBUF tile."""
        if free * itemsize(dtype) > self.nbytes:
            raise ValueError(f"a tile of {free * itemsize(dtype)} bytes does not fit a "
                             f"{self.nbytes}-byte slot")
        return sbuf_ap(self.take(), partitions, free, dtype)


class RingTiles:
    """Fresh SBUF tiles from the emitter's ring allocator, remembering how much was allocated since
    each one: a tile kept across steps (a running statistic, a replicated scale vector) must be
    refreshed before the ring can hand its bytes out again."""

    def __init__(self, ctx: LoweringContext, largest: int):
        self.ctx = ctx
        self.ring = ctx.em.sbuf
        self.used = 0
        self.largest = largest  # bounds the bytes a wrap of the ring skips
        self._born: dict[int, int] = {}
        # the main input streams through one queue: tiles arrive one after another at the full
        # fabric rate, so compute starts after the first instead of after all of them
        self.queue = ctx.em.next_dma_queue()

    def nbytes(self, free: int, dtype: str) -> int:
        """Bytes per partition a [*, free] tile of `dtype` takes (whole hazard blocks)."""
        return padded(free * itemsize(dtype))

    def new(self, partitions: int, free: int, dtype: str = "f32") -> AP:
        """A fresh [partitions, free] tile."""
        # whole hazard blocks only: a tile sharing a block with its neighbour would wait for it
        skip = -self.ring.cursor % SBUF_BLOCK
        if skip and self.ring.cursor + skip < self.ring.size:
            self.ring.alloc(skip)
        nbytes = self.nbytes(free, dtype)
        off = self.ring.alloc(nbytes)
        self.used += nbytes + skip
        self.largest = max(self.largest, nbytes)
        self._born[off] = self.used
        return AP("sbuf", off, ((1, max(free, 1)),), dtype, 0, partitions)

    def load(self, src: AP, partitions: int, free: int, dtype: str = "f32") -> AP:
        """A new [partitions, free] tile DMAed from `src` on the input queue."""
        tile = self.new(partitions, free, dtype)
        self.ctx.em.emit(self.queue, "dma_copy", {"dst": tile, "src": src})
        return tile

    def fresh(self, tile: AP, ahead: int) -> bool:
        """True when `tile` survives `ahead` more bytes of allocations: the ring reaches its bytes
        again after the rest of the ring (less what a wrap skips) has been handed out."""
        born = self._born.get(tile.offset)
        if born is None:
            return False
        size = self.nbytes(tile.free_size, tile.dtype)
        return self.used - born + ahead + self.largest <= self.ring.size - size

    def keep(self, tile: AP, ahead: int, engine: str = "dve") -> AP:
        """`tile`, or a copy of it in a fresh buffer when the ring may reuse its bytes soon."""
        if self.fresh(tile, ahead):
            return tile
        copy = self.new(tile.pcount, tile.free_size, tile.dtype)
        self.ctx.em.emit(engine, "copy", {"dst": copy, "src": tile})
        return copy
