"""`record`: one timed run on the device with a Recorder attached, then the trace, the profile
database and the summary's data.

The Recorder only appends a small record (a NamedTuple, `Completion` / `Signal`) per completed
instruction and per semaphore signal (about 100 bytes each, far less than the program itself holds
per instruction); everything else is computed after the run. A run that hangs or faults still
yields a trace and a database of what ran, marked with the reason.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from device_model.machine import HangError, MachineError
from device_model.program import Program

from .. import __version__
from ..errors import UserError
from .analysis import Capture, Completion, Profile, Signal, build_profile
from .database import file_sha256, write_database
from .perfetto_writer import TraceStats
from .trace_export import export_trace


class Recorder:
    """Machine observer collecting completed instructions and semaphore signals."""

    def __init__(self):
        self.completed: list[Completion] = []
        self.signals: list[Signal] = []
        self.hang = None
        self._done = self.completed.append
        self._signal = self.signals.append

    def on_complete(self, ev) -> None:
        self._done(Completion(ev.engine, ev.index, ev.issue, ev.end, ev.wait))

    def on_semaphore(self, ev) -> None:
        self._signal(ev)  # a SemaphoreEvent is already the small immutable record kept

    def on_hang(self, report) -> None:
        self.hang = report


@dataclass
class RecordResult:
    profile: Profile
    trace_path: Path
    db_path: Path
    trace: TraceStats
    dropped: int            # instruction slices left out of the trace by max_slices
    error: Exception | None = None   # the HangError / MachineError that stopped the run

    @property
    def status(self) -> str:
        return self.profile.meta["status"]

    def raise_for_status(self) -> None:
        if self.error is not None:
            raise self.error


def parse_layer_window(spec: str, origins) -> tuple[int, int]:
    """`FROM:TO` (both included; either side a node index in program order or a node name, empty =
    open), or a single index / name -> (first, last) origin index."""
    names = [o.name for o in origins]
    if not names:
        raise UserError("--layers: the program carries no layer (ONNX node) information")

    def resolve(text: str, default: int) -> int:
        text = text.strip()
        if not text:
            return default
        if text.lstrip("-").isdigit():
            i = int(text)
            if not 0 <= i < len(names):
                raise UserError(f"--layers: index {i} is out of range (the program has {len(names)} "
                                f"layers, 0..{len(names) - 1})")
            return i
        if text in names:
            return names.index(text)
        close = difflib.get_close_matches(text, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; layers are {names[0]} .. {names[-1]}"
        raise UserError(f"--layers: no layer named {text!r}{hint}")

    def resolvable(text: str) -> bool:
        text = text.strip()
        return not text or text in names or text.isdigit()

    if ":" in spec and spec not in names:
        # node names may contain ':'; take the first split whose two sides both name something
        splits = [i for i, ch in enumerate(spec) if ch == ":"]
        cut = next((i for i in splits if resolvable(spec[:i]) and resolvable(spec[i + 1:])), splits[0])
        first, last = resolve(spec[:cut], 0), resolve(spec[cut + 1:], len(names) - 1)
    else:
        first = last = resolve(spec, 0)
    if first > last:
        raise UserError(f"--layers {spec}: {names[first]} (#{first}) comes after {names[last]} (#{last}) "
                        f"in program order")
    return first, last


def arch_numbers(arch) -> dict:
    """The preset numbers summary/diff need, stored with the profile (the preset may be a file the
    reader does not have)."""
    from device_model.arch import MATMUL_DTYPES

    return {
        "hbm_gbps": arch.hbm_bytes_per_second() / 1e9,
        "peak_flops": {d: arch.peak_flops(d) for d in MATMUL_DTYPES},
        "dma_latency_cycles": arch.raw["dma"]["latency_cycles"],
        "dma_queues": arch.dma_queues,
        "sbuf_bytes": arch.partitions * arch.sbuf_bytes,
        "psum_bytes": arch.raw["psum"]["partitions"] * arch.psum_bytes,
        "host_call_cycles": arch.raw["host"]["call_cycles"],
        "host_gbps": arch.raw["host"]["gbps"],
        "pe": {k: arch.raw["pe"][k] for k in ("rows", "cols", "max_n")},
        "dma_run_overhead_bytes": arch.raw["dma"]["run_overhead_bytes"],
    }


def guess_batch(program: Program, model=None) -> int | None:
    """The inferences per run, when the model says so: its inputs' batch dimension as bound (the
    first symbolic dimension, see sweep.batch_axes), or 1 when every input has a fixed leading
    dimension of 1. Otherwise None: a fixed [4096, 4096] input does not say whether it is 4096
    inferences or one (pass --batch)."""
    if model is None:
        return None
    from .sweep import batch_axes

    shapes = {t.name: tuple(t.shape) for t in program.inputs()}
    for name, axis in batch_axes(model).items():
        if axis < len(shapes.get(name, ())):
            return int(shapes[name][axis])
    leading = [shapes[vi.name][0] for vi in model.graph.input if shapes.get(vi.name)]
    return 1 if leading and all(d == 1 for d in leading) else None


def run_with_recorder(program: Program, feeds: dict, arch=None,
                      observers=()) -> tuple[Capture, Exception | None]:
    """Run once with a Recorder (plus `observers`); a hang or fault ends the capture, not the call."""
    from ..runtime import run_program

    recorder = Recorder()
    error = None
    try:
        out = run_program(program, feeds, arch=arch, observers=[recorder, *observers])
        cycles, status, problem = out.result.cycles, "complete", ""
    except HangError as exc:
        error = exc
        cycles, status, problem = exc.report.time, "hang", exc.report.text()
    except MachineError as exc:
        error = exc
        cycles = max((c.end for c in recorder.completed), default=0)
        status, problem = "fault", str(exc)
    return Capture(recorder.completed, recorder.signals, cycles, status, problem), error


def record(program: Program, feeds: dict, trace_path: str | Path, db_path: str | Path | None = None, *,
           source: str = "", batch: int | None = None, flows: bool = False, layers: str | None = None,
           max_slices: int | None = None, gzip: bool | None = None, observers=(), force: bool = True,
           inputs=()) -> RecordResult:
    """Run `program` once on `feeds` with a Recorder; write the trace and the profile database.

    Both files are written whole or not at all (device_model.fileio): an existing file is replaced
    only with `force`, a path in `inputs` is never written over (OutputError), and a failure (disk
    full, no permission) leaves nothing behind. A run that hangs or faults still writes both; the
    result carries the error (`raise_for_status()`).
    """
    from device_model.fileio import atomic_output, check_output

    from .database import db_path_for

    trace_path = Path(trace_path)
    db_path = Path(db_path) if db_path is not None else db_path_for(trace_path)
    inputs = [p for p in (*inputs, source) if p]
    check_output(trace_path, force=force, inputs=inputs)
    check_output(db_path, force=force, inputs=[*inputs, trace_path])
    if gzip is None:
        gzip = trace_path.name.endswith(".gz")
    arch = program.arch
    window = parse_layer_window(layers, program.origins) if layers else None
    capture, error = run_with_recorder(program, feeds, arch, observers)
    meta = {
        # named after the file the user gave, not the ONNX graph ("main_graph", "torch_jit")
        "model": Path(source).stem if source else (program.meta.get("model") or "program"),
        "graph": program.meta.get("model", ""),
        "source": Path(source).name if source else "",
        "arch": arch.name, "arch_hash": arch.hash, "clock_ghz": arch.clock_ghz,
        "precision": program.meta.get("precision", ""),
        "batch": int(batch) if batch else None,
        "layers": layers or "", "tool": f"xputools {__version__}",
        "arch_numbers": arch_numbers(arch),
    }
    if window is not None:
        meta["window_layers"] = list(window)
    profile = build_profile(program, arch, capture, meta, window)
    trace_meta = {k: profile.meta[k] for k in ("model", "arch", "arch_hash", "precision", "clock_ghz",
                                               "batch", "cycles", "status", "source")}
    trace_meta["batch"] = trace_meta["batch"] or "unknown"
    trace_meta.update(profile_db=db_path.name, flows=flows, layers=layers or "all",
                      instructions=len(profile.selected))
    with atomic_output(trace_path, force=force, inputs=inputs) as tmp_trace:
        stats, plan = export_trace(profile, tmp_trace, flows=flows, max_slices=max_slices, gzip=gzip,
                                   metadata=trace_meta)
        write_database(db_path, profile, {
            "trace": trace_path.name, "trace_sha256": file_sha256(tmp_trace), "trace_bytes": stats.bytes,
            "trace_slices": stats.slices, "trace_dropped_slices": plan.dropped,
            "max_slices": max_slices if max_slices is not None else "", "flows": flows,
            "trace_flows": stats.flows}, force=force, inputs=[*inputs, trace_path])
    return RecordResult(profile, trace_path, db_path, stats, plan.dropped, error)
