"""The access-pattern overlap test shared by watchpoints and the race sanitizer: exact against a
brute-force byte set on random strided 4-D patterns."""
from __future__ import annotations

import numpy as np

from device_model.access import contains_byte, footprint, overlap, overlaps, span
from device_model.dtypes import itemsize
from device_model.isa import AP


def brute_bytes(ap: AP) -> set[int]:
    size = itemsize(ap.dtype)
    out = set()
    for idx in np.ndindex(*[c for _, c in ap.dims]):
        base = ap.offset + sum(i * s * size for i, (s, _) in zip(idx, ap.dims))
        out.update(range(base, base + size))
    return out


def random_ap(rng, space="sbuf") -> AP:
    ndims = int(rng.integers(1, 5))
    dims = tuple((int(rng.integers(0, 40)), int(rng.integers(1, 5))) for _ in range(ndims))
    dtype = str(rng.choice(["f32", "bf16", "i8"]))
    pstart = int(rng.integers(0, 8)) if space != "hbm" else 0
    pcount = int(rng.integers(1, 8)) if space != "hbm" else 1
    return AP(space, int(rng.integers(0, 200)), dims, dtype, pstart, pcount)


def test_footprint_is_exactly_the_bytes_touched():
    rng = np.random.default_rng(3)
    for _ in range(300):
        ap = random_ap(rng)
        fp = footprint(ap)
        got = set()
        for lo, hi in fp.intervals():
            got.update(range(lo, hi))
        assert got == brute_bytes(ap), ap
        # disjoint, sorted, never adjacent
        assert all(h1 < l2 for (_, h1), (l2, _) in zip(fp.intervals(), fp.intervals()[1:]))


def test_overlap_agrees_with_brute_force_including_partitions():
    rng = np.random.default_rng(4)
    for _ in range(400):
        a, b = random_ap(rng), random_ap(rng)
        pa = set(range(a.pstart, a.pstart + a.pcount))
        pb = set(range(b.pstart, b.pstart + b.pcount))
        common = brute_bytes(a) & brute_bytes(b)
        expect = bool(common) and bool(pa & pb)
        assert overlaps(a, b) == expect, (a, b)
        ov = overlap(a, b)
        if expect:
            got = set()
            for lo, hi in ov.intervals():
                got.update(range(lo, hi))
            assert got == common
            assert set(ov.partitions()) == pa & pb
        else:
            assert ov is None


def test_contiguous_tile_is_one_interval_and_spaces_never_meet():
    tile = AP("sbuf", 256, ((1, 512),), "f32", 0, 128)
    assert footprint(tile).intervals() == [(256, 256 + 2048)]
    rows = AP("hbm", 0, ((512, 128), (1, 256)), "f32")
    assert len(footprint(rows).lo) == 128
    assert not overlaps(tile, AP("psum", 256, ((1, 512),), "f32", 0, 128))
    assert overlaps(tile, span("sbuf", 127, 1, 2300, 2304))
    assert not overlaps(tile, span("sbuf", 0, 128, 2304, 4096))
    assert contains_byte(footprint(rows), 0, 1023) and not contains_byte(footprint(rows), 0, 1024)
