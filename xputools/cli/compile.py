"""`xpu compile` and `xpu check`: an ONNX model into a `.xpu` program, and what runs where."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..clikit import (
    CheckFailed,
    build_options,
    compile_options,
    debug_option,
    force_option,
    input_files,
    with_compile_progress,
)


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The .xpu to write (default: MODEL.xpu beside the model, never overwriting).")
@force_option
@click.option("--strict", is_flag=True, help="Fail (exit 2, nothing written) if a --keep pattern matches no node.")
@compile_options
@debug_option
def compile_cmd(model: Path, output: Path | None, force: bool, strict: bool, **kw) -> None:
    """Compile an ONNX model into an XPU program (.xpu).

    \b
    Examples:
      xpu compile samples/cnn.onnx -o cnn.xpu
      xpu compile samples/transformer.onnx --shape input_ids=1x16 --precision bf16
      xpu compile model.onnx --precision fp8 --keep 'head/*=fp32'
      xpu compile samples/cnn.onnx --precision int8 --calibration samples/cnn.calib.npz
    """
    from device_model.container import save_program
    from device_model.fileio import check_output

    from ..clikit import fresh_output_path
    from ..compiler.driver import compile_model
    from ..errors import UserError

    inputs = input_files(model, **kw)
    if output:  # before a long compile, not after
        check_output(output, force=force, inputs=inputs)
    options = build_options(**kw)
    compiled = with_compile_progress(lambda progress: compile_model(model, options, progress))
    if compiled.unmatched_keep:
        listed = ", ".join(repr(p) for p in compiled.unmatched_keep)
        if strict:
            raise UserError(f"--strict: --keep pattern(s) {listed} matched no node; nothing written")
        click.echo(f"warning: --keep pattern(s) {listed} matched no node", err=True)
    out = output or fresh_output_path(model.with_suffix(".xpu"))
    save_program(compiled.program, out, force=force, inputs=inputs)
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
    from ..compiler.driver import check_model
    from ..compiler.frontend import parse_shape_spec
    from ..compiler.report import render_check

    report = check_model(model, dict(parse_shape_spec(s) for s in shapes), arch)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render_check(report))
    if strict and any(r["where"] == "host" for r in report["nodes"]):
        raise CheckFailed("--strict: some nodes run on the host")


def register(root: click.Group) -> None:
    """Attach `xpu compile` and `xpu check` to the root."""
    root.add_command(compile_cmd)
    root.add_command(check_cmd)
