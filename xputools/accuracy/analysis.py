"""`compare`: every ONNX tensor of a model, device against reference, with accumulated and local error,
and the culprits: the nodes that introduce the error.

Per input sample it runs the program on the device twice and reads every tap as it arrives (values
are compared and dropped, never all kept):
- a free run: the device value of each tensor against the reference (accumulated error);
- a teacher-forced run: at each tap point the device value is read (this node computed at device
  precision from reference inputs: local error) and replaced by the reference value before any
  consumer reads it (`runtime.taps.TapHook`).
Then, for the `recover_top` worst nodes by local error, one compile with that node alone kept in fp32
and one run per sample: the graph outputs' SQNR then (`recovered_sqnr_db`) is how much of the output's
error disappears when that node runs exactly. (Forcing the node's output to the reference instead
would also erase the error it inherits.)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from device_model.machine import MachineError

from ..compiler.context import CompileOptions
from ..compiler.driver import compile_model
from ..compiler.frontend import load_model
from ..compiler.keepfile import exact_pattern
from ..compiler.outputs import onnx_outputs
from ..errors import UserError
from ..runtime import DeviceSession, check_inputs, random_inputs
from ..runtime.taps import TapHook
from .forked import Forked
from .graphinfo import TensorInfo, graph_tensors
from .metrics import HIST_EDGES, MAX_SQNR_DB, error_histogram, mean, rtol_for, tensor_metrics, worst
from .reference import DEFAULT_BUDGET, INPUT_PREFIX, OrtReference, QdqDerivedReference, SavedRunReference

SCHEMA = "xputools.acc.compare/1"
FORK_MIN_SECONDS = 0.15
# Emulator run-time estimate, measured with the schedule replay (BERT-mini, ResNet-style, YOLO-style, CRNN
# and the samples: 0.3-1.2e9 operand elements per second, a few microseconds per instruction)
ELEMENTS_PER_SECOND = 1e9
SECONDS_PER_INSTRUCTION = 5e-6
Progress = Callable[[str, int, int], None]


class Analysis:
    """A compiled model with its device session and reference, ready to run samples on."""

    def __init__(self, model, options: CompileOptions | None = None, against: str | Path | None = None,
                 budget_bytes: int = DEFAULT_BUDGET, reference_model=None):
        """`reference_model`: another ONNX model for ORT to run (e.g. the float model behind a QDQ
        model); its tensors are matched by name."""
        self.options = options or CompileOptions()
        self.model_label = str(model) if isinstance(model, (str, Path)) else "<model>"
        self.model = load_model(model)
        self.compiled = compile_model(self.model, self.options)
        self.program = self.compiled.program
        self.tensors = graph_tensors(self.model, self.compiled.graph, self.program)
        self.by_name = {t.name: t for t in self.tensors}
        self.by_tap = {t.tap.name: t for t in self.tensors if t.compared}
        self.output_names = [o.name for o in self.model.graph.output]
        self.session = DeviceSession(self.program)
        self.device_runs = 0
        self.cycles = 0
        self.compare_doc: dict | None = None  # the last compare document bisect made on it
        compared = [t.name for t in self.tensors if t.compared]
        wanted = list(dict.fromkeys(compared + self.output_names))
        if against is not None:
            self.reference = SavedRunReference(against)
        else:
            nbytes = {t.name: int(np.prod(t.shape or (1,))) * 8 for t in self.tensors}
            ref_model = self.model if reference_model is None else load_model(reference_model)
            produced = {o for n in ref_model.graph.node for o in n.output} | {o.name for o in ref_model.graph.output}
            # a separate reference model is matched by name, QDQ tensors derived from its float ones
            names = [n for n in wanted if n in produced] if reference_model is None else sorted(produced)
            self.reference = OrtReference(ref_model, names, nbytes, budget_bytes)
            if reference_model is not None:
                self.reference = QdqDerivedReference(self.reference, self.model)
        self.rtol = rtol_for(self.options.precision)

    # ---- runs -----------------------------------------------------------------------------
    def worth_forking(self) -> bool:
        """Whether a device run takes long enough to pay for forking a process (~0.1 s): estimated
        from the elements its instructions touch and their count (measured emulator rates)."""
        work = sum(ap.num_elements for ins in self.program.instrs for ap in ins.operands.values())
        return work / ELEMENTS_PER_SECOND + len(self.program.instrs) * SECONDS_PER_INSTRUCTION >= FORK_MIN_SECONDS

    def _run(self, feeds: dict, hook_fn=None, names: set[str] | None = None) -> dict[str, np.ndarray]:
        observers = [TapHook(self.session.machine, self.program.taps, hook_fn, names)] if hook_fn else []
        self.device_runs += 1
        out = self.session.run(feeds, observers=observers)
        self.cycles = out.result.cycles
        return onnx_outputs(self.program, out.outputs)

    def reference_feeds(self, feeds: dict) -> dict:
        return {**self.options.const_inputs, **feeds}

    def free_run(self, feeds: dict, on_value=None) -> dict[str, np.ndarray]:
        """Device outputs of one run; `on_value(tensor_info, raw_device_value)` sees every tap."""
        def hook(tap, value):
            info = self.by_tap.get(tap.name)
            if on_value is not None and info is not None:
                on_value(info, value)
        return self._run(feeds, hook)

    def teacher_forced_run(self, feeds: dict, on_local, names: set[str] | None = None) -> dict[str, np.ndarray]:
        """One run where each tap in `names` (default: all compared tensors) is replaced by the
        reference value; `on_local(name, device_value, ref)` sees the device's value first."""
        ref = self.reference

        def hook(tap, value):
            info = self.by_tap.get(tap.name)
            if info is None or info.name not in ref:
                return None
            r = ref.get(info.name)
            on_local(info.name, info.from_device(value), info.comparable(r))
            return info.to_device(r)
        wanted = {t.tap.name for t in self.tensors if t.compared and (names is None or t.name in names)}
        return self._run(feeds, hook, wanted)

    def output_metrics(self, outputs: dict[str, np.ndarray], names: list[str] | None = None) -> dict:
        return {n: tensor_metrics(outputs[n], self.reference.get(n), self.rtol)
                for n in (names or self.output_names) if n in outputs and n in self.reference}


