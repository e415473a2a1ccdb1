"""`xpu run`: run a program or an ONNX model on the emulated XPU and print what it produced."""
from __future__ import annotations

from pathlib import Path

import click

from ..clikit import compile_options, debug_option, force_option, input_files, input_options


@click.command()
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@input_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the outputs to this .npz (the name as given), keyed by output name.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@force_option
@compile_options
@debug_option
def run(program: Path, inputs_path: Path | None, random_inputs: bool, seed: int, output: Path | None,
        as_json: bool, force: bool, **compile_kw) -> None:
    """Run a program (.xpu, .xasm) or an ONNX model (compiled in memory first, with the same
    options as `xpu compile`) on the emulated XPU; print outputs, cycles and engine busy time.

    \b
    Examples:
      xpu run samples/cnn.onnx --inputs samples/cnn.inputs.npz -o out.npz
      xpu run samples/transformer.onnx --shape input_ids=1x16 --random-inputs --precision bf16
      xpu run gemm.xpu --random-inputs --seed 1
    """
    from device_model.fileio import check_output

    from ..clikit import feeds_from_options, program_from_path
    from ..compiler.outputs import onnx_outputs
    from ..runtime import run_program, write_npz
    from ..runtime.report import render_run

    inputs = input_files(program, inputs_path, **compile_kw)
    if output:  # before compiling and running, not after
        check_output(output, force=force, inputs=inputs)
    prog = program_from_path(program, compile_kw)
    feeds = feeds_from_options(prog, inputs_path, random_inputs, seed)
    out = run_program(prog, feeds)
    out.outputs = onnx_outputs(prog, out.outputs)
    if output:
        write_npz(output, out.outputs, force=force, inputs=inputs)
        click.echo(f"wrote {output}", err=True)
    click.echo(render_run(prog, out, as_json=as_json))


def register(root: click.Group) -> None:
    """Attach `xpu run` to the root."""
    root.add_command(run)
