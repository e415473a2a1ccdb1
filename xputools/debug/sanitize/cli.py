"""`xpu sanitize`: the sanitizers from the command line (a thin wrapper over `sanitize()`)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from ...clikit import CheckFailed, compile_options, debug_option, feeds_from_options, input_options, program_from_path
from .findings import CHECKS, Finding, SanitizeReport


@click.command("sanitize")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check", "checks", default="all", show_default=True, metavar="LIST",
              help=f"Comma-separated checks to run: {','.join(CHECKS)} (or all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable findings (schema in docs/sanitize.md).")
@input_options
@click.option("--jitter", type=click.IntRange(0, 1000), default=0, show_default=True, metavar="N",
              help="Also run under N other timings (random extra cost per instruction) to expose races "
                   "that this run's timing hides.")
@compile_options
@debug_option
def sanitize_cmd(program: Path, checks: str, as_json: bool, inputs_path: Path | None, random_inputs: bool,
                 seed: int, jitter: int, **compile_kw) -> None:
    """Run a program (.xpu, .xasm) or an ONNX model once under the sanitizers and report races,
    uninitialised reads, out-of-bounds accesses, NaN/Inf births, hangs and semaphore misuse, each
    with the instructions and ONNX nodes involved and the `xpu debug` command that stops there.
    Exit 0 clean, 1 findings, 2 bad input.

    \b
    Examples:
      xpu sanitize samples/programs/race_war.xasm --random-inputs
      xpu sanitize samples/cnn.onnx --inputs samples/cnn.inputs.npz --check race,uninit
      xpu sanitize model.onnx --precision bf16 --random-inputs --seed 3 --json
      xpu sanitize prog.xasm --random-inputs --check race --jitter 8
    """
    from .core import parse_checks

    chosen = parse_checks(checks)
    prog = program_from_path(program, compile_kw)
    feeds = feeds_from_options(prog, inputs_path, random_inputs, seed)
    report = _sanitize_with_progress(prog, feeds, chosen, jitter)
    inputs = _input_words(inputs_path, random_inputs or not inputs_path, seed)
    prefix = debug_command_prefix(program, compile_kw, inputs)
    if as_json:
        click.echo(json.dumps(report_json(report, prefix), indent=2))
    else:
        click.echo(render_report(report, prefix))
    if not report.clean:
        raise CheckFailed()


def _sanitize_with_progress(prog, feeds, checks, jitter: int):
    """`sanitize`, with a progress bar on a terminal (quiet when piped)."""
    from ...clikit import stderr_is_terminal
    from .core import sanitize

    if not stderr_is_terminal():
        return sanitize(prog, feeds, checks, jitter=jitter)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("sanitizing", total=len(prog.instrs) * (1 + jitter))
        return sanitize(prog, feeds, checks, jitter=jitter,
                        progress=lambda done, total: bar.update(task, completed=done, total=total))


def _input_words(inputs_path: Path | None, random_inputs: bool, seed: int) -> list[str]:
    if inputs_path:
        return ["--inputs", str(inputs_path)]
    if not random_inputs:
        return []
    return ["--random-inputs"] + (["--seed", str(seed)] if seed else [])


_DEFAULTS = {"calibration_method": "minmax", "precision": "fp32"}


def debug_command_prefix(program: Path, compile_kw: dict, input_words: list[str] = ()) -> list[str]:
    """`xpu debug PROGRAM` with the inputs and compile options the user gave (so the same program
    runs on the same data)."""
    words = ["xpu", "debug", str(program), *input_words]
    for name, value in sorted(compile_kw.items()):
        flag = "--" + name.replace("_", "-")
        if name == "shapes":
            flag = "--shape"
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or v == () or _DEFAULTS.get(name) == v:
                continue
            words += [flag, str(v)]
    return words


def debug_command(prefix: list[str], finding: Finding) -> str:
    words = list(prefix)
    for cmd in finding.debug:
        words += ["-ex", cmd]
    return shlex.join(words)


def report_json(report: SanitizeReport, prefix: list[str]) -> dict:
    data = report.to_json()
    for item, finding in zip(data["findings"], report.findings):
        item["repro"] = debug_command(prefix, finding)
    return data


def render_report(report: SanitizeReport, prefix: list[str]) -> str:
    lines = []
    for n, f in enumerate(report.findings, 1):
        lines.append(f"[{n}] {f.check} / {f.kind}: {f.message}")
        for a in f.accesses:
            lines.append(f"      {a.where()}" + (f"  [{a.bytes}]" if a.bytes else ""))
        lines.append(f"      reproduce: {debug_command(prefix, f)}")
    for check, count in sorted(report.suppressed.items()):
        lines.append(f"... and {count} more {check} finding(s) not shown")
    state = "" if report.completed else " (the run stopped early)"
    verdict = "clean" if report.clean else f"{len(report.findings)} finding(s)"
    lines.append(f"sanitize {','.join(report.checks)}: {verdict}; {report.instructions} instructions, "
                 f"{report.cycles} cycles{state}")
    return "\n".join(lines)


def register(root: click.Group) -> None:
    """Attach `xpu sanitize` to the root."""
    root.add_command(sanitize_cmd)
