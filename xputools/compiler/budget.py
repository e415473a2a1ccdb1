"""Up-front size of the work a compile would do, checked against the arch before lowering, so a
model bound to huge shapes is refused in a second with the limit it breaks instead of compiling for
minutes."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CompileError

HBM_ALIGN = 64  # the compiler's HBM allocator rounds every tensor up to this
ELEMENTS_PER_TILE = 128 * 512  # one kernel instruction covers at most about [partitions, max_n]
INSTRUCTIONS_PER_TILE = 4  # load, compute, (evacuate), store
MAX_INSTRUCTIONS = 5_000_000  # the .xpu code section (512 MiB) holds about this many


@dataclass
class WorkEstimate:
    hbm_bytes: int  # every graph value lives in HBM (see the README), constants included
    instructions: int  # rough: tiles of every node's outputs times a few instructions per tile


def estimate_work(graph) -> WorkEstimate:
    """Bytes of HBM and (roughly) instructions that lowering `graph` (static shapes) will need."""
    hbm = 0
    for v in graph.values.values():
        if v.shape is not None and v.dtype is not None:
            hbm += -(-max(v.nbytes, 1) // HBM_ALIGN) * HBM_ALIGN
    instructions = 0
    for node in graph.nodes:
        for o in node.outputs:
            v = graph.values.get(o) if o else None
            if v is not None and v.shape is not None:
                instructions += INSTRUCTIONS_PER_TILE * -(-v.size // ELEMENTS_PER_TILE)
    return WorkEstimate(hbm, instructions)


def check_work(graph, arch) -> WorkEstimate:
    """The estimate, or a CompileError naming the limit it breaks."""
    est = estimate_work(graph)
    if est.hbm_bytes > arch.hbm_bytes:
        raise CompileError(f"the model needs about {_gib(est.hbm_bytes)} of HBM for its tensors at these shapes; "
                           f"arch {arch.name} has {_gib(arch.hbm_bytes)}: use smaller --shape values")
    if est.instructions > MAX_INSTRUCTIONS:
        raise CompileError(f"the model would take about {est.instructions:,} instructions at these shapes, more "
                           f"than the {MAX_INSTRUCTIONS:,} a program can hold: use smaller --shape values")
    return est


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**28 else f"{n / 2**20:.3g} MiB"
