"""Machine-code versions of the emulator's few hot elementwise loops, compiled by numba.

A loop that numpy can only express as a dozen passes over memory (a table gather followed by a
float64 polynomial and a bit test, say) runs as one pass here. Each kernel is an ordinary Python
function over numpy arrays and scalars, so its meaning is readable here and the tests can run it
uncompiled. `Kernel.compiled()` gives the machine-code version, built on first use with the
signature given (so a compile failure shows at once, not on some later call) and cached on disk
by numba beside this package's bytecode. It is None, and callers keep their numpy path, when numba
cannot be imported or compiling fails, or when the environment sets XPU_JIT=0. No kernel may change
a result: each caller's numpy path is its reference, and the tests compare both bit for bit.

Constants a kernel needs are passed as arguments, not read from module globals: numba would freeze
a global into the on-disk cache, and a cache made before the constant changed would keep the old one.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import ModuleType

_DISABLED_BY_ENV = "XPU_JIT"
Signature = Callable[[ModuleType], object]  # numba module -> the kernel's numba signature


class Kernel:
    """One loop, compiled lazily with numba (see the module docstring)."""

    def __init__(self, py_func: Callable, signature: Signature, helpers: tuple[Callable, ...] = ()):
        """helpers: plain functions py_func calls, compiled along with it."""
        self.py_func = py_func
        self.signature = signature
        self.helpers = helpers
        self.unavailable: str | None = None  # why compiled() is None, once it is
        self._lock = threading.Lock()
        self._state: tuple[Callable | None] | None = None  # (compiled or None,) once decided

    def compiled(self) -> Callable | None:
        """The compiled kernel, or None when it is not available (then use the numpy path)."""
        state = self._state
        if state is None:
            with self._lock:
                if self._state is None:
                    compiled, self.unavailable = _compile(self.py_func, self.signature, self.helpers)
                    self._state = (compiled,)
                state = self._state
        return state[0]


def enabled() -> bool:
    """False when the environment turns compiled kernels off (XPU_JIT=0)."""
    return os.environ.get(_DISABLED_BY_ENV, "1").strip() not in ("0", "false", "no", "off")


def _compile(py_func: Callable, signature: Signature,
             helpers: tuple[Callable, ...] = ()) -> tuple[Callable | None, str | None]:
    """(the compiled kernel, None), or (None, why not)."""
    if not enabled():
        return None, f"{_DISABLED_BY_ENV}=0 in the environment"
    try:
        import numba
        import numba.extending
    except Exception as exc:  # not installed, or an install that does not load on this machine
        return None, f"numba cannot be imported: {exc}"
    try:
        for helper in helpers:  # the same function object, now also callable from compiled code
            numba.extending.register_jitable(helper)
        # error_model="numpy": a float division by zero gives inf/NaN as in numpy, instead of raising
        return numba.njit(signature(numba), cache=True, nogil=True, boundscheck=False,
                          error_model="numpy")(py_func), None
    except Exception as exc:  # a numba release that cannot type the kernel: the numpy path still works
        return None, f"numba could not compile {py_func.__name__}: {exc}"
