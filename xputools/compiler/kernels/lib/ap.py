"""Access patterns kernels build: into HBM values, onto SBUF tiles, and views of tiles."""
from __future__ import annotations

from collections.abc import Iterable

from device_model.dtypes import itemsize
from device_model.isa import AP, MAX_FREE_DIMS

from ...context import DeviceValue, LoweringContext
from ...errors import CompileError
from .dims import ap_dims

MAX_FREE = 2048  # elements per partition in one elementwise tile
FLOAT_DTYPES = ("f32", "bf16", "f16", "fp8e4", "fp8e5")


def is_float(dtype: str) -> bool:
    """True for the device's floating-point dtypes."""
    return dtype in FLOAT_DTYPES


def hbm_ap(value: DeviceValue, elem_offset: int, dims: Iterable[tuple[int, int]], dtype: str | None = None) -> AP:
    """An HBM access pattern into `value` at an element offset, with `dims` ((stride, count), ...)
    exactly as given."""
    return AP("hbm", value.offset + elem_offset * itemsize(value.dtype), tuple(dims), dtype or value.dtype)


def hbm_pattern(value: DeviceValue, elem_offset: int, pairs: Iterable[tuple[int, int]],
                dtype: str | None = None) -> AP:
    """`hbm_ap` with its dims merged (`dims.ap_dims`); more dims than an access pattern holds is a
    compiler bug."""
    dims = ap_dims(pairs)
    if len(dims) > MAX_FREE_DIMS:
        raise CompileError(f"internal: access pattern with {len(dims)} dims {dims} for {value.name}")
    return hbm_ap(value, elem_offset, dims, dtype)


def dims_fit(pairs: Iterable[tuple[int, int]]) -> bool:
    """True when (stride, count) pairs merge into dims one access pattern can hold."""
    return len(ap_dims(pairs)) <= MAX_FREE_DIMS


def sbuf_ap(offset: int, partitions: int, free: int, dtype: str, pstart: int = 0) -> AP:
    """A contiguous [partitions, free] SBUF tile at a byte offset."""
    return AP("sbuf", offset, ((1, free),), dtype, pstart, partitions)


def new_tile(ctx: LoweringContext, partitions: int, free: int, dtype: str, pstart: int = 0) -> AP:
    """A fresh [partitions, free] SBUF tile from the ring allocator (in whole hazard blocks: the
    allocator aligns every allocation, so small tiles never share a block)."""
    return sbuf_ap(ctx.em.sbuf.alloc(free * itemsize(dtype)), partitions, free, dtype, pstart)


def sub(ap: AP, partitions: int, elem_offset: int, dims: Iterable[tuple[int, int]], pstart: int = 0) -> AP:
    """A region of an SBUF/PSUM tile: partitions [pstart, pstart+partitions) of it, free dims
    ((stride, count), ... merged) from an element offset."""
    return AP(ap.space, ap.offset + elem_offset * itemsize(ap.dtype), ap_dims(dims), ap.dtype,
              ap.pstart + pstart, partitions)


def strided(tile: AP, dims: Iterable[tuple[int, int]], offset_elems: int = 0) -> AP:
    """A view of all partitions of `tile` with explicit free dims (stride, count), merged."""
    return sub(tile, tile.pcount, offset_elems, dims)


def tile_columns(tile: AP, index: int, width: int = 1) -> AP:
    """Columns [index, index+width) of a contiguous [P, F] tile."""
    return AP(tile.space, tile.offset + index * itemsize(tile.dtype), ((1, width),), tile.dtype,
              tile.pstart, tile.pcount)


def load(ctx: LoweringContext, src: AP, partitions: int, free: int, dtype: str) -> AP:
    """DMA `src` (any pattern of partitions*free elements) into a new SBUF tile, cast to dtype."""
    tile = new_tile(ctx, partitions, free, dtype)
    ctx.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
    return tile


def store(ctx: LoweringContext, tile: AP, dst: AP) -> None:
    """DMA an SBUF tile to `dst`."""
    ctx.em.emit("dma", "dma_copy", {"dst": dst, "src": tile})
