"""The direct sgemm calls (blas_gemm) give numpy's matmul, and matmul + add for the accumulating form,
bit for bit -- NaN payloads, infinities and -0 included -- and are refused wherever numpy would
not have called gemm on those very arrays."""
from __future__ import annotations

import numpy as np
import pytest

from device_model import blas_gemm
from device_model.blas_gemm import gemm_call

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and inf operands on purpose
_SPECIALS = np.array([0x7FC00001, 0x7FC12345, 0xFFC00007, 0x7F800001, 0x7F800000, 0xFF800000, 0x80000000, 0,
                      0x00000001, 0x80400000], np.uint32)  # NaNs with payloads (one signalling), ±inf, ±0, subnormals


def _plant(rng, x: np.ndarray, fraction: float) -> None:
    bits = x.view(np.uint32).reshape(-1)
    where = rng.integers(0, bits.size, max(1, int(bits.size * fraction)))
    bits[where] = rng.choice(_SPECIALS, where.size)


def _numpy_has_its_own_openblas() -> bool:
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return config.get("name") == "scipy-openblas"


def _operands(rng, m: int, k: int, n: int, transposed_a: bool, transposed_b: bool):
    a = rng.standard_normal((k, m) if transposed_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transposed_b else (k, n)).astype(np.float32)
    return (a.T if transposed_a else a), (b.T if transposed_b else b)


@pytest.mark.skipif(not _numpy_has_its_own_openblas(), reason="numpy is built against another BLAS here")
def test_the_direct_path_is_taken_with_numpys_bundled_openblas():
    rng = np.random.default_rng(0)
    a, b = _operands(rng, 128, 128, 512, True, False)  # the PE's layout: stat [K,M] read transposed
    c = np.zeros((128, 512), np.float32)
    assert gemm_call(a, b, c) is not None
    assert gemm_call(a, b, c, np.empty((128, 512), np.float32)) is not None


@pytest.mark.parametrize("seed", range(24))
def test_random_shapes_layouts_and_special_values_match_numpy(seed):
    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(2, 130, 3))
    a, b = _operands(rng, m, k, n, bool(seed & 1), bool(seed & 2))
    pitch = n + int(rng.integers(0, 9))  # PSUM rows are wider than the tile
    psum = rng.standard_normal((m, pitch)).astype(np.float32)
    if seed % 3:
        _plant(rng, a, 0.003)
        _plant(rng, b, 0.003)
    if seed % 2:
        _plant(rng, psum, 0.05)
    start_psum = psum.copy()
    expect_start = np.matmul(a, b)
    expect_accumulate = np.add(start_psum[:, :n], expect_start)

    start = gemm_call(a, b, psum[:, :n])
    accumulate = gemm_call(a, b, psum[:, :n], np.empty((m, n), np.float32))
    if start is None or accumulate is None:
        pytest.skip("no direct BLAS path on this machine")
    accumulate()
    assert np.array_equal(psum[:, :n].view(np.uint32), expect_accumulate.view(np.uint32))
    assert np.array_equal(psum[:, n:].view(np.uint32), start_psum[:, n:].view(np.uint32))  # outside: untouched
    start()
    assert np.array_equal(psum[:, :n].view(np.uint32), expect_start.view(np.uint32))


def test_accumulating_keeps_the_psum_nan_payload_where_the_product_is_nan_too():
    """numpy's add keeps its first operand's NaN; BLAS alone would keep the product's."""
    rng = np.random.default_rng(5)
    a, b = _operands(rng, 16, 8, 24, True, False)
    a[0, 0] = np.uint32(0x7FC12345).view(np.float32)  # row 0 of the product is NaN with this payload
    c = np.zeros((16, 24), np.float32)
    c[0, 3] = np.uint32(0x7FC00001).view(np.float32)
    accumulate = gemm_call(a, b, c, np.empty_like(c))
    if accumulate is None:
        pytest.skip("no direct BLAS path on this machine")
    accumulate()
    assert c[0, 3].view(np.uint32) == 0x7FC00001
    assert c[0, 4].view(np.uint32) == 0x7FC12345


def test_refused_where_numpy_would_not_call_gemm_on_these_arrays():
    rng = np.random.default_rng(7)
    a, b = _operands(rng, 8, 8, 8, False, False)
    c = np.zeros((8, 8), np.float32)
    assert gemm_call(a[:, :1], b[:1, :], c) is None  # K = 1: numpy's outer-product loop
    assert gemm_call(a[:1, :], b, c[:1, :]) is None  # M = 1: gemv
    assert gemm_call(a[:, ::2], b[::2, :], c) is None  # no unit stride: numpy copies first
    assert gemm_call(a, b, np.zeros((8, 8), np.float32).T) is None  # numpy would transpose the output
    assert gemm_call(a, a.T, c) is None  # same memory: numpy's syrk path
    assert gemm_call(a, b, a) is None  # output overlapping an operand: numpy buffers it
    assert gemm_call(a.astype(np.float64), b, c) is None
    assert gemm_call(a, b, c, np.empty((8, 9), np.float32)) is None  # a scratch of the wrong shape


def test_a_probe_that_differs_keeps_the_numpy_path(monkeypatch):
    rng = np.random.default_rng(9)
    a, b = _operands(rng, 6, 5, 7, False, False)
    monkeypatch.setattr(blas_gemm, "_PROBED", {})
    monkeypatch.setattr(blas_gemm, "_probe", lambda *args: False)
    assert gemm_call(a, b, np.zeros((6, 7), np.float32)) is None


@pytest.mark.parametrize("shape", [(2, 2, 2), (16, 8, 24), (128, 128, 512)])
def test_negative_zero_psum_and_products_that_are_all_negative_zero(shape):
    """-0 + (a dot of -0 products) follows numpy: whatever sign BLAS gives the dot, the add sees it once."""
    m, k, n = shape
    a = np.ascontiguousarray(np.full((k, m), -1.0, np.float32)).T
    b = np.zeros((k, n), np.float32)
    b[:, ::2] = -0.0
    for psum_value in (-0.0, 0.0):
        c = np.full((m, n), psum_value, np.float32)
        expect = np.add(c, np.matmul(a, b))
        accumulate = gemm_call(a, b, c, np.empty((m, n), np.float32))
        if accumulate is None:
            pytest.skip("no direct BLAS path on this machine")
        accumulate()
        assert np.array_equal(c.view(np.uint32), expect.view(np.uint32))
