"""Consecutive accumulating matmuls that share their moving operand, as one BLAS product.

An LSTM step accumulates the recurrent term of its four gates with four matmuls in a row: the same
h [K, N] as moving operand, four weight blocks [K, M] side by side in SBUF, four PSUM blocks [M, N]
side by side. On tiles this small each matmul costs its fixed numpy/BLAS overhead. When nothing runs
between them (a replay without observers: machine._replay_bare), the four products are one product
of the blocks side by side, [K, G*M]^T [K, N], whose rows g*M..(g+1)*M are block g's product -- if
BLAS sums each element in the same order at both sizes. That is probed once per layout against the G
separate products (np.matmul, as each instruction's executor computes it) on seeded data that shows
a different order in the bits; a layout whose probe differs keeps the separate executors. The PSUM
adds are each block's own (narrow.column_calls, or numpy's add), in the same order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from .isa import AP, Instr, attr
from .memory import Memory
from .narrow import _fill as narrow_fill
from .narrow import column_calls
from .workspace import work_array

_F32 = np.dtype(np.float32)
_PROBED: dict[tuple, bool] = {}


def _plain_row(ap: AP, space: str) -> tuple[int, int] | None:
    """(offset, free elements) of an f32 pattern that is one contiguous run per partition, else None."""
    if ap.space != space or ap.dtype != "f32" or len(ap.dims) != 1 or ap.dims[0][0] != 1:
        return None
    return ap.offset, ap.dims[0][1]


def batched_matmul(instrs: Sequence[Instr], mem: Memory, pe_rows: int) -> Callable[[], None] | None:
    """One executor with the memory effect of running `instrs` (consecutive f32 matmuls with start=0)
    one after the other, or None when they do not form the pattern above (same mov; stats and dsts
    G equal blocks side by side in the same partitions) or the probe differs."""
    if len(instrs) < 2 or any(i.op != "matmul" or attr(i, "start") != 0 for i in instrs):
        return None
    mov_ap = instrs[0].operands.get("mov")
    stats = [i.operands.get("stat") for i in instrs]
    dsts = [i.operands.get("dst") for i in instrs]
    if mov_ap is None or any(i.operands.get("mov") != mov_ap for i in instrs) or None in stats or None in dsts:
        return None
    mov_row, stat_rows, dst_rows = _plain_row(mov_ap, "sbuf"), [_plain_row(a, "sbuf") for a in stats], \
        [_plain_row(a, "psum") for a in dsts]
    if mov_row is None or None in stat_rows or None in dst_rows:
        return None
    k, n = mov_ap.pcount, mov_row[1]
    m = stat_rows[0][1]
    g = len(instrs)
    if (any(a.pstart != stats[0].pstart or a.pcount != k for a in stats) or k > pe_rows
            or any(a.pstart != dsts[0].pstart or a.pcount != m for a in dsts)
            or any(row != (stat_rows[0][0] + j * m * 4, m) for j, row in enumerate(stat_rows))
            or any(row != (dst_rows[0][0] + j * n * 4, n) for j, row in enumerate(dst_rows))):
        return None
    stat_all_ap = AP("sbuf", stat_rows[0][0], ((1, g * m),), "f32", stats[0].pstart, k)
    dst_all_ap = AP("psum", dst_rows[0][0], ((1, g * n),), "f32", dsts[0].pstart, m)
    if any(mem.check(ap) for ap in (stat_all_ap, dst_all_ap, mov_ap)):
        return None
    stat_all, mov = mem.view(stat_all_ap), mem.view(mov_ap)
    dst_all = mem.view(dst_all_ap)
    if np.shares_memory(stat_all, mov) or not _agrees(stat_all, mov, g):
        return None
    product = work_array(mem, "matmul:batched", (g * m, n), _F32)
    stat_t, matmul, add_reduce, flat = stat_all.T, np.matmul, np.add.reduce, product.reshape(-1)
    blocks = []  # each instruction's own product and PSUM add, for a product holding a NaN
    for j in range(g):
        rows, cols = slice(j * m, (j + 1) * m), slice(j * n, (j + 1) * n)
        dst_j, product_j = dst_all[:, cols], product[rows]
        add = column_calls(np.add, (dst_j, product_j), dst_j)
        if add is None:
            add = partial(np.add, dst_j, product_j, out=dst_j)
        blocks.append((stat_t[rows], product_j, add))

    def one_by_one() -> None:
        for stat_j, product_j, add in blocks:
            matmul(stat_j, mov, product_j)
            add()
    dst3, product3 = dst_all.reshape(m, g, n), product.reshape(g, m, n).transpose(1, 0, 2)
    add_all = (lambda: np.add(dst3, product3, out=dst3)) if _adds_agree(dst3, product3) else None

    def matmul_batched() -> None:
        matmul(stat_t, mov, product)
        total = add_reduce(flat)
        if total != total or add_all is None:  # a NaN (or inf - inf): its payload may come from another
            one_by_one()                        # element at another size, so each instruction's own way
        else:
            add_all()
    return matmul_batched


def _adds_agree(dst3: np.ndarray, product3: np.ndarray) -> bool:
    """Whether np.add over all blocks at once ([M, G, N] with the product's blocks transposed in)
    gives each block's own add (np.add of [M, N] arrays, as each instruction's executor makes it, or
    column calls probed equal to it) bit for bit: probed on NaN-laden values laid out like these (a
    NaN pair's payload is the only thing the loop can change in an add)."""
    key = ("add", dst3.shape, dst3.strides, product3.strides)
    if key not in _PROBED:
        _PROBED[key] = _probe_adds(dst3, product3)
    return _PROBED[key]


def _probe_adds(dst3: np.ndarray, product3: np.ndarray) -> bool:
    rng = np.random.default_rng(20261206)
    m, g, n = dst3.shape
    for filling in ("nan pairs", "mixed"):
        d = _like(dst3, 0)  # PSUM's strides
        narrow_fill(rng, d, filling, 0)
        p = np.empty((g, m, n), _F32)  # the product work array
        narrow_fill(rng, p, filling, 1)
        blocks = []
        with np.errstate(all="ignore"):
            for j in range(g):  # as each instruction: its PSUM block += its own [M, N] product array
                dst_j = _like(dst3[:, j], d[:, j])
                np.add(dst_j, p[j].copy(), out=dst_j)
                blocks.append(dst_j)
            np.add(d, p.transpose(1, 0, 2), out=d)
        if any(not np.array_equal(b.view(np.uint32), d[:, j].view(np.uint32)) for j, b in enumerate(blocks)):
            return False
    return True


def _agrees(stat_all: np.ndarray, mov: np.ndarray, g: int) -> bool:
    key = (stat_all.shape, stat_all.strides, mov.shape, mov.strides, g)
    if key not in _PROBED:
        _PROBED[key] = _probe(stat_all, mov, g)
    return _PROBED[key]


def _like(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A fresh array with x's shape and strides holding `values`."""
    extent = sum((d - 1) * s for d, s in zip(x.shape, x.strides)) + x.itemsize
    out = np.lib.stride_tricks.as_strided(np.empty(extent // 4 + 1, _F32), x.shape, x.strides)
    out[...] = values
    return out


def _probe(stat_all: np.ndarray, mov: np.ndarray, g: int) -> bool:
    """True when the batched product equals each block's own product bit for bit, on seeded operands
    of both signs over many binades (so that another summation order shows) laid out like the real ones."""
    rng = np.random.default_rng(20261206 + stat_all.shape[1] * 31 + mov.shape[1])
    k, gm = stat_all.shape
    m = gm // g
    for _ in range(2):
        s = (rng.random((k, gm), dtype=np.float32) - np.float32(0.5)) * np.exp2(
            rng.integers(-12, 13, (k, gm))).astype(np.float32)
        x = (rng.random(mov.shape, dtype=np.float32) - np.float32(0.5)) * np.exp2(
            rng.integers(-12, 13, mov.shape)).astype(np.float32)
        s_like, x_like = _like(stat_all, s), _like(mov, x)
        batched = np.matmul(s_like.T, x_like)
        for j in range(g):
            alone = np.empty((m, mov.shape[1]), _F32)
            np.matmul(s_like[:, j * m:(j + 1) * m].T, x_like, out=alone)
            if not np.array_equal(alone.view(np.uint32), batched[j * m:(j + 1) * m].view(np.uint32)):
                return False
    return True
