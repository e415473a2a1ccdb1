"""`xpu compile` and `xpu check`, and the compile options `xpu run` shares for ONNX models."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..clikit import CheckFailed, debug_option, stderr_is_terminal
from ..errors import UserError


def compile_options(f):
    """--precision, --keep, --keep-file, --shape, --calibration, --arch."""
    opts = [
        click.option("--arch", default="xpu1", show_default=True, help="Arch preset name or TOML file."),
        click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path),
                     help="int8: .npz of calibration samples (each input name -> [samples, ...shape]).",),
        click.option("--calibration-method", type=click.Choice(["minmax", "percentile"]), default="minmax",
                     show_default=True, help="How --calibration picks int8 ranges."),
        click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
                     help="Bind an input's symbolic dims, e.g. --shape x=1x3x320x320 (repeatable)."),
        click.option("--const-inputs", type=click.Path(dir_okay=False, path_type=Path),
                     help=".npz of inputs to freeze into constants (e.g. a Reshape's shape input)."),
        click.option("--keep-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File of NODE_OR_GLOB=DTYPE lines (# comments), same as --keep."),
        click.option("--keep", multiple=True, metavar="NODE_OR_GLOB=DTYPE",
                     help="Keep matching nodes in another precision, e.g. --keep 'head/*=fp32' (repeatable)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "fp8", "int8"]), default="fp32",
                     show_default=True, help="Precision of matmul/conv operands and activation tables."),
    ]
    for opt in opts:
        f = opt(f)
    return f


def build_options(precision, keep, keep_file, shapes, calibration, calibration_method, arch, const_inputs=None):
    from device_model.arch import load_arch

    from ..runtime import read_npz
    from .context import CompileOptions
    from .frontend import parse_shape_spec

    pairs = [_keep_pair(k, "--keep") for k in keep]
    if keep_file:
        try:
            lines = keep_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{keep_file}: cannot read ({exc})") from None
        for i, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                pairs.append(_keep_pair(line, f"{keep_file}:{i}"))
    bound = dict(parse_shape_spec(s) for s in shapes)
    calib = read_npz(calibration) if calibration else None
    frozen = read_npz(const_inputs) if const_inputs else {}
    return CompileOptions(precision=precision, keep=pairs, shapes=bound, calibration=calib,
                          calibration_method=calibration_method, arch=load_arch(arch), const_inputs=frozen)


def _keep_pair(text: str, where: str) -> tuple[str, str]:
    pattern, sep, dtype = text.rpartition("=")
    if not sep or not pattern:
        raise UserError(f"{where}: expected NODE_OR_GLOB=DTYPE, e.g. 'head/*=fp32', got {text!r}")
    return pattern.strip(), dtype.strip()


def compile_with_progress(model: Path, options):
    """Compile, with a progress bar on a terminal for models with many nodes."""
    from rich.progress import Progress

    from .driver import compile_model

    console_ok = stderr_is_terminal()
    if not console_ok:
        return compile_model(model, options)
    with Progress(transient=True) as bar:
        task = bar.add_task("lowering", total=None)
        return compile_model(model, options, progress=lambda done, total: bar.update(task, completed=done,
                                                                                      total=total))


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The .xpu to write (default: MODEL.xpu beside the model, never overwriting).")
@compile_options
@debug_option
def compile_cmd(model: Path, output: Path | None, **kw) -> None:
    """Compile an ONNX model into an XPU program (.xpu).

    \b
    Examples:
      xpu compile samples/cnn.onnx -o cnn.xpu
      xpu compile samples/transformer.onnx --shape input_ids=1x16 --precision bf16
      xpu compile model.onnx --precision fp8 --keep 'head/*=fp32'
      xpu compile samples/cnn.onnx --precision int8 --calibration samples/cnn.calib.npz
    """
    from device_model.container import save_program

    from ..clikit import fresh_output_path

    options = build_options(**kw)
    compiled = compile_with_progress(model, options)
    out = output or fresh_output_path(model.with_suffix(".xpu"))
    save_program(compiled.program, out)
    prog = compiled.program
    host = [h.op_type for h in prog.host_ops]
    click.echo(f"wrote {out}: {len(prog.instrs)} instructions, {len(compiled.graph.nodes)} nodes"
               + (f", {len(host)} on the host ({', '.join(sorted(set(host)))})" if host else ", all on the device"),
               err=True)


@click.command("check")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS", help="Bind an input's symbolic dims.")
@click.option("--arch", default="xpu1", show_default=True, help="Arch preset name or TOML file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--strict", is_flag=True, help="Exit 1 if any node runs on the host.")
@debug_option
def check_cmd(model: Path, shapes, arch: str, as_json: bool, strict: bool) -> None:
    """Say what runs where: a per-node table (device / host and why), op counts, weights and the
    largest SBUF working set.

    \b
    Examples:
      xpu check samples/cnn.onnx
      xpu check samples/transformer.onnx --shape input_ids=1x16 --json
      xpu check model.onnx --strict      # exit 1 if anything falls back to the host
    """
    from .frontend import import_model, load_model, parse_shape_spec
    from .passes import run_passes
    from .report import render_check
    from .support import check_report

    graph = run_passes(import_model(load_model(model), dict(parse_shape_spec(s) for s in shapes)))
    report = check_report(graph, arch)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render_check(report))
    if strict and any(r["where"] == "host" for r in report["nodes"]):
        raise CheckFailed("--strict: some nodes run on the host")


def register(root: click.Group) -> None:
    root.add_command(compile_cmd)
    root.add_command(check_cmd)
