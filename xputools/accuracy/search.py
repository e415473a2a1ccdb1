"""`bisect`: the smallest set of nodes to keep at higher precision so the graph outputs meet a threshold.

Polygraphy's `debug precision` bisects the length of a layer prefix (⌈log₂N⌉+1 rebuilds) and answers
"the first k layers". Here the candidates are ordered by the local error `compare` measured (one
teacher-forced run), so the nodes that introduce the error come first:
1. find the shortest prefix of that order that meets the threshold: try 1, 2, 4, ... nodes, then
   bisect between the last failing and the first passing length;
2. prune: drop each member of the prefix but the last (which is needed: the prefix without it
   failed), least suspicious first, if the rest still meets the threshold.
Each try is one compile with the keep set and one device run per sample.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..compiler.context import CompileOptions
from ..compiler.keepfile import exact_pattern
from ..compiler.keepfile import keep_file_text as format_keep_file
from ..errors import UserError
from .analysis import Analysis, compare, evaluate_keep

SCHEMA = "xputools.acc.bisect/1"


def check_threshold(min_sqnr: float | None = None, min_cosine: float | None = None,
                    max_abs_err: float | None = None) -> dict[str, float]:
    """The threshold as a dict, or a UserError for a missing or out-of-range one."""
    thr = {k: v for k, v in (("min_sqnr", min_sqnr), ("min_cosine", min_cosine), ("max_abs_err", max_abs_err))
           if v is not None}
    if not thr:
        raise UserError("give a threshold: --min-sqnr DB, --min-cosine X or --max-abs-err X")
    if "min_cosine" in thr and not -1.0 <= thr["min_cosine"] <= 1.0:
        raise UserError(f"--min-cosine {thr['min_cosine']}: out of range [-1, 1]")
    if "max_abs_err" in thr and not thr["max_abs_err"] >= 0.0:
        raise UserError(f"--max-abs-err {thr['max_abs_err']}: must be >= 0")
    if "min_sqnr" in thr and not math.isfinite(thr["min_sqnr"]):
        raise UserError(f"--min-sqnr {thr['min_sqnr']}: must be a finite number of dB")
    return thr


def meets(metrics: dict, thr: dict[str, float]) -> bool:
    """Whether aggregated output metrics (sqnr_db, cosine, max_abs) meet every threshold."""
    return (metrics["sqnr_db"] >= thr.get("min_sqnr", -math.inf)
            and metrics["cosine"] >= thr.get("min_cosine", -math.inf)
            and metrics["max_abs"] <= thr.get("max_abs_err", math.inf))


def bisect(model, options: CompileOptions | None = None, samples: list[dict] | None = None, *,
           min_sqnr: float | None = None, min_cosine: float | None = None, max_abs_err: float | None = None,
           output: str | None = None, keep_precision: str = "fp32", progress=None,
           analysis: Analysis | None = None) -> dict:
    """Precision search; returns the `bisect --json` document (docs/accuracy.md): the keep set, the
    device runs used, the outputs' metrics before and after and the latency cost."""
    thr = check_threshold(min_sqnr, min_cosine, max_abs_err)
    an = analysis or Analysis(model, options)
    doc = compare(model, options, samples, recover_top=0, output=output, analysis=an, progress=progress)
    an.compare_doc = doc  # for a report beside the keep set
    samples = samples if samples is not None else _default_samples(an)
    out_names = [output] if output else an.output_names
    order = [c["node"] for c in doc["culprits"]]
    local = {c["node"]: c["local"]["sqnr_db"] for c in doc["culprits"]}
    builds = 0
    tried: dict[tuple[str, ...], dict] = {}

    def evaluate(nodes: tuple[str, ...]) -> dict:
        nonlocal builds
        key = tuple(sorted(nodes))
        if key not in tried:
            builds += 1
            if progress:
                progress(f"trying {len(nodes)} kept node(s)", builds, 0)
            tried[key] = evaluate_keep(an, [(exact_pattern(n), keep_precision) for n in nodes], samples, out_names)
        return tried[key]

    outs = {o["name"]: o["accumulated"] for o in doc["outputs"] if o["name"] in out_names}
    if not outs:
        raise UserError("the device run failed: " + "; ".join(doc["errors"]))
    before = tried[()] = {"outputs": outs, "cycles": an.cycles,
                          "sqnr_db": min(m["sqnr_db"] for m in outs.values()),
                          "cosine": min(m["cosine"] for m in outs.values()),
                          "max_abs": max(m["max_abs"] for m in outs.values())}
    chosen: tuple[str, ...] = ()
    if not meets(before, thr) and order:
        chosen = _shortest_prefix(order, lambda k: meets(evaluate(tuple(order[:k])), thr))
        if chosen is None:
            chosen = tuple(order)
        else:
            chosen = _prune(chosen, lambda nodes: meets(evaluate(nodes), thr))
    after = evaluate(chosen)
    n_nodes = len({t.group for t in an.tensors if t.engine == "device" and t.group})
    return {
        "schema": SCHEMA, "model": an.model_label, "precision": an.options.precision,
        "threshold": thr, "outputs": out_names,
        "keep": [{"node": n, "precision": keep_precision, "local_sqnr_db": local.get(n)}
                 for n in sorted(chosen, key=order.index)],
        "met": meets(after, thr), "runs": an.device_runs, "builds": builds,
        "nodes": n_nodes, "prefix_bisection_runs": math.ceil(math.log2(max(n_nodes, 1))) + 1,
        "before": _summary(before), "after": _summary(after),
        "cost": {"cycles": after["cycles"] - before["cycles"],
                 "seconds": an.program and _seconds(an, after["cycles"] - before["cycles"]),
                 "percent": 100.0 * (after["cycles"] - before["cycles"]) / max(before["cycles"], 1)},
    }


