"""`xpu run`: run a program or an ONNX model on the emulated XPU and print what it produced."""
from __future__ import annotations

from pathlib import Path

import click

from ..clikit import compile_options, debug_option


@click.command()
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz with one array per input, keyed by input name.")
@click.option("--random-inputs", is_flag=True, help="Feed deterministic random inputs instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-inputs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the outputs to this .npz, keyed by output name.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@compile_options
@debug_option
def run(program: Path, inputs_path: Path | None, random_inputs: bool, seed: int, output: Path | None,
        as_json: bool, **compile_kw) -> None:
    """Run a program (.xpu, .xasm) or an ONNX model (compiled in memory first, with the same
    options as `xpu compile`) on the emulated XPU; print outputs, cycles and engine busy time.

    \b
    Examples:
      xpu run samples/cnn.onnx --inputs samples/cnn.inputs.npz -o out.npz
      xpu run samples/transformer.onnx --shape input_ids=1x16 --random-inputs --precision bf16
      xpu run gemm.xpu --random-inputs --seed 1
    """
    from ..clikit import program_from_path
    from ..compiler.outputs import onnx_outputs
    from ..errors import UserError
    from ..runtime import random_inputs as make_random
    from ..runtime import read_npz, run_program, write_npz
    from ..runtime.report import render_run

    prog = program_from_path(program, compile_kw)
    if inputs_path and random_inputs:
        raise UserError("give either --inputs or --random-inputs, not both")
    if inputs_path:
        feeds = read_npz(inputs_path)
    elif random_inputs or not prog.inputs():
        feeds = make_random(prog, seed)
    else:
        raise UserError("the program has inputs: give --inputs IN.npz or --random-inputs")
    out = run_program(prog, feeds)
    out.outputs = onnx_outputs(prog, out.outputs)
    if output:
        write_npz(output, out.outputs)
    click.echo(render_run(prog, out, as_json=as_json))


def register(root: click.Group) -> None:
    """Attach `xpu run` to the root."""
    root.add_command(run)
