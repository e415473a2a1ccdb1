"""Per-instruction cost model. All parameters come from the arch preset; docs/timing.md gives the
formulas with worked numbers."""
from __future__ import annotations

import math

from .arch import Arch
from .isa import AP, Instr, engine_kind


def contiguous_runs(ap: AP) -> int:
    """How many separate contiguous byte runs `ap` touches (a DMA pays an overhead per run)."""
    dims = list(ap.dims)
    run = 1  # elements per run
    while dims and dims[-1][0] == run:  # innermost dims that continue the current run
        run *= dims.pop()[1]
    total = ap.num_elements
    return max(1, total // run)


def dma_bytes(ins: Instr, arch: Arch) -> int:
    """Bytes a DMA descriptor costs on the fabric: payload plus a per-run overhead."""
    src, dst = ins.operands["src"], ins.operands["dst"]
    payload = max(src.nbytes, dst.nbytes)
    runs = max(contiguous_runs(src), contiguous_runs(dst))
    return payload + runs * arch.raw["dma"]["run_overhead_bytes"]


_SIDE_OPERANDS = ("scale_ap", "bias_ap", "s0_ap", "s1_ap", "idx", "accum")


def _vector_cycles(arch: Arch, kind: str, elements_per_partition: int) -> int:
    eng = arch.raw[kind]
    return eng["fixed_cycles"] + math.ceil(elements_per_partition / eng["elements_per_cycle"])


def pe_stream_cycles(ins: Instr, arch: Arch) -> int:
    """Cycles a PE instruction streams its moving operand: N columns at the dtype's rate (a
    transpose streams an identity with N = K)."""
    per_column = arch.raw["pe"]["cycles_per_column"]
    if ins.op == "matmul":
        mov = ins.operands["mov"]
        return mov.free_size * per_column.get(mov.dtype, 4)
    src = ins.operands["src"]
    k = src.pcount if src.partitioned else src.shape[0]
    return k * per_column.get(src.dtype, 4)


def pe_cycles(ins: Instr, arch: Arch, prev: Instr | None = None) -> int:
    """A matmul/transpose on the weight-stationary R x C array (docs/timing.md, "The PE"):

        stationary load (R, minus what hid behind the previous PE instruction's stream)
        + skew fill/drain (R + C - 2) + N x cycles_per_column + fixed_cycles (PSUM write-back)

    The next stationary tile loads while the previous instruction streams when it waits for
    nothing (its data is already there): back-to-back matmuls then hide up to R load cycles."""
    pe = arch.raw["pe"]
    rows, cols = pe["rows"], pe["cols"]
    load = rows
    if prev is not None and prev.op in ("matmul", "transpose") and not ins.waits:
        load -= min(rows, pe_stream_cycles(prev, arch))
    return load + rows + cols - 2 + pe_stream_cycles(ins, arch) + pe["fixed_cycles"]


def compute_cycles(ins: Instr, arch: Arch, prev: Instr | None = None) -> int:
    """Cycles a non-DMA instruction occupies its engine (DMA: see dma_bytes and the scheduler);
    `prev` is the instruction before it on the same engine (the PE hides stationary loads)."""
    op = ins.op
    if op == "nop":
        return 1
    kind = engine_kind(ins.engine)
    if op in ("matmul", "transpose"):
        return pe_cycles(ins, arch, prev)
    # vector-style engines: cost by the larger free size streamed per partition
    sizes = [ap.free_size for name, ap in ins.operands.items() if name not in _SIDE_OPERANDS]
    if op == "preduce":  # one partition-row at a time through the reduction tree
        src = ins.operands["src"]
        sizes = [src.free_size * max(1, math.ceil(math.log2(max(src.pcount, 2))))]
    if op == "gather":
        dst = ins.operands["dst"]
        sizes = [dst.free_size * 2]  # read the row, write the row
    return _vector_cycles(arch, kind, max(sizes) if sizes else 1)


def bytes_per_cycle(gbps: float, arch: Arch) -> float:
    return gbps / arch.clock_ghz  # GB/s over G cycles/s



def host_cycles(host_op, program, arch: Arch) -> int:
    """A host op: fixed hand-off cost plus copying its inputs and outputs over the host link."""
    nbytes = sum(program.tensor(n).nbytes for n in list(host_op.inputs) + list(host_op.outputs) if n)
    host = arch.raw["host"]
    return host["call_cycles"] + math.ceil(nbytes / bytes_per_cycle(host["gbps"], arch))
