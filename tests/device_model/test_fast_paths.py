"""The emulator's fast paths give the same bits as the plain numpy they replace (run speed must
never change an output): windowed max/min pooling, bf16 widening, table-mode activation lookups."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from device_model import numerics
from device_model.engines import _memory_cover, _widener, _windowed_extreme


def _with_specials(rng: np.random.Generator, shape: tuple[int, ...], nans: bool) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.integers(0, flat.size, (5, flat.size // 7))
    flat[picks[0]] = 0.0
    flat[picks[1]] = -0.0
    flat[picks[2]] = np.inf
    flat[picks[3]] = -np.inf
    if nans:
        flat[picks[4][:3]] = np.nan
    return x


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("window", [(3, 3), (2, 2), (5,), (1, 4), (2, 2, 2)])
def test_windowed_extreme_equals_numpy_bit_for_bit(op, window):
    rng = np.random.default_rng(11)
    ref_fn = np.max if op == "max" else np.min
    axes = len(window)
    fast = _windowed_extreme(op, axes, (8, 6) + window)
    assert fast is not None
    fell_back = 0
    for trial in range(40):
        x = _with_specials(rng, (8, 6) + window, nans=trial % 4 == 1)
        if trial % 2:  # strided, like a pooling window read in place
            x = np.ascontiguousarray(np.repeat(x, 2, axis=1))[:, ::2]
        if trial % 3 == 0:  # a ReLU'd input: many windows of zeros only, some all negative
            x = np.where(x < 0.5, np.float32(0.0), x)
        got = fast(x)
        ref = ref_fn(x, axis=tuple(range(x.ndim - axes, x.ndim)))
        if got is None:  # ambiguous in numpy itself (NaN payloads, a window with +0 and -0)
            fell_back += 1
            assert np.isnan(ref).any() or (ref == 0).any()
            continue
        assert got.shape == ref.shape
        assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()
    assert fell_back < 30  # the fast path is taken


@pytest.mark.parametrize("op", ["max", "min"])
def test_windowed_extreme_on_overlapping_3x3_stride_2_windows(op):
    """A ResNet stem max pool reads its input in place through overlapping windows; a -0 that only
    one window reads, next to a +0 in it, must still send the call back to numpy."""
    rng = np.random.default_rng(12)
    ref_fn = np.max if op == "max" else np.min
    rows = np.zeros((16, 11 * 13 + 5), np.float32)  # partition rows with a gap after each image
    image = rows[:, :11 * 13].reshape(16, 11, 13)
    x = np.lib.stride_tricks.as_strided(image, (16, 5, 6, 3, 3),
                                        (rows.strides[0], 2 * 13 * 4, 2 * 4, 13 * 4, 4), writeable=False)
    fast = _windowed_extreme(op, 2, x.shape)
    taken = 0
    for trial in range(12):
        image[...] = rng.standard_normal(image.shape).astype(np.float32)
        if trial % 2 == 0:  # ReLU'd (or its mirror for min): windows whose extreme is a zero
            image[...] = np.maximum(image, 0) if op == "max" else np.minimum(image, 0)
        if trial % 3 == 1:
            image[3, 4, 6] = -0.0  # read by several windows holding +0 too
        rows[:, 11 * 13:] = -0.0  # a -0 in the gap that no window reads: at most a needless fallback
        got = fast(x)
        ref = ref_fn(x, axis=(3, 4))
        if got is None:
            assert (ref == 0).any() or np.isnan(ref).any()
            continue
        taken += 1
        assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()
    assert taken >= 4


def test_memory_cover_holds_every_element_a_strided_view_reads():
    rng = np.random.default_rng(13)
    rows = rng.standard_normal((8, 200)).astype(np.float32)
    image = rows[:, :99].reshape(8, 9, 11)
    for shape, strides in [((8, 4, 5, 3, 3), (800, 2 * 44, 8, 44, 4)),  # overlapping windows
                           ((8, 4, 5, 2, 2), (800, 2 * 44, 8, 44, 4)),  # windows that tile
                           ((8, 9, 11), (800, 44, 4))]:
        x = np.lib.stride_tricks.as_strided(image, shape, strides, writeable=False)
        cover = _memory_cover(x)
        assert set(x.reshape(-1).tolist()) <= set(cover.reshape(-1).tolist())
    flipped = rows[:, ::-1]  # a negative stride: the view itself
    assert _memory_cover(flipped) is flipped


def test_windowed_extreme_leaves_sums_and_large_windows_to_numpy():
    assert _windowed_extreme("sum", 2, (4, 3, 3)) is None
    assert _windowed_extreme("max", 1, (4, 1000)) is None
    assert _windowed_extreme("max", 1, (4, 1)) is None


def test_bf16_widening_is_exact_for_every_bit_pattern():
    """All 65,536 bf16 patterns (NaNs, infinities, subnormals, -0) widen to the f32 ml_dtypes gives."""
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    x = bits.view(ml_dtypes.bfloat16)
    ref = x.astype(np.float32)
    got = _widener("bf16")(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes()
    strided = x[::3, 1::2]
    assert _widener("bf16")(strided).view(np.uint32).tobytes() == strided.astype(np.float32).view(np.uint32).tobytes()


def _lookup_as_first_written(func: str, segments: int, u: np.ndarray) -> np.ndarray:
    """numerics._lookup before it was made faster: the oracle the fast version must equal."""
    spec = numerics.TABLES[func]
    table = numerics._table(func, segments)
    u = np.clip(np.nan_to_num(u, nan=spec.lo), spec.lo, spec.hi)
    t = (u - spec.lo) * (segments / (spec.hi - spec.lo))
    i = np.clip(np.floor(t), 0, segments - 1).astype(np.intp)
    frac = t - i
    return table[i] + frac * (table[i + 1] - table[i])


@pytest.mark.parametrize("func", numerics.TABLE_FUNCS)
def test_table_lookup_is_unchanged_bit_for_bit(func, monkeypatch):
    """Every bf16-representable f32 (all exponents, NaNs, ±inf, ±0) and random f32 bit patterns."""
    rng = np.random.default_rng(5)
    x = np.concatenate([(np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32),
                        rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        (rng.standard_normal(100_000) * 8).astype(np.float32)])
    for segments in (256, 37):
        got = numerics.activation(func, x, "table", segments)
        got0 = numerics.activation(func, np.array(np.float32(-1.25)), "table", segments)
        with monkeypatch.context() as m:
            m.setattr(numerics, "_lookup", _lookup_as_first_written)
            ref = numerics.activation(func, x, "table", segments)
            ref0 = numerics.activation(func, np.array(np.float32(-1.25)), "table", segments)
        assert got.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes(), (func, segments)
        assert got0.tobytes() == ref0.tobytes()


def test_windowed_max_checks_zero_signs_only_when_a_negative_zero_is_read():
    rng = np.random.default_rng(11)
    fast = _windowed_extreme("max", 2, (64, 8, 2, 2))
    x = np.maximum(rng.standard_normal((64, 8, 2, 2)).astype(np.float32), np.float32(0))  # ReLU'd: +0 only
    x[rng.random(x.shape) < 0.5] = 0.0
    assert (x.max(axis=(2, 3)) == 0).any()
    got = fast(x)
    assert got is not None and got.view(np.uint32).tobytes() == x.max(axis=(2, 3)).view(np.uint32).tobytes()
    x[0, 0] = [[0.0, -0.0], [-1.0, -2.0]]  # one window whose max is a zero of either sign
    assert fast(x) is None
    x[0, 0] = [[-0.0, -0.0], [-1.0, -2.0]]  # a -0 read, but no window mixes the signs
    got = fast(x)
    assert got is not None and got.view(np.uint32).tobytes() == x.max(axis=(2, 3)).view(np.uint32).tobytes()


@pytest.mark.parametrize("nans", [False, True])
def test_relu_in_f32_equals_the_float64_reference_bit_for_bit(nans):
    """ReLU skips the float64 round trip; NaN-holding arrays keep it (it quietens signalling NaNs)."""
    rng = np.random.default_rng(3)
    x = _with_specials(rng, (37, 129), nans)
    bits = x.reshape(-1).view(np.uint32)
    bits[rng.integers(0, bits.size, 50)] = rng.integers(1, 1 << 23, 50, dtype=np.uint32)  # + subnormals
    bits[rng.integers(0, bits.size, 50)] = rng.integers(1, 1 << 23, 50, dtype=np.uint32) | (1 << 31)
    if nans:
        bits[:3] = (0x7F800001, 0xFFC01234, 0x7FA00000)  # signalling and quiet NaNs with payloads
    with np.errstate(all="ignore"):
        expect = np.maximum(x.astype(np.float64), 0.0).astype(np.float32)
    assert numerics._RELU_IN_F32  # the probe accepts this machine's numpy
    assert (numerics._relu_f32(x) is None) == nans
    got = numerics.activation("relu", x)
    assert np.array_equal(got.view(np.uint32), expect.view(np.uint32))
