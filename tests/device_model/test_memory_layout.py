"""SBUF/PSUM partitions sit in padded rows (so they do not share cache sets), invisibly: `mem.sbuf`
/ `mem.psum` stay [partitions, bytes] arrays and every view reaches the bytes they show."""
from __future__ import annotations

import numpy as np

from device_model.arch import load_arch
from device_model.isa import AP
from device_model.memory import Memory

ARCH = load_arch()


def test_partitions_are_not_a_multiple_of_4k_apart_and_start_on_a_cache_line():
    mem = Memory(ARCH, 64)
    for space in ("sbuf", "psum"):
        view = mem.view(AP(space, 0, ((1, 16),), "f32", 0, 4))
        row = view.strides[0]
        assert row % 4096 != 0 and row % 64 == 0
        assert view.ctypes.data % 64 == 0 and row >= mem.space(space).shape[1]


def test_views_and_the_byte_arrays_are_the_same_memory():
    rng = np.random.default_rng(3)
    mem = Memory(ARCH, 64, sbuf_row_bytes=4096, psum_row_bytes=2048)
    for space in ("sbuf", "psum"):
        buf = mem.space(space)
        assert buf.shape == (ARCH.partitions, 4096 if space == "sbuf" else 2048)
        ap = AP(space, 40, ((12, 3), (1, 10)), "f32", 5, 7)
        values = rng.standard_normal((7, 3, 10)).astype(np.float32)
        mem.view(ap)[...] = values
        raw = buf[5:12, 40:40 + 4 * 34].copy().view(np.float32).reshape(7, 34)
        for i in range(3):  # the pattern's rows are 12 elements apart
            assert np.array_equal(raw[:, 12 * i:12 * i + 10], values[:, i, :])
        buf[6, 40:44] = np.frombuffer(np.float32(2.5).tobytes(), np.uint8)  # written through the byte array
        assert mem.view(ap)[1, 0, 0] == np.float32(2.5)
        mem.clear_onchip()
        assert not buf.any() and not mem.view(ap).any()


def test_snapshot_and_restore_round_trip_through_padded_rows():
    mem = Memory(ARCH, 64, sbuf_row_bytes=2048, psum_row_bytes=1024)
    ap = AP("sbuf", 1000, ((1, 64),), "f32", 0, 128)
    mem.view(ap)[...] = np.arange(128 * 64, dtype=np.float32).reshape(128, 64)
    snap = mem.snapshot()
    mem.mark_written(ap)
    mem.view(ap)[...] = -1.0
    mem.restore(snap)
    assert np.array_equal(mem.view(ap), np.arange(128 * 64, dtype=np.float32).reshape(128, 64))
