"""Building blocks shared by kernels: HBM access patterns of tiles, SBUF tile loads and stores."""
from __future__ import annotations

from device_model.dtypes import itemsize
from device_model.isa import AP

MAX_FREE = 2048  # elements per partition in one elementwise tile


def hbm_ap(value, elem_offset: int, dims, dtype: str | None = None) -> AP:
    """An HBM access pattern into `value` (a DeviceValue) at an element offset."""
    return AP("hbm", value.offset + elem_offset * itemsize(value.dtype), tuple(dims), dtype or value.dtype)


def sbuf_tile(ctx, partitions: int, free: int, dtype: str, pstart: int = 0) -> AP:
    """A fresh [partitions, free] SBUF tile."""
    off = ctx.em.sbuf.alloc(free * itemsize(dtype))
    return AP("sbuf", off, ((1, free),), dtype, pstart, partitions)


def load(ctx, src: AP, partitions: int, free: int, dtype: str) -> AP:
    """DMA `src` (any pattern of partitions*free elements) into a new SBUF tile, cast to dtype."""
    tile = sbuf_tile(ctx, partitions, free, dtype)
    ctx.em.emit("dma", "dma_copy", {"dst": tile, "src": src})
    return tile


def store(ctx, tile: AP, dst: AP) -> None:
    ctx.em.emit("dma", "dma_copy", {"dst": dst, "src": tile})


def is_float(dtype: str) -> bool:
    return dtype in ("f32", "bf16", "f16", "fp8e4", "fp8e5")