def load_samples(path: str | Path | None, program, inputs: dict | None = None, seed: int | None = None) -> list[dict]:
    """Input samples: `inputs` (one sample), a .npz holding one sample (or several, with a leading
    sample axis on every input), a directory of such .npz files, or random inputs from `seed`."""
    from ..runtime import read_npz

    if inputs is not None:
        return [inputs]
    if path is None:
        return [random_inputs(program, 0 if seed is None else seed)]
    path = Path(path)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no .npz files in the directory")
    expected = {t.name: tuple(t.shape) for t in program.inputs()}
    samples: list[dict] = []
    for f in files:
        data = read_npz(f)
        batched = expected and all(k in data and data[k].shape[1:] == shape and data[k].shape != shape
                                   for k, shape in expected.items())
        if batched:
            n = min(data[k].shape[0] for k in expected)
            samples.extend({k: data[k][i] for k in expected} for i in range(n))
        else:
            samples.append(data)
    return samples


def compare(model, options: CompileOptions | None = None, samples: list[dict] | None = None, *,
            against: str | Path | None = None, save_run: str | Path | None = None, force: bool = False,
            recover_top: int = 3, output: str | None = None, budget_bytes: int = DEFAULT_BUDGET,
            progress: Progress | None = None, analysis: Analysis | None = None, reference_model=None,
            parallel: bool = True) -> dict:
    """Compare a model on the device with a reference (ORT fp32, or a saved run with `against`).

    Returns the `compare --json` document (schema in docs/accuracy.md): per tensor, accumulated and
    local error (worst and mean over samples); the culprits; the graph outputs' error.
    `parallel`: run the teacher-forced run in a forked process beside the free run (same numbers)."""
    an = analysis or Analysis(model, options, against, budget_bytes, reference_model)
    if output is not None and output not in an.output_names:
        raise UserError(f"unknown output {output!r}; the model's outputs: {', '.join(an.output_names)}")
    if samples is None and isinstance(an.reference, SavedRunReference) and an.reference.inputs():
        samples = [an.reference.inputs()]
    samples = samples if samples is not None else load_samples(None, an.program)
    if save_run is not None and len(samples) != 1:
        raise UserError("--save-run saves one run: give one input sample")
    out_names = [output] if output else an.output_names
    acc: dict[str, list] = {}
    local: dict[str, list] = {}
    outs: dict[str, list] = {}
    saved: dict[str, np.ndarray] = {}
    hist: dict[str, np.ndarray] = {}
    errors: list[str] = []
    tick = progress or (lambda *_: None)
    ref = an.reference
    for feeds in samples:  # bad inputs: one clear error before any run
        check_inputs(an.program, feeds)
    for i, feeds in enumerate(samples):
        ref.start(an.reference_feeds(feeds))

        def teacher_forced(feeds=feeds, i=i) -> tuple[dict, str | None]:
            got: dict[str, dict] = {}
            try:
                an.teacher_forced_run(feeds, lambda n, value, r: got.__setitem__(n, tensor_metrics(value, r, an.rtol)))
            except MachineError as exc:
                return got, f"sample {i}: teacher-forced run failed: {exc}"
            return got, None
        # the teacher-forced run goes to a forked process while this one does the free run, when
        # the reference is all in memory (the child then needs no ORT, whose threads do not fork)
        child = (Forked(teacher_forced) if parallel and an.worth_forking() and Forked.available() and ref.prefetch()
                 else None)
        tick("device run (accumulated error)", i, len(samples))

        def on_value(info, raw):
            name, value = info.name, info.from_device(raw)
            if save_run is not None:
                saved[name] = info.as_reference(raw)
            if name in ref:
                r = info.comparable(ref.get(name))
                acc.setdefault(name, []).append(tensor_metrics(value, r, an.rtol))
                hist[name] = hist[name] + error_histogram(value, r) if name in hist else error_histogram(value, r)
        try:
            device_out = an.free_run(feeds, on_value)
        except MachineError as exc:
            errors.append(f"sample {i}: device run failed: {exc}")
            device_out = None
        if device_out is not None:
            for name, m in an.output_metrics(device_out).items():
                outs.setdefault(name, []).append(m)
            if save_run is not None:
                saved.update(device_out)
                saved.update({INPUT_PREFIX + k: np.asarray(v) for k, v in feeds.items()})
        tick("teacher-forced run (local error)", i, len(samples))
        if child is not None:
            got, error = child.result()
            an.device_runs += 1
        else:
            got, error = teacher_forced()
        for name, m in got.items():
            local.setdefault(name, []).append(m)
        if error:
            errors.append(error)
    rows = [_tensor_row(t, acc, local, hist) for t in an.tensors]
    culprits = _rank_culprits(an, rows)
    base = min((worst(outs[n])["sqnr_db"] for n in out_names if n in outs), default=None)
    _recover(an, culprits[:recover_top], samples, out_names, base, tick)
    doc = {
        "schema": SCHEMA, "model": an.model_label, "precision": an.options.precision,
        "keep": [{"node": p, "precision": d} for p, d in an.options.keep],
        "reference": ref.label, "samples": len(samples), "device_runs": an.device_runs,
        "reference_runs": ref.runs, "cycles": an.cycles,
        "tensors": rows, "culprits": culprits,
        "outputs": [{"name": n, "accumulated": worst(ms), "accumulated_mean": mean(ms)} for n, ms in outs.items()],
        "not_compared": [{"name": t.name, "node": t.node,
                          "reason": f"fused into {t.fused_into}" if t.engine == "fused" else "folded into a constant"}
                         for t in an.tensors if not t.compared],
        "errors": errors,
    }
    if save_run is not None:
        from device_model.fileio import atomic_output

        with atomic_output(save_run, force=force) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **saved)
    return doc


