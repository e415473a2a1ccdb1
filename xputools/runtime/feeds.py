"""Matching user feeds to a program's declared inputs, and deterministic random feeds."""
from __future__ import annotations

import numpy as np

from device_model.dtypes import np_dtype
from device_model.program import Program

from ..errors import UserError


def describe_tensors(tensors) -> str:
    return ", ".join(f"{t.name} {'x'.join(map(str, t.shape)) or 'scalar'} {np_dtype(t.dtype).name}"
                     for t in tensors)


def check_inputs(program: Program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds matched to the program's inputs by name, shape and dtype, or a UserError that lists
    what the program expects."""
    expected = program.inputs()

    def refused(problem: str) -> UserError:  # the listing is only built for an error
        return UserError(f"{problem}; the program expects: {describe_tensors(expected)}")
    names = {t.name for t in expected}
    unknown = sorted(set(feeds) - names)
    if unknown:
        raise refused(f"unknown input {', '.join(unknown)}")
    missing = sorted(names - set(feeds))
    if missing:
        raise refused(f"missing input {', '.join(missing)}")
    bound = {}
    for t in expected:
        arr = np.asarray(feeds[t.name])
        dt = np_dtype(t.dtype)
        if arr.shape != tuple(t.shape):
            raise refused(f"input {t.name}: shape {'x'.join(map(str, arr.shape)) or 'scalar'} given")
        if arr.dtype != dt and not (arr.dtype == np.bool_ and dt == np.uint8):
            raise refused(f"input {t.name}: dtype {arr.dtype} given")
        bound[t.name] = arr
    return bound


def random_inputs(program: Program, seed: int = 0, arch=None) -> dict[str, np.ndarray]:
    """Deterministic random feeds: standard normal for floats, small non-negative ints otherwise.

    The sizes are checked first (against the HBM of `arch`, default the program's, and against
    the limit an inputs .npz has), so a program declaring a huge input is refused before anything is built."""
    from .npz import MAX_NPZ_BYTES

    hbm = (arch or program.arch).hbm_bytes
    for t in program.inputs():
        if t.offset + t.nbytes > hbm:
            raise UserError(f"input {t.name}: bytes {t.offset}..{t.offset + t.nbytes} lie outside the {hbm}-byte HBM")
    total = sum(t.nbytes for t in program.inputs())
    if total > MAX_NPZ_BYTES:
        raise UserError(f"the program's inputs take {total} bytes; random inputs are limited to {MAX_NPZ_BYTES} "
                        f"(as an --inputs .npz is): {describe_tensors(program.inputs())}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in program.inputs():
        dt = np_dtype(t.dtype)
        if dt.kind == "f" or dt.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            feeds[t.name] = rng.standard_normal(t.shape).astype(np.float32).astype(dt)
        else:
            feeds[t.name] = rng.integers(0, 8, size=t.shape).astype(dt)
    return feeds
