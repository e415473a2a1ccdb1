"""`sweep`: compile and run a model at several batch sizes; throughput and latency per batch, and the
"sweet spot" (the highest throughput whose latency meets the SLO).

The batch dimension of an input is its first symbolic dimension (e.g. `batch` in [batch, 16]).
Every input that has a symbolic dimension gets its batch dimension bound to the swept value; inputs
with only fixed dimensions are left as they are. A model none of whose inputs has a symbolic
dimension has a fixed batch and cannot be swept. Other symbolic dimensions must be fixed with
--shape, whose value for the batch dimension is then replaced by each swept batch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError

SWEEP_SCHEMA = "xpu-prof-sweep"
SWEEP_VERSION = 1


@dataclass
class SweepPoint:
    batch: int
    cycles: int
    latency_ms: float
    throughput: float      # inferences per second
    instructions: int
    pe_busy_pct: float
    dma_busy_pct: float    # average over the DMA queues the program uses
    meets_slo: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _graph_inputs(model):
    init = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in init]


def _dims(vi) -> list:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def batch_axes(model) -> dict[str, int]:
    """Input name -> axis of its first symbolic (named or unknown) dimension."""
    axes = {}
    for vi in _graph_inputs(model):
        for axis, d in enumerate(_dims(vi)):
            if not isinstance(d, int) or d <= 0:
                axes[vi.name] = axis
                break
    return axes


def batch_shapes(model, batch: int, given: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Shapes binding every input's batch dim to `batch` (module docstring has the rule)."""
    given = dict(given or {})
    axes = batch_axes(model)
    inputs = _graph_inputs(model)
    if not axes:
        described = ", ".join(f"{vi.name} {'x'.join(str(d) for d in _dims(vi)) or 'scalar'}" for vi in inputs)
        raise UserError(f"the model has a fixed batch: no input has a symbolic dimension ({described}); "
                        f"export it with a dynamic batch axis (e.g. torch.onnx.export(..., dynamic_axes="
                        f"{{'x': {{0: 'batch'}}}})) to sweep batch sizes")
    known = {vi.name for vi in inputs}
    for name in given:
        if name not in known:
            raise UserError(f"--shape {name}: not an input of the model (inputs: {', '.join(sorted(known))})")
    shapes = {}
    for vi in inputs:
        if vi.name not in axes:
            if vi.name in given:
                shapes[vi.name] = tuple(given[vi.name])
            continue
        dims = list(given[vi.name]) if vi.name in given else _dims(vi)
        axis = axes[vi.name]
        if len(dims) <= axis:
            raise UserError(f"--shape {vi.name}: rank {len(dims)} is too small for its batch axis {axis}")
        dims[axis] = batch
        unbound = [f"dim {i} ({d!r})" for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
        if unbound:
            example = "x".join("1" if i == axis else (str(d) if isinstance(d, int) and d > 0 else "N")
                               for i, d in enumerate(dims))
            raise UserError(f"input {vi.name} has symbolic dimensions besides its batch: "
                            f"{', '.join(unbound)}; "
                            f"fix them with --shape {vi.name}={example} (its batch dim is replaced by each "
                            f"swept batch)")
        shapes[vi.name] = tuple(int(d) for d in dims)
    return shapes


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"--batch {text!r}: expected a comma-separated list of positive integers, "
                        f"e.g. 1,2,4,8") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--batch {text!r}: expected a comma-separated list of positive integers, "
                        f"e.g. 1,2,4,8")
    return sorted(set(values))


