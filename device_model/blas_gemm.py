"""Direct calls to the sgemm numpy's own matmul uses, with a beta: C = A·B + C in one BLAS call.

The PE's accumulating matmul is `psum = psum + A·B` with A·B rounded to f32 first and the sum rounded
once more. Done with numpy that is `np.matmul` into a temporary and `np.add`: a second pass over the
PSUM tile that costs as much as a third of a small matmul. BLAS computes `C = alpha·A·B + beta·C`; with
alpha = beta = 1 its kernels form A·B in their accumulators exactly as with beta = 0 and then add C
once: the same two roundings. This module calls numpy's BLAS library (the one `np.matmul` calls, so
the same kernels and summation order) through ctypes with the arguments numpy's matmul would pass.

Nothing here is assumed: `gemm_call` probes every (transposes, M, N, K) it is asked for once per process
against `np.matmul` (beta = 0) and `np.matmul` + `np.add` (beta = 1) on seeded data, and returns None --
the caller keeps the numpy path -- when the library is not found, numpy would not call gemm for these
operands (a unit dimension, an operand it would copy first, an output it would transpose, A and B the
same memory), or the probe differs in a single bit.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_F32 = 4
# numpy's bundled OpenBLAS (scipy-openblas) exports its CBLAS with a prefix and, for 64-bit
# integers, a suffix; plain names are what a numpy built against a system BLAS links to.
_SYMBOLS = (("scipy_cblas_sgemm64_", ctypes.c_int64), ("cblas_sgemm64_", ctypes.c_int64),
            ("scipy_cblas_sgemm", ctypes.c_int32))
_LIBRARY: list = []  # [(function, int type) or None], found once
_PROBED: dict[tuple, bool] = {}


def _numpy_sgemm():
    """(cblas_sgemm function, its integer type) from the BLAS library numpy links, or None."""
    if not _LIBRARY:
        _LIBRARY.append(_find_numpy_sgemm())
    return _LIBRARY[0]


def _find_numpy_sgemm():
    try:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:  # noqa: BLE001 - no introspection: keep numpy's own path
        return None
    numpy_dir = Path(np.__file__).resolve().parent
    for lib in libs:
        path = Path(lib.filepath).resolve()
        # pip wheels keep numpy's BLAS in numpy.libs/ (Linux) or numpy/.dylibs (macOS)
        if path.parent.name != "numpy.libs" and numpy_dir not in path.parents:
            continue
        handle = ctypes.CDLL(str(path))
        for name, int_type in _SYMBOLS:
            fn = getattr(handle, name, None)
            if fn is not None:
                fn.restype = None
                return fn, int_type
    return None


def _blasable(stride_slow: int, stride_fast: int, fast_dim: int) -> bool:
    """numpy's is_blasable2d for f32: unit fast axis, slow stride a whole number >= the fast dim."""
    return stride_fast == _F32 and stride_slow % _F32 == 0 and stride_slow // _F32 >= fast_dim


def _layout(a: np.ndarray) -> tuple[int, int] | None:
    """(CBLAS transpose flag, leading dimension) numpy's matmul passes for a 2-D f32 operand it
    hands to gemm without copying, or None when it would copy it first."""
    rows, cols = a.shape
    s_rows, s_cols = a.strides
    if _blasable(s_rows, s_cols, cols):
        return _NO_TRANS, s_rows // _F32
    if _blasable(s_cols, s_rows, rows):
        return _TRANS, s_cols // _F32
    return None


