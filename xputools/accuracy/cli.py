"""`xpu acc`: compare, bisect and gate, thin wrappers over `xputools.accuracy`."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import click

from ..clikit import XpuGroup, debug_option, stderr_is_terminal
from ..errors import CheckFailed, UserError

FilePath = click.Path(dir_okay=False, path_type=Path)


def _compile_options(f):
    from ..clikit import compile_options

    return compile_options(f)


def _input_options(f):
    opts = [
        click.option("--samples", "samples_path", type=click.Path(path_type=Path),
                     help="A .npz of samples (leading sample axis) or a directory of .npz files."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-inputs."),
        click.option("--random-inputs", is_flag=True, help="Feed deterministic random inputs."),
        click.option("--inputs", "inputs_path", type=FilePath, help=".npz with one array per input."),
    ]
    for opt in opts:
        f = opt(f)
    return f


def _threshold_options(f):
    opts = [
        click.option("--max-abs-err", type=float, help="Outputs' max absolute error must stay at or below this."),
        click.option("--min-cosine", type=float, help="Outputs' cosine similarity must reach this."),
        click.option("--min-sqnr", type=float, help="Outputs' SQNR must reach this many dB."),
    ]
    for opt in opts:
        f = opt(f)
    return f


@contextmanager
def _progress():
    """A progress callback showing a spinner on a terminal; None when piped."""
    if not stderr_is_terminal():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("compare", total=None)
        yield lambda what, done, total: bar.update(task, description=what, completed=done, total=total or None)


def _prepare(model: Path, compile_kw: dict, against=None):
    from ..clikit import build_options
    from .analysis import Analysis

    if not model.is_file():
        raise UserError(f"{model}: no such file")
    return Analysis(model, build_options(**compile_kw), against)


def _samples(an, inputs_path, random_inputs: bool, seed: int, samples_path):
    from ..clikit import feeds_from_options
    from .analysis import load_samples

    if samples_path:
        if inputs_path or random_inputs:
            raise UserError("give one of --inputs, --samples or --random-inputs")
        return load_samples(samples_path, an.program)
    if inputs_path or random_inputs or not an.program.inputs():
        return [feeds_from_options(an.program, inputs_path, random_inputs, seed)]
    return None  # the library's default: the saved run's inputs, or random inputs


def _emit_json(doc: dict) -> None:
    click.echo(json.dumps(doc, indent=2, default=float))


@click.group("acc", cls=XpuGroup)
def acc() -> None:
    """Accuracy analysis against ONNX Runtime: which nodes introduce the error, what to keep in
    higher precision, and a CI gate on numeric drift.

    \b
    Examples:
      xpu acc compare samples/cnn.onnx --precision bf16 --inputs samples/cnn.inputs.npz
      xpu acc bisect model.onnx --precision bf16 --min-sqnr 30 -o keep.txt
      xpu acc gate model.onnx --precision bf16 --min-sqnr 30 --junit acc.xml
    """


@acc.command("compare")
@click.argument("model", type=FilePath)
@_input_options
@click.option("--against", type=FilePath, help="Compare with a saved device run (.npz from --save-run) instead of ORT.")
@click.option("--save-run", type=FilePath, help="Save every tensor of this device run (.npz) for a later --against.")
@click.option("--recover", "recover_top", type=click.IntRange(0, 100), default=3, show_default=True,
              help="For the N worst culprits, recompile with that node alone in fp32 and measure the outputs.")
@click.option("--output", "output_name", help="Judge culprits by this graph output (default: all outputs).")
@click.option("--top", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Culprits to print.")
@click.option("--csv", "csv_path", type=FilePath, help="Write the per-tensor table as CSV.")
@click.option("--report", "report_path", type=FilePath, help="Write a self-contained HTML report.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema in docs/accuracy.md).")
@_compile_options
@debug_option
def compare_cmd(model: Path, inputs_path, random_inputs, seed, samples_path, against, save_run, recover_top,
                output_name, top, csv_path, report_path, force, as_json, **compile_kw) -> None:
    """Compare every tensor of MODEL on the device with ONNX Runtime (or a saved run): accumulated
    error, local error (the node on reference inputs), and the culprit nodes.

    \b
    Examples:
      xpu acc compare samples/cnn.onnx --precision bf16 --inputs samples/cnn.inputs.npz
      xpu acc compare samples/cnn.onnx --precision int8 --calibration samples/cnn.calib.npz \\
          --samples samples/cnn.calib.npz
      xpu acc compare model.onnx --precision bf16 --random-inputs --json > acc.json
      xpu acc compare model.onnx --save-run fp32.npz && xpu acc compare model.onnx --precision bf16 --against fp32.npz
    """
    from device_model.fileio import check_output, write_text_atomic

    from .analysis import compare
    from .render import compare_csv, render_compare

    inputs = [p for p in (model, inputs_path, samples_path, against) if p]
    for out in (save_run, csv_path, report_path):
        if out:
            check_output(out, force=force, inputs=inputs)
    an = _prepare(model, compile_kw, against)
    samples = _samples(an, inputs_path, random_inputs, seed, samples_path)
    with _progress() as tick:
        doc = compare(model, samples=samples, against=against, save_run=save_run, force=force,
                      recover_top=recover_top, output=output_name, progress=tick, analysis=an)
    if csv_path:
        write_text_atomic(csv_path, compare_csv(doc), force=force, inputs=inputs)
    if report_path:
        from .report import write_report

        write_report(report_path, doc, force=force, inputs=inputs)
    if as_json:
        _emit_json(doc)
    else:
        click.echo(render_compare(doc, top))


@acc.command("bisect")
@click.argument("model", type=FilePath)
@_input_options
@_threshold_options
@click.option("--output", "output_name", help="Judge only this graph output (default: all outputs).")
@click.option("--keep-precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Precision for the kept nodes.")
@click.option("-o", "--keep-output", type=FilePath, help="Write the keep file here (for --keep-file).")
@click.option("--report", "report_path", type=FilePath, help="Write the HTML report (compare + the keep set).")
@click.option("--force", is_flag=True, help="Overwrite an existing keep file or report.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema in docs/accuracy.md).")
@_compile_options
@debug_option
def bisect_cmd(model: Path, inputs_path, random_inputs, seed, samples_path, min_sqnr, min_cosine, max_abs_err,
               output_name, keep_precision, keep_output, report_path, force, as_json, **compile_kw) -> None:
    """Find the smallest set of nodes to keep at higher precision so the outputs meet a threshold;
    write it as a keep file that `xpu compile --keep-file` accepts.

    \b
    Examples:
      xpu acc bisect model.onnx --precision bf16 --min-sqnr 30 -o keep.txt
      xpu compile model.onnx --precision bf16 --keep-file keep.txt
      xpu acc bisect samples/cnn.onnx --precision int8 --calibration samples/cnn.calib.npz --min-cosine 0.9999 --json
    """
    from .render import render_bisect
    from .search import bisect, check_threshold, write_keep_file

    check_threshold(min_sqnr, min_cosine, max_abs_err)
    inputs = [p for p in (model, inputs_path, samples_path) if p]
    from device_model.fileio import check_output

    for out in (keep_output, report_path):
        if out:
            check_output(out, force=force, inputs=inputs)
    an = _prepare(model, compile_kw)
    samples = _samples(an, inputs_path, random_inputs, seed, samples_path)
    with _progress() as tick:
        doc = bisect(model, samples=samples, min_sqnr=min_sqnr, min_cosine=min_cosine, max_abs_err=max_abs_err,
                     output=output_name, keep_precision=keep_precision, progress=tick, analysis=an)
    if keep_output:
        write_keep_file(doc, keep_output, force=force, inputs=inputs)
        doc["keep_file"] = str(keep_output)
    if report_path:
        from .report import write_report

        write_report(report_path, an.compare_doc, doc, force=force, inputs=inputs)
    click.echo(json.dumps(doc, indent=2, default=float) if as_json else render_bisect(doc))
    if not doc["met"]:
        raise CheckFailed("the threshold is not met even with every candidate kept")


@acc.command("gate")
@click.argument("model", type=FilePath, required=False)
@_input_options
@click.option("--manifest", type=FilePath, help="TOML manifest of several models (docs/accuracy.md).")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes for a manifest.")
@_threshold_options
@click.option("--thresholds", "thresholds_path", type=FilePath, help="TOML file of thresholds, per output.")
@click.option("--baseline", type=FilePath, help="Baseline JSON: fail on a regression beyond its tolerance.")
@click.option("--update-baseline", is_flag=True, help="Write this run's metrics to --baseline.")
@click.option("--junit", type=FilePath, help="Write JUnit XML (a testcase per output and check).")
@click.option("--markdown", "markdown_path", type=FilePath, help="Write a Markdown summary.")
@click.option("--json", "json_path", type=FilePath, help="Write the result as JSON (- for stdout).")
@click.option("--force", is_flag=True, help="Overwrite existing report files.")
@_compile_options
@debug_option
def gate_cmd(model, inputs_path, random_inputs, seed, samples_path, manifest, jobs, min_sqnr, min_cosine,
             max_abs_err, thresholds_path, baseline, update_baseline, junit, markdown_path, json_path, force,
             **compile_kw) -> None:
    """Gate CI on numeric drift: compare MODEL's outputs on the device with ONNX Runtime against
    thresholds and a baseline. Exit 0 pass, 1 fail, 2 bad input.

    \b
    Examples:
      xpu acc gate samples/cnn.onnx --precision bf16 --inputs samples/cnn.inputs.npz --min-sqnr 30
      xpu acc gate model.onnx --precision bf16 --thresholds acc.toml --baseline acc-baseline.json --junit acc.xml
      xpu acc gate --manifest models.toml --markdown "$GITHUB_STEP_SUMMARY" --force
      xpu acc gate model.onnx --precision bf16 --baseline acc-baseline.json --update-baseline
    """
    from device_model.fileio import check_output, write_text_atomic

    from .gate import (
        baseline_from,
        gate_document,
        gate_manifest,
        gate_model,
        junit_xml,
        markdown,
        parse_thresholds,
        read_baseline,
        read_manifest,
        read_toml,
        render_gate,
    )
    from .search import check_threshold

    if (model is None) == (manifest is None):
        raise UserError("give a MODEL or --manifest FILE (not both)")
    cli_default = {}
    if any(v is not None for v in (min_sqnr, min_cosine, max_abs_err)):
        cli_default = check_threshold(min_sqnr, min_cosine, max_abs_err)
    cli_file = parse_thresholds(read_toml(thresholds_path), str(thresholds_path)) if thresholds_path else None
    if update_baseline and baseline is None:
        raise UserError("--update-baseline needs --baseline FILE")
    base = read_baseline(baseline) if baseline and not update_baseline and baseline.exists() else None
    if baseline and not update_baseline and base is None:
        raise UserError(f"{baseline}: no such file (write it first with --update-baseline)")
    inputs = [p for p in (model, manifest, inputs_path, samples_path, thresholds_path) if p]
    for out in (junit, markdown_path, json_path if json_path and str(json_path) != "-" else None):
        if out:
            check_output(out, force=force, inputs=inputs + ([baseline] if baseline else []))
    if manifest:
        doc = gate_manifest(read_manifest(manifest), cli_default, cli_file, base and base["models"], jobs)
    else:
        from .gate import Thresholds

        th = Thresholds(dict(cli_default))
        if cli_file is not None:
            th = Thresholds({**cli_file.default, **cli_default}, cli_file.outputs, cli_file.tolerance)
        an = _prepare(model, compile_kw)
        samples = _samples(an, inputs_path, random_inputs, seed, samples_path)
        key = f"{Path(model).stem}:{an.options.precision}"
        doc = gate_document([gate_model(model, an.options, samples, th, (base or {}).get("models", {}).get(key),
                                        key, analysis=an)])
    if update_baseline:
        write_text_atomic(baseline, json.dumps(baseline_from([m for m in doc["models"] if not m.get("error")]),
                                               indent=2) + "\n", force=True, inputs=inputs)
    if junit:
        write_text_atomic(junit, junit_xml(doc), force=force, inputs=inputs)
    if markdown_path:
        write_text_atomic(markdown_path, markdown(doc), force=force, inputs=inputs)
    if json_path and str(json_path) == "-":
        click.echo(json.dumps(doc, indent=2))
    else:
        if json_path:
            write_text_atomic(json_path, json.dumps(doc, indent=2) + "\n", force=force, inputs=inputs)
        click.echo(render_gate(doc))
    errors = [m for m in doc["models"] if m.get("error")]
    if errors:
        raise UserError("; ".join(f"{m['name']}: {m['error']}" for m in errors))
    if doc["verdict"] != "pass":
        raise CheckFailed("")


def register(root: click.Group) -> None:
    """Add the `acc` group to the `xpu` root."""
    root.add_command(acc)
