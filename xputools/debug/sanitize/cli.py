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
    from .core import parse_checks, sanitize

    chosen = parse_checks(checks)
    prog = program_from_path(program, compile_kw)
    feeds = feeds_from_options(prog, inputs_path, random_inputs, seed)
    report = sanitize(prog, feeds, chosen, jitter=jitter)
    prefix = debug_command_prefix(program, compile_kw)
    if as_json:
        click.echo(json.dumps(report_json(report, prefix), indent=2))
    else:
        click.echo(render_report(report, prefix))
    if not report.clean:
        raise CheckFailed()


_DEFAULTS = {"arch": "xpu1", "calibration_method": "minmax", "precision": "fp32"}


def debug_command_prefix(program: Path, compile_kw: dict) -> list[str]:
    """`xpu debug PROGRAM` with the compile options the user gave (so the same program is debugged)."""
    words = ["xpu", "debug", str(program)]
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