def gemm_call(a: np.ndarray, b: np.ndarray, c: np.ndarray, scratch: np.ndarray | None = None
              ) -> Callable[[], None] | None:
    """A function doing `c[...] = a @ b` (scratch None) or, given an [M,N] f32 scratch array, `c += a @ b`
    with the f32 product rounded before the add, bit for bit as numpy does it, in one BLAS call on
    these very arrays (their memory is read and written in place on each call); None when that
    cannot be guaranteed (see the module docstring). a: [M,K], b: [K,N], c: [M,N], all float32.

    NaN payloads: numpy's add keeps c's NaN where c and the product are both NaN, BLAS the product's.
    So the accumulating call first sums each row of c (one gemv, a fifth of the add it replaces): a
    NaN there means c holds a NaN, and that call takes numpy's path through `scratch` instead."""
    accumulate = scratch is not None
    if not all(x.dtype == np.float32 and x.ndim == 2 for x in (a, b, c)):
        return None
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2 or c.shape != (m, n) or min(m, k, n) < 2:
        return None  # numpy takes its gemv / dot / loop paths for unit dimensions
    found = _numpy_sgemm()
    la, lb = _layout(a), _layout(b)
    if found is None or la is None or lb is None or not _blasable(c.strides[0], c.strides[1], n):
        return None
    if a.ctypes.data == b.ctypes.data:
        return None  # numpy may take its syrk path for a matrix times its own transpose
    if np.shares_memory(c, a) or np.shares_memory(c, b):
        return None  # numpy would buffer the output
    key = (la[0], lb[0], m, n, k, accumulate)
    if key not in _PROBED:
        _PROBED[key] = _probe(la[0], lb[0], m, n, k, accumulate)
    if not _PROBED[key]:
        return None
    gemm = _bound_call(found, a, la, b, lb, c, accumulate)
    if not accumulate:
        return gemm
    if scratch.shape != (m, n) or scratch.dtype != np.float32:
        return None
    ones, row_sums = np.ones(n, np.float32), np.empty(m, np.float32)

    def accumulate_into_c() -> None:
        np.matmul(c, ones, out=row_sums)
        total = np.add.reduce(row_sums)
        if total == total:  # no NaN in c (an inf - inf here is a false alarm: numpy's path is exact too)
            gemm()
        else:
            np.matmul(a, b, out=scratch)
            np.add(c, scratch, out=c)
    return accumulate_into_c


def _bound_call(found, a, la, b, lb, c, accumulate: bool) -> Callable[[], None]:
    fn, int_type = found
    (m, k), n = a.shape, b.shape[1]
    args = (ctypes.c_int(_ROW_MAJOR), ctypes.c_int(la[0]), ctypes.c_int(lb[0]),
            int_type(m), int_type(n), int_type(k), ctypes.c_float(1.0),
            ctypes.c_void_p(a.ctypes.data), int_type(la[1]), ctypes.c_void_p(b.ctypes.data), int_type(lb[1]),
            ctypes.c_float(1.0 if accumulate else 0.0), ctypes.c_void_p(c.ctypes.data),
            int_type(c.strides[0] // _F32))
    keep = (a, b, c)  # the call writes through raw pointers: keep the arrays alive with it

    def call(fn=fn, args=args, keep=keep) -> None:
        fn(*args)
    return call


def _operand(rng, rows: int, cols: int, flag: int) -> np.ndarray:
    """A seeded [rows, cols] operand stored the way `flag` says (transposed storage for _TRANS), with
    values of both signs over many binades so that a different summation order shows in the bits."""
    shape = (rows, cols) if flag == _NO_TRANS else (cols, rows)
    x = rng.random(shape, dtype=np.float32) - np.float32(0.5)
    x *= np.exp2(rng.integers(-8, 9, (shape[0], 1))).astype(np.float32)  # a binade per row: cheap to draw
    return x if flag == _NO_TRANS else x.T


def _probe(flag_a: int, flag_b: int, m: int, n: int, k: int, accumulate: bool) -> bool:
    """True when the direct call equals numpy's matmul (and add) bit for bit on seeded data."""
    rng = np.random.default_rng(20261206 + m * 7919 + n * 104729 + k)
    a, b = _operand(rng, m, k, flag_a), _operand(rng, k, n, flag_b)
    start = (rng.random((m, n), dtype=np.float32) - np.float32(0.5)) * np.float32(64)
    expect = np.matmul(a, b)
    if accumulate:
        expect = np.add(start, expect)
    got = start.copy()
    call = _bound_call(_numpy_sgemm(), a, _layout(a), b, _layout(b), got, accumulate)
    with np.errstate(all="ignore"):
        call()
    return np.array_equal(got.view(np.uint32), expect.view(np.uint32))
