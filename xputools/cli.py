"""`xpu`: the root command. Each tool registers its own subgroup here."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import __version__
from .clikit import XpuGroup, debug_option


@click.group(cls=XpuGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xpu")
@debug_option
def cli() -> None:
    """XPU developer tools: compile, run, profile, debug and check the accuracy of models on the
    XPU accelerator (emulated on this machine).

    \b
    Examples:
      xpu arch show xpu1
      xpu asm samples/programs/gemm512.xasm -o gemm.xpu
      xpu run gemm.xpu --random-inputs --seed 0 -o out.npz
    """


# ---- arch -------------------------------------------------------------------------------------
@cli.group(cls=XpuGroup)
def arch() -> None:
    """Architecture presets."""


@arch.command("list")
def arch_list() -> None:
    """List the bundled presets."""
    from device_model.arch import load_arch, preset_names

    for name in preset_names():
        click.echo(f"{name:12s} {load_arch(name).raw['description']}")


@arch.command("show")
@click.argument("name", required=False, default="xpu1")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@debug_option
def arch_show(name: str, as_json: bool) -> None:
    """Print a preset (by NAME or TOML FILE) with its derived peaks.

    \b
    Examples:
      xpu arch show
      xpu arch show xpu1-edge --json
      xpu arch show my-variant.toml
    """
    from device_model.arch import load_arch

    desc = load_arch(name).describe()
    if as_json:
        click.echo(json.dumps(desc, indent=2))
        return
    from .archview import render_arch

    click.echo(render_arch(desc))


# ---- assembly ---------------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .xpu program to write.")
@debug_option
def asm(source: Path, output: Path) -> None:
    """Assemble a text program (.xasm) into a .xpu program.

    \b
    Example:
      xpu asm samples/programs/gemm512.xasm -o gemm.xpu
    """
    from device_model.assembly import assemble
    from device_model.container import save_program

    from .errors import UserError

    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot read ({exc})") from None
    program = assemble(text, source=str(source))
    save_program(program, output)
    click.echo(f"wrote {output}: {len(program.instrs)} instructions, {len(program.tensors)} tensors",
               err=True)


@cli.command()
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the assembly here instead of stdout.")
@click.option("--no-data", is_flag=True, help="Leave constant data out (the text no longer re-assembles).")
@debug_option
def disasm(program: Path, output: Path | None, no_data: bool) -> None:
    """Print a .xpu program as assembly (re-assembles to the same program), each instruction
    annotated with the model node it implements.

    \b
    Example:
      xpu disasm model.xpu | less
    """
    from device_model.assembly import disassemble

    from .programs import load_program_file

    text = disassemble(load_program_file(program), data=not no_data, annotate=True)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


# ---- run --------------------------------------------------------------------------------------
def _compile_options(f):
    from .compiler.cli import compile_options

    return compile_options(f)


@cli.command()
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz with one array per input, keyed by input name.")
@click.option("--random-inputs", is_flag=True, help="Feed deterministic random inputs instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-inputs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the outputs to this .npz, keyed by output name.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@_compile_options
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
    from .errors import UserError
    from .runreport import render_run
    from .runtime import random_inputs as make_random
    from .runtime import read_npz, run_program, write_npz

    prog = load_program_or_model(program, compile_kw)
    if inputs_path and random_inputs:
        raise UserError("give either --inputs or --random-inputs, not both")
    if inputs_path:
        feeds = read_npz(inputs_path)
    elif random_inputs or not prog.inputs():
        feeds = make_random(prog, seed)
    else:
        raise UserError("the program has inputs: give --inputs IN.npz or --random-inputs")
    out = run_program(prog, feeds)
    from .compiler.lower import onnx_outputs

    out.outputs = onnx_outputs(prog, out.outputs)
    if output:
        write_npz(output, out.outputs)
    click.echo(render_run(prog, out, as_json=as_json))


def load_program_or_model(path: Path, compile_kw: dict):
    """A Program from .xpu/.xasm, or compiled in memory from .onnx."""
    if path.suffix == ".onnx":
        from .compiler.cli import build_options, compile_with_progress

        return compile_with_progress(path, build_options(**compile_kw)).program
    from .programs import load_program_file

    return load_program_file(path)


def main() -> None:
    from .registry import register_tools

    register_tools(cli)
    cli(prog_name="xpu")
