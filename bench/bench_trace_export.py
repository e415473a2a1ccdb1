"""Trace export benchmark: xputools' TraceWriter against a naive Perfetto writer, same events, same run.

The event stream imitates a profiled transformer-like model on xpu1: 20 engine tracks (PE, ACT,
VEC, POOL and 16 DMA queues) with back-to-back instruction slices, ~50 distinct instruction names,
3-5 args per slice (pc, sizes, dtype, semaphore waits), the ONNX node each instruction comes from
(as the slice's source location: model file, node name, node index), DMA -> PE semaphore flows,
and three memory/bandwidth counters.

Writers, each timed (CPU time, best of --repeat interleaved runs) from creation to close():
  naive                 bench/naive_writer.py, one call per event: what the Perfetto docs show (a
                        packet per begin/end, plain strings, absolute timestamps, random 64-bit uuids)
  xputools add_slice    TraceWriter, the same calls one by one
  xputools add_slices   TraceWriter, the same slices handed over as per-track columns (built before
                        the timer starts, as the per-event lists are for the other two)
  xputools ..., gzip    add_slice into a .pftrace.gz
Prints slices/s and bytes/slice, the ratios to the naive writer against the targets (>= 4x
slices/s, <= 1/3 bytes/slice), and checks that all traces decode (trace_validate's reader) to the
same slices and counters and that ours have no problems; exit status 1 if not.

    python bench/bench_trace_export.py [--slices 300000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import heapq
import random
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from naive_writer import NaiveTraceWriter  # noqa: E402

from xputools.profile.perfetto_writer import TraceWriter  # noqa: E402
from xputools.profile.trace_validate import read_trace  # noqa: E402

ENGINES = ["PE", "ACT", "VEC", "POOL"] + [f"DMA q{i}" for i in range(16)]
OPS = {
    "PE": ["matmul bf16", "matmul fp8e4", "matmul f32", "matmul i8", "transpose", "load_weights bf16",
           "load_weights fp8e4", "matmul bf16 acc", "matmul fp8e4 acc", "matmul f32 acc"],
    "ACT": ["act.relu", "act.gelu", "act.silu", "act.exp", "act.tanh", "act.sigmoid", "act.copy",
            "act.rsqrt", "act.scale_bias", "act.softplus"],
    "VEC": ["tensor_tensor add", "tensor_tensor mul", "tensor_tensor sub", "tensor_tensor max",
            "tensor_scalar mul", "tensor_scalar add", "reduce sum", "reduce max", "select", "iota"],
    "POOL": ["pool max 2x2", "pool avg 2x2", "pool max 3x3", "pool avg global", "cast bf16", "cast f32",
             "memset", "shuffle", "gather", "scatter"],
    "DMA": ["dma hbm->sbuf", "dma sbuf->hbm", "dma sbuf->sbuf", "dma psum->sbuf", "dma hbm->hbm",
            "dma sbuf->psum", "dma hbm->sbuf strided", "dma sbuf->hbm strided", "dma host->hbm",
            "dma hbm->host"],
}
DTYPES = ["bf16", "fp8e4", "f32", "i8"]
NODE_KINDS = ["attn/q_proj/MatMul", "attn/k_proj/MatMul", "attn/v_proj/MatMul", "attn/Softmax",
              "attn/MatMul_qk", "attn/MatMul_av", "attn/o_proj/MatMul", "ln_1/LayerNormalization",
              "mlp/up_proj/MatMul", "mlp/gate_proj/MatMul", "mlp/act/Gelu", "mlp/down_proj/MatMul",
              "Add_residual"]
MODEL = "tiny-llm-12L.onnx"


def synthesize(n_slices: int, seed: int = 7):
    """Events in global start-time order: ("s", track, ts, dur, name, args, source, flow_out, flow_in)
    and ("c", counter, ts, value)."""
    rng = random.Random(seed)
    nodes = [f"/model/layers.{layer}/{kind}" for layer in range(12) for kind in NODE_KINDS]
    per_engine = n_slices // len(ENGINES)
    streams = []
    for e, engine in enumerate(ENGINES):
        kind = "DMA" if engine.startswith("DMA") else engine
        names = OPS[kind]
        t, pc, events = rng.randint(0, 500), 0, []
        for i in range(per_engine):
            node_index = min(len(nodes) - 1, i * len(nodes) // per_engine)  # layer by layer
            dur = rng.randint(60, 2500) if kind != "ACT" else rng.randint(40, 700)
            args = {"pc": pc}
            if kind == "DMA":
                args["bytes"] = rng.choice((2048, 4096, 8192, 65536, 131072, 262144))
            else:
                args["elements"] = rng.choice((128, 512, 2048, 16384, 65536))
                args["dtype"] = rng.choice(DTYPES)
            if rng.random() < 0.25:
                args["wait_ns"] = rng.randint(5, 3000)
                args["semaphore"] = rng.randint(0, 31)
            source = (MODEL, nodes[node_index], node_index)
            events.append(["s", e, t, dur, rng.choice(names), args, source, None, None])
            pc += 1
            t += dur + (rng.randint(0, 400) if rng.random() < 0.3 else 0)
        streams.append(events)
    # DMA -> PE semaphore flows: a DMA slice hands data to the first PE slice starting after it ends.
    pe = streams[0]
    pe_starts = [ev[2] for ev in pe]
    flow_id = 1
    for dma in streams[4:]:
        for ev in dma[::40]:
            j = _first_at_or_after(pe_starts, ev[2] + ev[3])
            if j is not None and pe[j][8] is None:
                ev[7], pe[j][8] = flow_id, flow_id
                flow_id += 1
    end = max(s[-1][2] + s[-1][3] for s in streams)
    counters = []
    for c in range(3):
        samples, t, level = [], 0, 0
        while t < end:
            level = max(0, level + rng.randint(-4096, 4096))
            samples.append(("c", c, t, level if c < 2 else round(rng.uniform(50, 400), 3)))
            t += rng.randint(500, 2500)
        counters.append(samples)
    return list(heapq.merge(*streams, *counters, key=lambda ev: ev[2]))


def _first_at_or_after(sorted_values, value):
    import bisect

    j = bisect.bisect_left(sorted_values, value)
    return j if j < len(sorted_values) else None


COUNTERS = [("SBUF used", "bytes"), ("PSUM used", "bytes"), ("HBM bandwidth GB/s", None)]


def write_trace(make_writer, events):
    """Write `events` one call per event; returns (cpu seconds, bytes on disk)."""
    t0 = time.process_time()
    writer = make_writer()
    tracks = [writer.add_track(name) for name in ENGINES]
    counters = [writer.add_counter_track(name, unit) for name, unit in COUNTERS]
    add_slice, add_counter = writer.add_slice, writer.add_counter
    for ev in events:
        if ev[0] == "s":
            _, t, ts, dur, name, args, source, flow_out, flow_in = ev
            add_slice(tracks[t], ts, dur, name, args, flow_out, flow_in, source)
        else:
            add_counter(counters[ev[1]], ev[2], ev[3])
    stats = writer.close()
    elapsed = time.process_time() - t0
    return elapsed, stats["bytes"] if isinstance(stats, dict) else stats.bytes


def to_columns(events):
    """The same slices as per-track columns (what a recorder holding a timeline would pass), and the
    counter samples."""
    rows = [[] for _ in ENGINES]
    samples = []
    for ev in events:
        (rows[ev[1]] if ev[0] == "s" else samples).append(ev)
    columns = []
    for track_rows in rows:
        _, _, ts, dur, names, args, sources, flow_out, flow_in = zip(*track_rows)
        keys = dict.fromkeys(key for row_args in args for key in row_args)
        arg_columns = {key: list(map(dict.get, args, repeat(key))) for key in keys}
        columns.append((ts, dur, names, arg_columns, sources, flow_out, flow_in))
    return columns, samples


def write_trace_columns(make_writer, columns, samples):
    """Write per-track columns with add_slices (and the counter samples one by one)."""
    t0 = time.process_time()
    writer = make_writer()
    tracks = [writer.add_track(name) for name in ENGINES]
    counters = [writer.add_counter_track(name, unit) for name, unit in COUNTERS]
    for track, (ts, dur, names, args, sources, flow_out, flow_in) in zip(tracks, columns):
        writer.add_slices(track, ts, dur, names, args, sources, flow_out, flow_in)
    add_counter = writer.add_counter
    for _, counter, ts, value in samples:
        add_counter(counters[counter], ts, value)
    stats = writer.close()
    return time.process_time() - t0, stats.bytes


def trace_content(path):
    """The model read back, and its slices and counters in a comparable form."""
    model = read_trace(path)
    names = {uuid: t.name for uuid, t in model.tracks.items()}
    slices = sorted((names[s.track], s.ts, s.dur, s.name, tuple(sorted(s.args.items())), s.source)
                    for s in model.slices)
    counters = sorted((names[c.track], c.ts, c.value) for c in model.counters)
    return model, (slices, counters)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    opts = parser.parse_args(argv)

    events = synthesize(opts.slices, opts.seed)
    n_slices = sum(1 for ev in events if ev[0] == "s")
    n_counters = len(events) - n_slices
    n_flows = sum(1 for ev in events if ev[0] == "s" and ev[7] is not None)
    print(f"events: {n_slices} slices on {len(ENGINES)} tracks, {n_counters} counter samples, "
          f"{n_flows} flows")

    columns = to_columns(events)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.pftrace" for name in ("naive", "ours", "columns")}
        meta = {"model": MODEL}
        runs = {
            "naive": lambda: write_trace(lambda: NaiveTraceWriter(paths["naive"], meta), events),
            "ours": lambda: write_trace(lambda: TraceWriter(paths["ours"], metadata=meta), events),
            "columns": lambda: write_trace_columns(lambda: TraceWriter(paths["columns"], metadata=meta),
                                                   *columns),
        }
        best = {name: (float("inf"), 0) for name in runs}
        for _ in range(opts.repeat):   # interleaved, so load changes hit every writer alike
            for name, run in runs.items():
                seconds, size = run()
                best[name] = (min(best[name][0], seconds), size)
        gz_seconds, gz_bytes = write_trace(lambda: TraceWriter(Path(tmp) / "ours.pftrace.gz", metadata=meta),
                                           events)

        naive_rate = n_slices / best["naive"][0]
        naive_bps = best["naive"][1] / n_slices
        labels = {"naive": "naive (packet/event)", "ours": "xputools add_slice",
                  "columns": "xputools add_slices"}
        print(f"{'writer':<24}{'slices/s':>11}{'bytes/slice':>13}{'MB':>7}{'speed':>8}{'size':>8}")
        for name, (seconds, size) in best.items():
            rate = n_slices / seconds
            print(f"{labels[name]:<24}{rate:>11,.0f}{size / n_slices:>13.1f}{size / 1e6:>7.1f}"
                  f"{rate / naive_rate:>7.2f}x{size / n_slices / naive_bps:>8.3f}")
        print(f"{'xputools add_slice, gzip':<24}{n_slices / gz_seconds:>11,.0f}{gz_bytes / n_slices:>13.1f}"
              f"{gz_bytes / 1e6:>7.1f}{n_slices / gz_seconds / naive_rate:>7.2f}x"
              f"{gz_bytes / n_slices / naive_bps:>8.3f}")
        print("targets: speed >= 4x the naive writer, size <= 0.333 of its bytes/slice (uncompressed)")
        for name in ("ours", "columns"):
            speed = n_slices / best[name][0] / naive_rate
            size = best[name][1] / n_slices / naive_bps
            print(f"  {labels[name]}: speed {'met' if speed >= 4 else 'NOT met'} ({speed:.2f}x), "
                  f"size {'met' if size <= 1 / 3 else 'NOT met'} ({size:.3f})")

        t0 = time.process_time()
        ours_model, ours = trace_content(paths["ours"])
        read_s = time.process_time() - t0
        columns_model, from_columns = trace_content(paths["columns"])
        _, naive = trace_content(paths["naive"])
        problems = ours_model.problems + columns_model.problems
        same = ours == naive == from_columns
        print(f"read back: {len(ours_model.slices)} slices, {len(ours_model.flows)} flows, "
              f"{len(ours_model.counters)} counter samples in {read_s:.1f} s CPU; "
              f"problems: {len(problems)}; same slices and counters in all three traces: {same}")
        for problem in problems[:5]:
            print("  problem:", problem)
        ok = not problems and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
