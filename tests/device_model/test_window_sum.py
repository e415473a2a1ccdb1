"""Windowed f32 sums (device_model.window_sum) against np.sum bit for bit: many shapes, axis orders,
strided views and window sizes, with values chosen so that any other summation order rounds
differently (large cancellations, mixed magnitudes), plus ±0, inf and distinct NaN payloads."""
from __future__ import annotations

import numpy as np
import pytest

from device_model import window_sum
from device_model.window_sum import WindowSum, verified_summer

NAN_PAYLOADS = np.array([0x7FC00001, 0xFFC00123, 0x7F800042, 0x7FFFFFFF], np.uint32).view(np.float32)


def _adversarial(rng: np.random.Generator, size: int, specials: bool) -> np.ndarray:
    magnitude = np.exp2(rng.integers(-30, 30, size)).astype(np.float64)
    values = rng.standard_normal(size) * magnitude
    cancel = rng.random(size) < 0.2  # exact opposites of a neighbour: large cancellations
    values[1:][cancel[1:]] = -values[:-1][cancel[1:]]
    values[rng.random(size) < 0.05] = 0.0
    values[rng.random(size) < 0.05] = -0.0
    out = values.astype(np.float32)
    if specials:
        pick = rng.random(size)
        out[pick < 0.01] = np.inf
        out[(pick >= 0.01) & (pick < 0.02)] = -np.inf
        nan_at = np.flatnonzero((pick >= 0.02) & (pick < 0.03))
        out[nan_at] = NAN_PAYLOADS[rng.integers(0, len(NAN_PAYLOADS), nan_at.size)]
    return out


