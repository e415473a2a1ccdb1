"""Debugger overhead against the plain emulator, measured in the same run.

    python bench/bench_debug.py [--layers 6] [--repeat 3]

1. `continue` from the start to the end with one breakpoint (the last node's entry) and one
   watchpoint (the model's output tensor) set, against a plain run of the same loaded program:
   target <= 3x (the debugger also takes its periodic reverse-execution snapshots meanwhile); the
   cost of restarting (`start`: restoring the pages the previous run changed) is printed beside it.
2. `reverse-stepi` in the middle of a BERT-mini run against one forward `stepi`: the reverse step
   restores the nearest snapshot and replays at most one snapshot interval.
Models: the CNN sample and a BERT-mini-sized encoder (built by samples/build_samples.py into a
temp dir, as bench_compiler.py does).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def continue_overhead(label: str, prog, feeds: dict, repeat: int) -> None:
    from xputools.debug import Debugger
    from xputools.runtime import DeviceSession

    session = DeviceSession(prog)
    t_plain = best_of(lambda: session.run(feeds), repeat)
    dbg = Debugger(prog, feeds)
    last_node = prog.origins[prog.instrs[-1].dbg].name
    dbg.break_(f"node {last_node}")
    output = prog.outputs()[0].name
    dbg.watch(output)
    stops = []

    def continue_to_end():
        stops.clear()
        stop = dbg.cont()
        while stop.reason in ("breakpoint", "watchpoint"):
            stops.append(stop.reason)
            stop = dbg.cont()
        assert stop.reason == "exited", stop

    dbg.start()
    continue_to_end()  # so every timed restart undoes a whole run
    t_debug = t_restart = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        dbg.start()  # restart: restore the first snapshot (the pages the last run changed)
        t1 = time.perf_counter()
        continue_to_end()
        t2 = time.perf_counter()
        t_restart, t_debug = min(t_restart, t1 - t0), min(t_debug, t2 - t1)
    print(f"{label}: {len(prog.instrs)} instructions | plain run {t_plain * 1e3:.1f} ms | continue to the end with 1 "
          f"breakpoint + 1 watchpoint ({len(stops)} stops, {len(dbg.history.snaps)} snapshots, "
          f"{dbg.history.bytes / 2**20:.1f} MiB) {t_debug * 1e3:.1f} ms | ratio {t_debug / t_plain:.2f}x (target <= 3x)"
          f" | restart (start) {t_restart * 1e3:.1f} ms more")


def reverse_latency(label: str, prog, feeds: dict, repeat: int) -> None:
    from xputools.debug import Debugger

    dbg = Debugger(prog, feeds)
    pe_count = sum(1 for i in prog.instrs if i.engine == "pe")
    dbg.tbreak(f"pe:{pe_count // 2}")
    t0 = time.perf_counter()
    stop = dbg.run()
    t_to_middle = time.perf_counter() - t0
    assert stop.reason == "breakpoint", stop
    dbg.set_focus("pe")
    fwd, back = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        dbg.stepi()
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dbg.reverse_stepi()
        back.append(time.perf_counter() - t0)
    f, b = min(fwd), min(back)
    print(f"{label}: reverse-stepi at retired {dbg.point[0]} (cycle {dbg.machine.time}): {b * 1e3:.1f} ms vs "
          f"stepi {f * 1e3:.2f} ms = {b / f:.0f}x; replay bounded by the snapshot interval "
          f"({dbg.history.interval} instructions; {len(dbg.history.snaps)} snapshots, "
          f"{dbg.history.bytes / 2**20:.1f} MiB of pages, budget {dbg.history.budget >> 20} MiB); "
          f"run to the middle took {t_to_middle:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import build_samples

    from xputools.compiler.context import CompileOptions
    from xputools.compiler.driver import compile_model
    from xputools.runtime import read_npz

    cnn = compile_model(ROOT / "samples/cnn.onnx").program
    continue_overhead("cnn fp32", cnn, read_npz(ROOT / "samples/cnn.inputs.npz"), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        bert = Path(tmp) / "bert_mini.onnx"
        build_samples.build_bert_mini(bert, layers=args.layers)
        feeds = read_npz(bert.with_name("bert_mini.inputs.npz"))
        prog = compile_model(bert, CompileOptions(precision="bf16", shapes={k: v.shape for k, v in feeds.items()}))
        label = f"bert-mini{args.layers} bf16"
        continue_overhead(label, prog.program, feeds, args.repeat)
        reverse_latency(label, prog.program, feeds, args.repeat)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
