"""Comparing two emulator memories byte for byte: the oracle check of the executor fast-path tests."""
from __future__ import annotations

import numpy as np

from device_model.memory import Memory


def assert_same_memory(a: Memory, b: Memory, what: str) -> None:
    """Raise AssertionError naming `what`, the space and the first differing places unless HBM, SBUF and
    PSUM of `a` and `b` hold the same bytes."""
    for name in ("hbm", "sbuf", "psum"):
        x, y = getattr(a, name), getattr(b, name)
        if not np.array_equal(x, y):
            raise AssertionError(f"{what}: {name} differs at {np.argwhere(x != y)[:3].tolist()}")