def _default_samples(an: Analysis) -> list[dict]:
    from .analysis import load_samples

    return load_samples(None, an.program)


def _seconds(an: Analysis, cycles: int) -> float:
    return an.session.machine.arch.cycles_to_seconds(cycles)


def _summary(ev: dict) -> dict:
    return {"sqnr_db": ev["sqnr_db"], "cosine": ev["cosine"], "max_abs": ev["max_abs"], "cycles": ev["cycles"],
            "outputs": ev["outputs"]}


def _shortest_prefix(order: list[str], passes) -> tuple[str, ...] | None:
    """Smallest k with passes(k), assuming monotone: exponential probe, then bisection."""
    lo, k = 0, 1  # lo: longest prefix known to fail
    while True:
        k = min(k, len(order))
        if passes(k):
            break
        if k == len(order):
            return None
        lo, k = k, k * 2
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return tuple(order[:hi])


def _prune(chosen: tuple[str, ...], passes) -> tuple[str, ...]:
    """Drop members (least suspicious first, never the last one) the threshold does not need."""
    keep = list(chosen)
    for node in reversed(chosen[:-1]):
        trial = tuple(n for n in keep if n != node)
        if trial and passes(trial):
            keep.remove(node)
    return tuple(keep)


def keep_file_text(doc: dict) -> str:
    """The keep file `xpu compile --keep-file` reads: NODE=DTYPE lines, # comments."""
    thr = ", ".join(f"{k}={v}" for k, v in doc["threshold"].items())
    return format_keep_file([(exact_pattern(k["node"]), k["precision"]) for k in doc["keep"]], [
        f"xpu acc bisect: {doc['model']} at {doc['precision']}; threshold {thr}",
        f"outputs' SQNR {doc['before']['sqnr_db']:.2f} dB -> {doc['after']['sqnr_db']:.2f} dB; "
        f"cost {doc['cost']['cycles']:+d} cycles"])


def write_keep_file(doc: dict, path: str | Path, force: bool = False, inputs=()) -> None:
    from device_model.fileio import write_text_atomic

    write_text_atomic(path, keep_file_text(doc), force=force, inputs=inputs)
