"""`xpu acc gate`: the CI numeric-drift gate (exit 0 pass, 1 fail, 2 bad input)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..clikit import CheckFailed, debug_option
from ..errors import UserError
from .cli import FilePath, _compile_options, _input_options, _prepare, _samples, _threshold_options, output_errors


@click.command("gate")
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
@output_errors
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

    from .bisect import check_threshold
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
