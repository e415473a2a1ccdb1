"""Fast paths for small instructions give the same bits as the reference paths they replace: bf16
operands widened into the high halves of zeroed work arrays (`_f32_operand`)."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from device_model.arch import load_arch
from device_model.engines import _Ctx, _f32_operand, _reader, _widener
from device_model.isa import AP, Instr
from device_model.memory import Memory
from device_model.workspace import work_array

ARCH = load_arch()


def _memory() -> Memory:
    return Memory(ARCH, 1 << 16, 160 << 10, 8 << 10)


def _ap(off: int, parts: int, dims, dtype: str) -> AP:
    return AP("sbuf", off, tuple(dims), dtype, 0, parts)


def _operand(mem: Memory, ap: AP, shape: tuple[int, ...], name: str = "mov"):
    ins = Instr("pe", "matmul", {name: ap})
    return _f32_operand(_Ctx(ins, mem, ARCH), name, shape)


def _reference(mem: Memory, ap: AP, shape: tuple[int, ...]) -> np.ndarray:
    return _widener(ap.dtype)(_reader(mem.view(ap), shape)())


def test_bf16_operand_widens_every_bit_pattern_like_the_shift():
    """All 65,536 bf16 patterns (NaN payloads, infinities, subnormals, -0), contiguous and strided, in
    executors of different sizes sharing the work array (built small first, then large, then small),
    run interleaved with an f16 operand of the same name after random data was written everywhere."""
    mem = _memory()
    rng = np.random.default_rng(5)
    mem.sbuf[...] = rng.integers(0, 256, mem.sbuf.shape, dtype=np.uint8)
    patterns = rng.permutation(np.arange(1 << 16, dtype=np.uint16))
    work_array(mem, "mov:bf16", (1 << 17,), np.uint8)[...] = 0xFF  # whatever a buffer held before
    cases = [
        (_ap(0, 128, ((1, 512),), "bf16"), (128, 512)),                # contiguous rows
        (_ap(4096, 16, ((38, 8), (2, 8)), "bf16"), (16, 64)),          # gapped, like a conv's window
        (_ap(8192, 96, ((1, 1024),), "bf16"), (96, 1024)),             # larger: grows the shared buffer
        (_ap(20480, 3, ((1, 4), (8, 5)), "bf16"), (3, 20)),            # inner stride above outer
        (_ap(40960, 64, ((1, 300),), "f16"), (64, 300)),               # another dtype, same name
    ]
    ops = [_operand(mem, ap, shape) for ap, shape in cases]
    for trial in range(3):
        for (ap, shape), op in zip(cases, ops):
            view = mem.view(ap).view(np.uint16)
            view[...] = rng.choice(patterns, view.shape)
            if trial == 0 and ap.dtype == "bf16":
                view.reshape(-1)[:min(view.size, 1 << 16)] = patterns[:min(view.size, 1 << 16)]
            got, want = op(), _reference(mem, ap, shape)
            assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
            assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
    every = _ap(0, 128, ((1, 512),), "bf16")
    mem.view(every).view(np.uint16).reshape(-1)[:] = np.arange(1 << 16, dtype=np.uint16)
    got = ops[0]()
    want = mem.view(every).astype(np.float32)
    assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()


def test_bf16_operand_values_are_the_ml_dtypes_cast():
    mem = _memory()
    ap = _ap(0, 4, ((1, 6),), "bf16")
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3.5, 65504.0] * 3, np.float32)
    mem.view(ap)[...] = values.astype(ml_dtypes.bfloat16).reshape(4, 6)
    got = _operand(mem, ap, (4, 6))()
    want = values.astype(ml_dtypes.bfloat16).astype(np.float32).reshape(4, 6)
    assert got.view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
