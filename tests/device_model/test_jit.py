"""Compiled kernels (device_model.jit): available where numba is installed, off with XPU_JIT=0, and
giving the same bits as the numpy passes they stand in for."""
from __future__ import annotations

import numpy as np
import pytest
from test_activation_fast import OLD, hard_f32

from device_model import activation_fast as fast
from device_model import jit

F32 = np.float32


@pytest.fixture
def gelu_loop(monkeypatch):
    """The compiled GELU loop, also where the environment says XPU_JIT=0 (set in gelu_f32 too)."""
    monkeypatch.delenv("XPU_JIT", raising=False)
    kernel = jit.Kernel(fast._gelu_table_loop, fast.GELU_TABLE_LOOP.signature)
    monkeypatch.setattr(fast, "GELU_TABLE_LOOP", kernel)
    compiled = kernel.compiled()
    # numba is a dependency: a machine without the compiled loop has a broken install
    assert compiled is not None, kernel.unavailable
    return compiled


def test_the_gelu_loop_compiles_here(gelu_loop):
    assert callable(gelu_loop)


def test_xpu_jit_0_turns_kernels_off(monkeypatch):
    monkeypatch.setenv("XPU_JIT", "0")
    kernel = jit.Kernel(fast._gelu_table_loop, lambda nb: nb.intp(nb.uint32[::1]))
    assert kernel.compiled() is None
    assert "XPU_JIT=0" in kernel.unavailable


def test_a_kernel_numba_cannot_type_falls_back_with_a_reason(monkeypatch):
    monkeypatch.delenv("XPU_JIT", raising=False)

    def untypable(x):
        return {object(): x}  # a dict keyed by arbitrary objects: not nopython

    kernel = jit.Kernel(untypable, lambda nb: nb.intp(nb.intp))
    assert kernel.compiled() is None
    assert "untypable" in kernel.unavailable


def _awkward_gelu_inputs(seed: int) -> np.ndarray:
    x = hard_f32(seed=seed, n=200_000)
    binades = np.ldexp(1.0, np.arange(-149, 128)).astype(F32)
    x = np.concatenate([x, binades, -binades, np.nextafter(binades, F32(0)), -np.nextafter(binades, F32(0))])
    return np.random.default_rng(seed).permutation(x)


def test_compiled_gelu_gives_the_numpy_passes_bits_and_flags_the_same_elements(gelu_loop):
    x = _awkward_gelu_inputs(seed=71)
    with np.errstate(all="ignore"):
        by_passes = fast.gelu_f32(x, OLD["gelu"], compiled=False)
        by_loop = fast.gelu_f32(x, OLD["gelu"], compiled=True)
    assert np.array_equal(by_passes.view(np.uint32), by_loop.view(np.uint32))
    out_passes, out_loop = np.empty(x.size, F32), np.empty(x.size, F32)
    flagged_passes = fast._gelu_table_passes(x, out_passes, block=16384)
    hits = np.empty(x.size, np.intp)
    n = gelu_loop(x.view(np.uint32), fast._gelu_table(), fast._GELU_SHIFT, fast._GELU_CHECK_MASK,
                  fast._GELU_CHECK_HALF, out_loop, hits)
    assert 0 < n < x.size
    assert np.isin(np.flatnonzero(np.isnan(x)), hits[:n]).all()  # NaN rows are flagged to the reference
    assert np.array_equal(hits[:n], flagged_passes)
    assert np.array_equal(out_passes.view(np.uint32), out_loop.view(np.uint32))  # unflagged and flagged alike


def test_the_loop_uncompiled_means_what_the_compiled_one_does(gelu_loop):
    """The kernel's Python text is its documentation: run as Python it gives the compiled bits."""
    x = _awkward_gelu_inputs(seed=72)[:3000]
    args = (x.view(np.uint32), fast._gelu_table(), fast._GELU_SHIFT, fast._GELU_CHECK_MASK, fast._GELU_CHECK_HALF)
    out_py, out_jit = np.empty(x.size, F32), np.empty(x.size, F32)
    hits_py, hits_jit = np.empty(x.size, np.intp), np.empty(x.size, np.intp)
    with np.errstate(all="ignore"):
        n_py = fast._gelu_table_loop(*args, out_py, hits_py)
    n_jit = gelu_loop(*args, out_jit, hits_jit)
    assert n_py == n_jit
    assert np.array_equal(hits_py[:n_py], hits_jit[:n_jit])
    assert np.array_equal(out_py.view(np.uint32), out_jit.view(np.uint32))


@pytest.mark.parametrize("shape", [(4096,), (64, 4097), (3, 50, 40)])
def test_compiled_gelu_on_strided_and_many_dimensional_inputs(shape, gelu_loop):
    rng = np.random.default_rng(73)
    base = (rng.standard_normal((shape[0] * 2,) + shape[1:]) * 4).astype(F32)
    x = base[::2]  # not contiguous
    with np.errstate(all="ignore"):
        assert np.array_equal(fast.gelu_f32(x, OLD["gelu"], compiled=True).view(np.uint32),
                              fast.gelu_f32(x, OLD["gelu"], compiled=False).view(np.uint32))