def _layout(rng: np.random.Generator, shape: tuple[int, ...], specials: bool) -> np.ndarray:
    """An f32 array of `shape` laid out in a random axis order, possibly with steps (a view)."""
    perm = rng.permutation(len(shape))
    steps = [int(v) for v in rng.integers(1, 4, len(shape))] if rng.random() < 0.5 else [1] * len(shape)
    stored = [shape[p] * steps[p] for p in perm]
    base = _adversarial(rng, int(np.prod(stored)), specials).reshape(stored)
    view = base.transpose(np.argsort(perm))
    return view[tuple(slice(None, None, k) for k in steps)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.view(np.uint32).tobytes() == b.view(np.uint32).tobytes()


@pytest.mark.parametrize("seed", range(8))
def test_derived_order_equals_numpy_on_random_layouts(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(120):
        ndim = int(rng.integers(2, 6))
        axes = int(rng.integers(1, ndim))
        shape = tuple(int(v) for v in rng.integers(1, 10, ndim))
        if not WindowSum.worth_it(shape, axes):
            continue
        x = _layout(rng, shape, specials=False)
        summer = verified_summer(shape, x.strides, axes)
        assert summer is not None, (shape, x.strides, axes)  # the model holds for every layout tried
        want = np.sum(x, axis=tuple(range(ndim - axes, ndim)), dtype=np.float32)
        assert _same_bits(summer(x), want), (shape, x.strides, axes)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("shape,axes", [
    ((128, 2, 16, 2, 2), 2),  # the CNN sample's AveragePool, more elements than numpy's buffer
    ((64, 8, 8, 3, 3), 2),
    ((32, 7, 9), 1),  # pairwise_sum's eight lanes plus a remainder
    ((16, 4, 61), 1),
    ((8, 5, 4, 4, 4), 3),
    ((256, 40, 3), 1),
])
@pytest.mark.parametrize("specials", [False, True])
def test_window_sum_equals_numpy_bit_for_bit(shape, axes, specials):
    rng = np.random.default_rng(len(shape) * 1000 + axes + specials)
    ws = WindowSum(shape, axes)
    axis = tuple(range(len(shape) - axes, len(shape)))
    for _ in range(6):
        x = _layout(rng, shape, specials)
        with np.errstate(all="ignore"):  # inf - inf: NaN is the expected result
            assert _same_bits(ws(x), np.sum(x, axis=axis, dtype=np.float32)), x.strides


def test_pooling_layout_takes_the_fast_path():
    # the AveragePool read in place: window axes (stride 32, 1) around a kept axis (stride 2)
    base = np.zeros(128 * 128, np.float32)
    x = np.lib.stride_tricks.as_strided(base, (128, 2, 16, 2, 2), tuple(4 * s for s in (128, 64, 2, 32, 1)))
    ws = WindowSum(x.shape, 2)
    ws(x)
    assert ws._plans[x.strides] is not None


def test_zero_sums_are_positive_like_numpy():
    x = np.full((64, 2, 2), -0.0, np.float32)
    got = WindowSum(x.shape, 2)(x)
    assert _same_bits(got, np.sum(x, axis=(1, 2), dtype=np.float32))
    assert not np.signbit(got).any()


def test_layouts_outside_the_model_fall_back_to_numpy():
    rng = np.random.default_rng(3)
    x = _adversarial(rng, 4 * 6, False).reshape(4, 6)
    broadcast = np.broadcast_to(x[:, None, :], (4, 3, 6))  # a zero stride
    assert window_sum._numpy_chunks(broadcast.shape, broadcast.strides, 2) is None
    assert _same_bits(WindowSum(broadcast.shape, 2)(broadcast), np.sum(broadcast, axis=(1, 2), dtype=np.float32))
    reversed_ = x[:, ::-1]  # a negative stride
    assert verified_summer(reversed_.shape, reversed_.strides, 1) is None


def test_a_wrong_order_is_caught_by_the_probe(monkeypatch):
    # if numpy ever adds in another order, the build-time probe must refuse the plan
    def reversed_chunks(shape, strides, axes):
        return [list(reversed(chunk)) for chunk in reversed(real(shape, strides, axes))]
    real = window_sum._numpy_chunks
    monkeypatch.setattr(window_sum, "_numpy_chunks", reversed_chunks)
    verified_summer.cache_clear()  # plans verified by other tests must not answer here
    assert verified_summer((512, 3, 3), (36, 12, 4), 2) is None
    assert verified_summer((512, 2, 5), (4, 4 * 512 * 5, 4 * 512), 2) is None  # one element per call
    verified_summer.cache_clear()


def test_small_or_large_work_stays_with_numpy():
    assert not WindowSum.worth_it((4, 1000), 1)
    assert not WindowSum.worth_it((4, 1), 1)
    x = np.ones((32, 64), np.float32)  # few long contiguous rows: np.sum is faster
    ws = WindowSum(x.shape, 1)
    assert _same_bits(ws(x), np.sum(x, axis=1, dtype=np.float32))
    assert ws._plans[x.strides] is None


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("specials", [False, True])
def test_reduce_instruction_on_a_pooling_view_equals_numpy(dtype, specials):
    # the CNN sample's AveragePool as one `reduce`, read in place (f32) or widened first (bf16: a new
    # array each run, whose strides the plan is derived from)
    from device_model.arch import load_arch
    from device_model.dtypes import np_dtype
    from device_model.engines import build_executor
    from device_model.isa import AP, Instr
    from device_model.memory import Memory

    rng = np.random.default_rng(21 + specials)
    mem = Memory(load_arch(), 1 << 20)
    src = AP("sbuf", 0x1000, ((64, 2), (2, 16), (32, 2), (1, 2)), dtype, 0, 128)
    dst = AP("sbuf", 0x8000, ((1, 32),), "f32", 0, 128)
    whole = AP("sbuf", 0x1000, ((1, 128),), dtype, 0, 128)
    with np.errstate(all="ignore"):  # NaN payloads narrowed to bf16
        mem.view(whole)[...] = _adversarial(rng, 128 * 128, specials).reshape(128, 128).astype(np_dtype(dtype))
    run = build_executor(Instr("dve", "reduce", {"dst": dst, "src": src}, {"op": "sum", "axes": 2}), mem, load_arch())
    for _ in range(2):  # the second call runs the verified plan from the cache
        run()
        with np.errstate(all="ignore"):
            x = mem.view(src) if dtype == "f32" else mem.view(src).astype(np.float32)  # numpy keeps the axis order
            want = np.sum(x, axis=(3, 4), dtype=np.float32).reshape(128, 32)
        assert _same_bits(mem.view(dst).copy(), want)


def test_layouts_numpy_already_vectorizes_stay_with_numpy():
    # outputs innermost: numpy's inner loop runs over 4096 outputs per call, faster than ours
    x = np.zeros((8, 8, 4096), np.float32).transpose(2, 0, 1)
    ws = WindowSum(x.shape, 2)
    ws(x)
    assert ws._plans[x.strides] is None
    y = np.zeros((4096, 32), np.float32)  # a long contiguous core: numpy's pairwise_sum wins
    ws = WindowSum(y.shape, 1)
    ws(y)
    assert ws._plans[y.strides] is None