def _tensor_row(t: TensorInfo, acc: dict, local: dict, hist: dict) -> dict:
    row = {"name": t.name, "node": t.node, "nodes": t.nodes or [t.node], "group": t.group, "group_op": t.group_op,
           "op": t.op,
           "shape": None if t.shape is None else list(t.shape), "engine": t.engine, "fused_into": t.fused_into or None,
           "accumulated": None, "local": None}
    if t.name in acc:
        row["accumulated"], row["accumulated_mean"] = worst(acc[t.name]), mean(acc[t.name])
    if t.name in local:
        row["local"], row["local_mean"] = worst(local[t.name]), mean(local[t.name])
    if t.name in hist:
        row["error_histogram"] = {"log10_edges": list(HIST_EDGES), "counts": [int(c) for c in hist[t.name]]}
    return row


def _rank_culprits(an: Analysis, rows: list[dict]) -> list[dict]:
    """Device nodes (never host ones) whose local error is not zero, worst local SQNR first; one
    entry per compiled node (a fused group is blamed as a unit)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["engine"] != "device" or row["local"] is None or row["local"]["max_abs"] == 0.0:
            continue
        if row["group"] in {"", None}:
            continue
        have = best.get(row["group"])
        if have is None or row["local"]["sqnr_db"] < have["local"]["sqnr_db"]:
            best[row["group"]] = row
    ranked = sorted(best.values(), key=lambda r: (r["local"]["sqnr_db"], -r["local"]["max_abs"], r["group"]))
    return [{"rank": i + 1, "node": r["group"], "nodes": r["nodes"], "op": r["group_op"] or r["op"],
             "tensor": r["name"], "local": r["local"], "accumulated": r["accumulated"], "recovered_sqnr_db": None,
             "output_sqnr_db": None, "recovery_rank": None} for i, r in enumerate(ranked)]


def evaluate_keep(an: Analysis, keep: list[tuple[str, str]], samples: list[dict], out_names: list[str]) -> dict:
    """Recompile with `keep` added to the options, run every sample, and return the outputs' worst
    metrics (`outputs`: name -> metrics), the worst output SQNR, the cycles and the runs used."""
    from dataclasses import replace

    options = replace(an.options, keep=list(an.options.keep) + list(keep))
    program = compile_model(an.model, options).program
    session = DeviceSession(program)
    per: dict[str, list] = {}
    cycles = 0
    for feeds in samples:
        an.reference.start(an.reference_feeds(feeds))
        out = session.run(feeds)
        an.device_runs += 1
        cycles = out.result.cycles
        for name, m in an.output_metrics(onnx_outputs(program, out.outputs), out_names).items():
            per.setdefault(name, []).append(m)
    outputs = {n: worst(ms) for n, ms in per.items()}
    return {"outputs": outputs, "cycles": cycles, "sqnr_db": min(m["sqnr_db"] for m in outputs.values()),
            "cosine": min(m["cosine"] for m in outputs.values()),
            "max_abs": max(m["max_abs"] for m in outputs.values())}


def _recover(an: Analysis, culprits: list[dict], samples: list[dict], out_names: list[str], base: float | None,
             tick) -> None:
    """For each culprit: the graph outputs' worst SQNR when only that node runs in fp32."""
    for i, c in enumerate(culprits):
        tick(f"recovery run ({c['node']})", i, len(culprits))
        c["output_sqnr_db"] = base
        try:
            alone = evaluate_keep(an, [(exact_pattern(c["node"]), "fp32")], samples, out_names)
            c["recovered_sqnr_db"] = alone["sqnr_db"]
        except MachineError:
            c["recovered_sqnr_db"] = None
    # the second ranking: by how much output SQNR the node alone gives back
    recovered = sorted((c for c in culprits if c["recovered_sqnr_db"] is not None),
                       key=lambda c: (-c["recovered_sqnr_db"], c["rank"]))
    for i, c in enumerate(recovered):
        c["recovery_rank"] = i + 1


__all__ = ["compare", "Analysis", "load_samples", "SCHEMA", "MAX_SQNR_DB"]
