"""Elementwise ufunc calls on partition-strided views without numpy's operand buffering.

A view of a 128-partition operand is rows of a few hundred contiguous elements, far apart. From
numpy 2.3 the ufunc iterator copies such operands through its 8192-element buffers to hand its
inner loop longer runs; those copies cost more than the arithmetic (an add over [128, 512] f32
takes ~3x as long as on the same rows unbuffered). With a buffer size at most one row the iterator
leaves the operands in place and calls the loop once per row.

That changes which inner loop numpy runs on which elements (per row instead of per buffer, SIMD
body vs scalar head/tail), so it is only used where that cannot change a bit:
- subtract, divide, maximum, minimum: every element is the same IEEE operation or comparison on
  the same operands in the same order, in any loop;
- add, multiply: the same too, except that a scalar loop may be compiled with its operands
  swapped, which picks the other operand's NaN when *both* are NaN. So these run unbuffered only
  where no element can be NaN on both sides (callers check: a NaN-free scalar operand, or a result
  without NaN before anything else reads it).
Everything else (pow, fmod, compares, reductions, whose summation order follows the buffering)
keeps numpy's default. Without numpy's private ufunc-config hooks (numpy 1.x) nothing changes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

try:  # numpy >= 2: the error/buffer config is one context variable
    from numpy._core.umath import _extobj_contextvar, _make_extobj
except ImportError:  # pragma: no cover - numpy 1.x: its iterator does not buffer these operands
    _extobj_contextvar = _make_extobj = None

T = TypeVar("T")
_BUFSIZE = 16  # the smallest numpy accepts: at most one row of any real tile, so no copy

ORDER_FREE = frozenset({np.subtract, np.divide, np.maximum, np.minimum})
NAN_PAIR_SENSITIVE = frozenset({np.add, np.multiply})


def _quiet_unbuffered_config():
    """numpy's config object for 'warnings off, buffers of _BUFSIZE', or None where this numpy has no
    such hook (then everything keeps numpy's default)."""
    if _make_extobj is None:  # pragma: no cover - numpy 1.x
        return None
    try:
        return _make_extobj(all="ignore", bufsize=_BUFSIZE)
    except (TypeError, ValueError):  # pragma: no cover - a numpy whose private hook changed
        return None


_QUIET_UNBUFFERED = _quiet_unbuffered_config()
_enabled = True


@contextmanager
def numpy_default_buffering() -> Iterator[None]:
    """Executors built inside this block keep numpy's default buffering everywhere: the reference
    the unbuffered paths are tested against, bit for bit."""
    global _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = True


def quiet_unbuffered(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run with numpy's floating-point warnings off (as engines' `_quiet`) and ufunc buffers
    small enough that no operand is copied. Use only for the ufuncs this module's docstring allows."""
    if _QUIET_UNBUFFERED is None or not _enabled:
        return np.errstate(all="ignore")(fn)
    config, var = _QUIET_UNBUFFERED, _extobj_contextvar

    def unbuffered(*args):
        token = var.set(config)
        try:
            return fn(*args)
        finally:
            var.reset(token)
    return unbuffered


def may_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two views may share an element (exact for the small patterns instructions use; a
    problem numpy finds too hard counts as an overlap)."""
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 16))
    except Exception:  # numpy's TooHardError (its module moved between versions)
        return True
