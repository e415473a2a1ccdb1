"""`xpu-prof` (also `xpu prof`): record, summary, diff, sweep, validate."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import click

from .. import __version__
from ..clikit import CheckFailed, XpuGroup, compile_options, debug_option, fresh_output_path, stderr_is_terminal
from ..errors import UserError


@click.group(cls=XpuGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xpu-prof")
@debug_option
def prof() -> None:
    """Profile models and programs on the XPU (emulated): a Perfetto timeline of every instruction,
    layer and DMA, a profile database, and a one-screen bottleneck summary.

    \b
    Examples:
      xpu-prof record samples/cnn.onnx                 # cnn.pftrace + cnn.profile.db, prints the summary
      xpu-prof summary cnn.pftrace --json
      xpu-prof diff fp32.pftrace bf16.pftrace
      xpu-prof sweep samples/transformer.onnx --batch 1,2,4,8 --latency-slo 0.1
      xpu-prof validate cnn.pftrace
    Open the .pftrace at https://ui.perfetto.dev (it works offline once loaded).
    """


@contextmanager
def output_errors():
    """An output that cannot be written (exists, is an input, no directory, disk full) is one line
    and exit 2, like any other bad usage."""
    from device_model.fileio import OutputError

    try:
        yield
    except OutputError as exc:
        raise UserError(str(exc)) from None


# ---- record ------------------------------------------------------------------------------------
def _free_pair(trace: Path) -> tuple[Path, Path]:
    """`trace` and its database if both are free, else the first NAME-N pair that is (the same
    numbering as fresh_output_path, skipping numbers whose trace or database exists)."""
    from .database import db_path_for

    suffixes = "".join(trace.suffixes)
    stem = trace.name[: len(trace.name) - len(suffixes)]
    n = 0
    while True:
        candidate = trace if n == 0 else trace.with_name(f"{stem}-{n}{suffixes}")
        db = db_path_for(candidate)
        if not candidate.exists() and not db.exists():
            return candidate, db
        n += 1


def output_paths(source: Path, output: Path | None, gzip: bool, force: bool,
                 inputs=()) -> tuple[Path, Path]:
    """Where record writes: an explicit -o is refused if it (or its database) exists, unless --force,
    or if it is one of the command's inputs; default names (SOURCE.pftrace in the current directory)
    never overwrite."""
    from device_model.fileio import check_output

    from .database import db_path_for

    if output is None:
        trace, db = _free_pair(Path.cwd() / (source.stem + (".pftrace.gz" if gzip else ".pftrace")))
        if not os.access(trace.parent, os.W_OK):
            raise UserError(f"{trace}: the current directory {trace.parent} is not writable; pass -o elsewhere")
        return trace, db
    if output.is_dir():
        raise UserError(f"-o {output}: is a directory; give a file name such as "
                        f"{output / (source.stem + '.pftrace')}")
    db = db_path_for(output)
    check_output(output, force=force, inputs=[source, *inputs])
    check_output(db, force=force, inputs=[source, *inputs])
    return output, db


class _ProgressObserver:
    """Advances a rich progress bar every few hundred completed instructions."""

    def __init__(self, bar, task, every: int = 256):
        self.bar, self.task, self.every, self.n = bar, task, every, 0

    def on_complete(self, _ev) -> None:
        self.n += 1
        if self.n % self.every == 0:
            self.bar.update(self.task, completed=self.n)


def _record_run(program, feeds, trace, db, progress: bool, **kw):
    from .recorder import record

    if not progress:
        return record(program, feeds, trace, db, **kw)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("running on the emulated XPU", total=len(program.instrs))
        return record(program, feeds, trace, db, observers=[_ProgressObserver(bar, task)], **kw)


@prof.command("record")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="The trace to write (default: SOURCE.pftrace here, never overwriting); the profile "
                   "database goes beside it as NAME.profile.db.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o trace and its database.")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz with one array per input (default: deterministic random inputs; timing does "
                   "not depend on the values).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--flows", is_flag=True, help="Draw semaphore signal -> wait arrows (off by default: they "
                                            "clutter the view).")
@click.option("--gzip", is_flag=True, help="Compress the trace (.pftrace.gz; Perfetto opens it).")
@click.option("--layers", metavar="FROM:TO",
              help="Capture only these ONNX nodes (program-order indices or node names, both ends "
                   "included, e.g. 3:10 or layer0/ln1:layer0/ffn/residual); everything still runs.")
@click.option("--max-slices", type=click.IntRange(min=0),
              help="Cap the instruction slices in the trace (the earliest are kept); what is left out "
                   "is counted and reported, never silently dropped.")
@click.option("--batch", type=click.IntRange(min=1),
              help="Inferences per run for throughput (default: the model's batch dimension).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Layers listed in the summary.")
@compile_options
@debug_option
def record_cmd(source: Path, output: Path | None, force: bool, inputs_path: Path | None, seed: int,
               flows: bool, gzip: bool, layers: str | None, max_slices: int | None, batch: int | None,
               as_json: bool, top: int, **compile_kw) -> None:
    """Run a model (.onnx, compiled first) or program (.xpu, .xasm) once on the emulated XPU and
    record every instruction: writes a Perfetto trace and a profile database, prints the summary.

    \b
    Examples:
      xpu-prof record samples/cnn.onnx
      xpu-prof record samples/transformer.onnx --shape input_ids=4x16 --precision bf16 -o tf.pftrace
      xpu-prof record model.onnx --layers 10:20 --flows --gzip
      xpu-prof record gemm.xpu --max-slices 100000
    """
    from ..clikit import program_from_path
    from ..runtime import random_inputs, read_npz
    from .database import open_profile
    from .recorder import guess_batch
    from .summary import build_summary, render_summary

    if not source.is_file():
        raise UserError(f"{source}: no such file")
    if output is not None and output.name.endswith(".gz"):
        gzip = True
    inputs = [inputs_path] if inputs_path else []
    with output_errors():
        trace, db = output_paths(source, output, gzip, force, inputs)
    program = program_from_path(source, compile_kw)
    feeds = read_npz(inputs_path) if inputs_path else random_inputs(program, seed)
    if batch is None and source.suffix == ".onnx":
        import onnx

        batch = guess_batch(program, onnx.load(str(source), load_external_data=False))
    with output_errors():
        result = _record_run(program, feeds, trace, db, stderr_is_terminal(),
                             source=str(source), batch=batch, flows=flows, layers=layers,
                             max_slices=max_slices, gzip=gzip, force=force, inputs=inputs)
    stats = result.trace
    note = f", {result.dropped} slices left out (--max-slices)" if result.dropped else ""
    click.echo(f"wrote {trace} ({stats.slices:,} slices, {stats.counters:,} counter samples, "
               f"{stats.flows:,} flows, {stats.bytes / 1e6:.2f} MB{note}) and {db}", err=True)
    summary = build_summary(open_profile(db), None if as_json else top)
    click.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary, top))
    if result.error is not None:
        click.echo(f"the run stopped ({result.status}); the trace and database cover what ran until then",
                   err=True)
        result.raise_for_status()


# ---- summary / diff ----------------------------------------------------------------------------
@prof.command("summary")
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (schema xpu-prof-summary v1).")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Layers and instruction kinds listed (text default 10; JSON default all).")
@click.option("--csv", "csv_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write the database's tables as DIR/layers.csv, engines.csv, instructions.csv, "
                   "dma_transfers.csv, critical_path.csv, allocations.csv.")
@click.option("--force", is_flag=True, help="Overwrite existing --csv files.")
@debug_option
def summary_cmd(profile: Path, as_json: bool, top: int | None, csv_dir: Path | None, force: bool) -> None:
    """The bottleneck report of a recorded profile (PROFILE = the .pftrace or its .profile.db):
    latency and throughput, per-engine busy/wait/idle, per-layer time, FLOPs and bound label, the
    critical path, DMA bandwidth, top instruction kinds and ranked recommendations.

    \b
    Examples:
      xpu-prof summary cnn.pftrace
      xpu-prof summary cnn.profile.db --json | jq '.layers[0]'
      xpu-prof summary cnn.pftrace --csv tables/      # per-instruction, layer, engine... CSV
    """
    from .database import open_profile
    from .summary import DEFAULT_TOP, build_summary, render_summary

    data = open_profile(profile)
    if csv_dir is not None:
        from .export import export_csv

        with output_errors():
            paths = export_csv(data.path, csv_dir, force=force, inputs=[profile])
        click.echo(f"wrote {len(paths)} CSV tables to {csv_dir}", err=True)
    if as_json:
        click.echo(json.dumps(build_summary(data, top), indent=2))
    else:
        click.echo(render_summary(build_summary(data, top or DEFAULT_TOP), top or DEFAULT_TOP))


@prof.command("view")
@click.argument("profile", type=click.Path(path_type=Path))
@debug_option
def view_cmd(profile: Path) -> None:
    """Browse a recorded profile (PROFILE = the .pftrace or its .profile.db) in the terminal UI: the
    per-engine timeline with zoom and pan, the selected instruction, per-layer table, critical path
    and recommendations (docs/tui.md). q quits.

    \b
    Examples:
      xpu-prof record samples/cnn.onnx -o cnn.pftrace && xpu-prof view cnn.pftrace
      xpu-prof view cnn.profile.db
    """
    from ..tui import run_app
    from .database import open_profile

    data = open_profile(profile)  # a bad file is one line and exit 2, before the screen opens
    run_app(profile=lambda: data)


@prof.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (schema xpu-prof-diff v1).")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="Rows per table (text).")
@debug_option
def diff_cmd(a: Path, b: Path, as_json: bool, top: int) -> None:
    """Compare two profiles (A = baseline, B = new) per engine and per layer, sorted by absolute
    change, with the layers present in only one of them.

    \b
    Examples:
      xpu-prof diff fp32.pftrace bf16.pftrace
      xpu-prof diff before.profile.db after.profile.db --json
    """
    from .database import open_profile
    from .diff import diff_profiles, render_diff

    result = diff_profiles(open_profile(a), open_profile(b))
    click.echo(json.dumps(result, indent=2) if as_json else render_diff(result, top))


# ---- sweep -------------------------------------------------------------------------------------
@prof.command("sweep")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch", "batches", required=True, metavar="B1,B2,...",
              help="Batch sizes to compile and run, e.g. 1,2,4,8,16.")
@click.option("--latency-slo", type=click.FloatRange(min=0, min_open=True), metavar="MS",
              help="Latency budget in ms: the sweet spot is the highest throughput within it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The plot (PNG) to write (default: MODEL.sweep.png here, never overwriting).")
@click.option("--force", is_flag=True, help="Overwrite an existing -o plot.")
@click.option("--no-plot", is_flag=True, help="Print the table only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (schema xpu-prof-sweep v1).")
@compile_options
@debug_option
def sweep_cmd(model: Path, batches: str, latency_slo: float | None, output: Path | None, force: bool,
              no_plot: bool, as_json: bool, **compile_kw) -> None:
    """Compile and run MODEL at several batch sizes: latency and throughput per batch, and the
    sweet spot. The batch dimension is each input's first symbolic dimension; other symbolic
    dimensions are fixed with --shape (whose batch dim is replaced by each swept batch).

    \b
    Examples:
      xpu-prof sweep samples/transformer.onnx --batch 1,2,4,8,16
      xpu-prof sweep model.onnx --batch 1,4,16,64 --latency-slo 2 --precision bf16 -o sweep.png
      xpu-prof sweep bert.onnx --batch 1,2,4 --shape input_ids=1x128
    """
    from ..clikit import build_options
    from .sweep import parse_batches, plot_sweep, render_sweep, run_sweep, sweep_report

    if not model.is_file():
        raise UserError(f"{model}: no such file")
    if model.suffix != ".onnx":
        raise UserError(f"{model}: sweep needs an ONNX model (it recompiles per batch size)")
    from device_model.fileio import check_output

    sizes = parse_batches(batches)
    plot_path = None
    if not no_plot:
        plot_path = output if output is not None else fresh_output_path(Path.cwd() / f"{model.stem}.sweep.png")
        with output_errors():   # before the long sweep, not after it
            check_output(plot_path, force=force, inputs=[model])
    options = build_options(**compile_kw)
    given = dict(options.shapes)
    tty = stderr_is_terminal()
    if tty:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("sweeping", total=len(sizes))
            points = run_sweep(model, sizes, options, given,
                               progress=lambda i, n, b: bar.update(task, completed=i,
                                                                   description=f"batch {b}"))
    else:
        points = run_sweep(model, sizes, options, given)
    if plot_path is not None:
        with output_errors():
            plot_sweep(points, latency_slo, plot_path,
                       f"{model.stem}: throughput and latency by batch ({options.precision})", force=force,
                       inputs=[model])
    report = sweep_report(model.stem, points, latency_slo, str(plot_path) if plot_path else None)
    click.echo(json.dumps(report, indent=2) if as_json else render_sweep(report))


# ---- roofline ----------------------------------------------------------------------------------
@prof.command("roofline")
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The plot (PNG) to write (default: NAME.roofline.png in the current directory, "
                   "never overwriting).")
@click.option("--force", is_flag=True, help="Overwrite an existing -o plot.")
@click.option("--no-plot", is_flag=True, help="Print the table only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (schema xpu-prof-roofline v1).")
@debug_option
def roofline_cmd(profile: Path, output: Path | None, force: bool, no_plot: bool, as_json: bool) -> None:
    """Each layer at its arithmetic intensity (FLOPs per HBM byte) and achieved TFLOP/s against the
    arch's HBM roof and compute roofs: a table, and a log-log plot (PNG).

    \b
    Examples:
      xpu-prof roofline cnn.pftrace                      # cnn.roofline.png + the table
      xpu-prof roofline cnn.profile.db -o roof.png --force
      xpu-prof roofline cnn.pftrace --no-plot --json
    """
    from device_model.fileio import check_output

    from .database import DB_SUFFIX, open_profile
    from .roofline import plot_roofline, render_roofline, roofline

    data = open_profile(profile)
    result = roofline(data)
    if not no_plot:
        stem = profile.name.split(DB_SUFFIX)[0].split(".pftrace")[0]
        path = output if output is not None else fresh_output_path(Path.cwd() / f"{stem}.roofline.png")
        with output_errors():
            check_output(path, force=force, inputs=[profile, data.path])
            plot_roofline(result, path, force=force, inputs=[profile, data.path])
        result["plot"] = str(path)
    click.echo(json.dumps(result, indent=2) if as_json else render_roofline(result)
               + (f"\nplot: {result['plot']}" if result.get("plot") else ""))


# ---- validate ----------------------------------------------------------------------------------
@prof.command("validate")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@debug_option
def validate_cmd(trace: Path, as_json: bool) -> None:
    """Read a trace back and check it: tracks declared before use, every slice closed and nested,
    timestamps non-decreasing per sequence, interned ids defined, flows paired. Exit 1 if broken.

    \b
    Example:
      xpu-prof validate cnn.pftrace
    """
    from .trace_validate import read_trace

    if not trace.is_file():
        raise UserError(f"{trace}: no such file")
    model = read_trace(trace)
    report = {"trace": str(trace), "valid": not model.problems, "problems": model.problems,
              "tracks": len(model.tracks), "slices": len(model.slices),
              "counter_samples": len(model.counters),
              "flows": len(model.flows), "dropped_slices": model.dropped, "packets": model.packets,
              "metadata": model.metadata}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    elif not model.problems:
        about = ", ".join(f"{k}={model.metadata[k]}" for k in ("model", "arch", "precision")
                          if model.metadata.get(k))
        click.echo(f"ok: {trace}: {len(model.slices):,} slices on {len(model.tracks)} tracks, "
                   f"{len(model.counters):,} counter samples, {len(model.flows):,} flows, "
                   f"{model.dropped:,} dropped" + (f" ({about})" if about else ""))
    else:
        for problem in model.problems[:20]:
            click.echo(f"problem: {problem}")
        if len(model.problems) > 20:
            click.echo(f"... {len(model.problems) - 20} more")
    if model.problems:
        raise CheckFailed(f"{trace}: invalid trace ({len(model.problems)} problem"
                          f"{'s' if len(model.problems) != 1 else ''}): {model.problems[0]}")


def register(root: click.Group) -> None:
    root.add_command(prof, "prof")


def main() -> None:
    prof(prog_name="xpu-prof")