def run_sweep(model_path: Path, batches: list[int], options, given_shapes: dict | None = None,
              progress=None) -> list[SweepPoint]:
    """Compile and run once per batch. `options` is a CompileOptions whose shapes are replaced."""
    import dataclasses

    from ..compiler.driver import compile_model
    from ..compiler.frontend import load_model
    from ..runtime import random_inputs, run_program

    model = load_model(model_path)
    points = []
    for i, batch in enumerate(batches):
        if progress is not None:
            progress(i, len(batches), batch)
        opts = dataclasses.replace(options, shapes=batch_shapes(model, batch, given_shapes))
        program = compile_model(model, opts).program
        result = run_program(program, random_inputs(program, 0)).result
        dma = [v for k, v in result.busy.items() if k.startswith("dma")]
        total = max(1, result.cycles)
        points.append(SweepPoint(
            batch=batch, cycles=result.cycles, latency_ms=result.seconds * 1e3,
            throughput=batch / result.seconds if result.seconds else 0.0,
            instructions=sum(result.instructions.values()),
            pe_busy_pct=round(100.0 * result.busy.get("pe", 0) / total, 1),
            dma_busy_pct=round(100.0 * sum(dma) / len(dma) / total, 1) if dma else 0.0))
    return points


def sweet_spot(points: list[SweepPoint], slo_ms: float | None) -> SweepPoint | None:
    """The highest-throughput point whose latency is within the SLO (any point when no SLO)."""
    for p in points:
        p.meets_slo = slo_ms is None or p.latency_ms <= slo_ms
    ok = [p for p in points if p.meets_slo]
    return max(ok, key=lambda p: (p.throughput, -p.batch)) if ok else None


def sweep_report(model: str, points: list[SweepPoint], slo_ms: float | None, plot: str | None) -> dict:
    best = sweet_spot(points, slo_ms)
    return {"schema": SWEEP_SCHEMA, "version": SWEEP_VERSION, "model": model, "latency_slo_ms": slo_ms,
            "points": [p.as_dict() for p in points], "sweet_spot": best.batch if best else None,
            "plot": plot}


def render_sweep(report: dict) -> str:
    slo = report["latency_slo_ms"]
    lines = [f"batch sweep of {report['model']}" + (f" (latency SLO {slo:g} ms)" if slo is not None else "")]
    lines.append(f"{'batch':>6}{'latency ms':>12}{'inferences/s':>14}{'instrs':>9}{'PE busy':>9}"
                 f"{'DMA busy':>10}")
    for p in report["points"]:
        if p["batch"] == report["sweet_spot"]:
            mark = " <- sweet spot"
        else:
            mark = "" if p["meets_slo"] else "  over SLO"
        lines.append(f"{p['batch']:>6}{p['latency_ms']:>12.4f}{p['throughput']:>14,.1f}{p['instructions']:>9,}"
                     f"{p['pe_busy_pct']:>8.1f}%{p['dma_busy_pct']:>9.1f}%{mark}")
    if report["sweet_spot"] is None:
        lines.append(f"no batch meets the {slo:g} ms latency SLO")
    if report["plot"]:
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def plot_sweep(points: list[SweepPoint], slo_ms: float | None, path: Path, title: str, *,
               force: bool = False, inputs=()) -> None:
    """Throughput bars and the latency line by batch, as a PNG written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    best = sweet_spot(points, slo_ms)
    x = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    try:
        ax.bar(x, [p.throughput for p in points], color="#8fb3d9", label="throughput")
        ax.set_xticks(x, [str(p.batch) for p in points])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (inferences/s)")
        lat = ax.twinx()
        lat.plot(x, [p.latency_ms for p in points], color="#c0392b", marker="o", label="latency")
        lat.set_ylabel("latency (ms)")
        lat.set_ylim(bottom=0)
        if slo_ms is not None:
            lat.axhline(slo_ms, color="#c0392b", linestyle="--", linewidth=1, label=f"SLO {slo_ms:g} ms")
        if best is not None:
            i = points.index(best)
            ax.bar([i], [best.throughput], color="#2e86de", label=f"sweet spot: batch {best.batch}")
            ax.annotate(f"{best.throughput:,.0f}/s", (i, best.throughput), ha="center", va="bottom",
                        fontsize=8)
        handles = ax.get_legend_handles_labels()
        more = lat.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        from device_model.fileio import atomic_output

        with atomic_output(path, force=force, inputs=inputs) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
