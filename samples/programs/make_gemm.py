"""Writes gemm512.xasm: C[512,512] = A_T[512,512]^T @ B[512,512] in bf16 on xpu1.

Schedule (the comments in the .xasm repeat it):
  B is loaded once (4 k-tiles on dma0..dma3, signal s0). For each of the 4 M-tiles j, the stationary
  block A_T[:, j] (4 k-tiles, cast f32->bf16 in flight) is loaded into SBUF buffer j%2 on dma4/dma5
  (signal s1 / s5), so tile j+1 loads while PE multiplies tile j (double buffering; the load of tile
  j+2 waits s2 >= j+1, i.e. PE finished with tile j). PE accumulates 4 matmuls into PSUM bank j%2
  (start=1 on the first), then signals s2. ACT copies the bank to SBUF out buffer j%2 (s3), dma6/dma7
  store it (s4 / s6). A bank / out buffer is reused only after the copy / store of tile j-2 (waits on
  s3 / s4, s6). Each semaphore has one signalling queue: with one semaphore counting the loads of
  both queues, "s >= 1" could be met by the load of tile 1 finishing first (xpu sanitize's race check
  found that under other timings).
Run: python samples/programs/make_gemm.py > samples/programs/gemm512.xasm
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_model.arch import load_arch  # noqa: E402
from device_model.assembly import disassemble  # noqa: E402
from device_model.isa import AP, Instr  # noqa: E402
from device_model.program import Origin, Program, Tensor  # noqa: E402

S = 512
T = 128
F32 = 4
A_OFF, B_OFF, C_OFF = 0, S * S * F32, 2 * S * S * F32
SB_B = 0  # B k-tiles: 4 x 512 bf16 per partition = 4 KiB
SB_A = [4096, 4096 + 1024]  # A_T buffers: 4 k-tiles x 128 bf16 = 1 KiB each
SB_OUT = [8192, 8192 + 2048]  # f32 out buffers: 512 f32 = 2 KiB each
PSUM_BANK = 2048
LOADED = [1, 5]  # per A buffer: the semaphore its load queue (dma4 / dma5) signals
STORED = [4, 6]  # per out buffer: the semaphore its store queue (dma6 / dma7) signals


def sb(offset: int, dims, dtype: str) -> AP:
    return AP("sbuf", offset, tuple(dims), dtype, 0, T)


def build() -> Program:
    arch = load_arch("xpu1")
    ins: list[Instr] = []
    for kt in range(4):  # B[kt*128 + p, n] -> sbuf[p, SB_B + kt*512 + n]
        src = AP("hbm", B_OFF + kt * T * S * F32, ((S, T), (1, S)), "f32")
        ins.append(Instr(f"dma{kt}", "dma_copy", {"dst": sb(SB_B + kt * S * 2, [(1, S)], "bf16"), "src": src},
                         signals=((0, 1),), dbg=0, label=f"load_b{kt}" if kt == 0 else None))
    for j in range(4):
        buf = j % 2
        # A_T[kt*128+p, j*128+m] -> sbuf[p, SB_A[buf] + (kt*128 + m)*2]
        src = AP("hbm", A_OFF + j * T * F32, ((S, T), (T * S, 4), (1, T)), "f32")
        waits = ((2, j - 1),) if j >= 2 else ()
        ins.append(Instr(f"dma{4 + buf}", "dma_copy", {"dst": sb(SB_A[buf], [(T, 4), (1, T)], "bf16"), "src": src},
                         waits=waits, signals=((LOADED[buf], 1),), dbg=0, label=f"load_a{j}"))
    for j in range(4):
        buf = j % 2
        psum = AP("psum", buf * PSUM_BANK, ((1, S),), "f32", 0, T)
        for kt in range(4):
            waits = []
            if kt == 0:
                waits = [(0, 4), (LOADED[buf], j // 2 + 1)] + ([(3, j - 1)] if j >= 2 else [])
            stat = sb(SB_A[buf] + kt * T * 2, [(1, T)], "bf16")
            mov = sb(SB_B + kt * S * 2, [(1, S)], "bf16")
            ins.append(Instr("pe", "matmul", {"dst": psum, "stat": stat, "mov": mov},
                             {"start": 1 if kt == 0 else 0}, waits=tuple(waits),
                             signals=((2, 1),) if kt == 3 else (), dbg=1,
                             label=f"mm_tile{j}" if kt == 0 else None))
        waits = ((2, j + 1),) + (((STORED[buf], j // 2),) if j >= 2 else ())
        ins.append(Instr("act", "activate", {"dst": sb(SB_OUT[buf], [(1, S)], "f32"), "src": psum},
                         {"func": "copy", "mode": "exact"}, waits=waits, signals=((3, 1),), dbg=2,
                         label=f"evac{j}"))
        dst = AP("hbm", C_OFF + j * T * S * F32, ((S, T), (1, S)), "f32")
        ins.append(Instr(f"dma{6 + buf}", "dma_copy", {"dst": dst, "src": sb(SB_OUT[buf], [(1, S)], "f32")},
                         waits=((3, j + 1),), signals=((STORED[buf], 1),), dbg=3, label=f"store{j}"))
    tensors = [Tensor("a_t", "input", A_OFF, (S, S), "f32"), Tensor("b", "input", B_OFF, (S, S), "f32"),
               Tensor("c", "output", C_OFF, (S, S), "f32")]
    origins = [Origin("load", "DMA"), Origin("gemm", "MatMul"), Origin("evacuate", "Copy"),
               Origin("store", "DMA")]
    return Program(arch, ins, tensors, origins, [], {"title": "tiled 512x512x512 bf16 GEMM"})


if __name__ == "__main__":
    doc = __doc__.strip().splitlines()
    sys.stdout.write("".join(f"; {line}\n".replace("; \n", ";\n") for line in doc[:-1]))
    sys.stdout.write(disassemble(build()))
