"""`xpu asm` and `xpu disasm`: text assembly ↔ `.xpu` programs."""
from __future__ import annotations

from pathlib import Path

import click

from ..clikit import debug_option, force_option


@click.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .xpu program to write.")
@force_option
@debug_option
def asm(source: Path, output: Path, force: bool) -> None:
    """Assemble a text program (.xasm) into a .xpu program.

    \b
    Example:
      xpu asm samples/programs/gemm512.xasm -o gemm.xpu
    """
    from device_model.assembly import assemble
    from device_model.container import save_program
    from device_model.fileio import check_output

    from ..errors import UserError

    check_output(output, force=force, inputs=[source])
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot read ({exc})") from None
    program = assemble(text, source=str(source))
    program.check_fits(program.arch)  # refuse what cannot run on its arch now, not at `xpu run`
    save_program(program, output, force=force, inputs=[source])
    click.echo(f"wrote {output}: {len(program.instrs)} instructions, {len(program.tensors)} tensors",
               err=True)


@click.command()
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the assembly here instead of stdout.")
@click.option("--no-data", is_flag=True, help="Leave constant data out (the text no longer re-assembles).")
@force_option
@debug_option
def disasm(program: Path, output: Path | None, no_data: bool, force: bool) -> None:
    """Print a .xpu program as assembly (re-assembles to the same program), each instruction
    annotated with the model node it implements.

    \b
    Example:
      xpu disasm model.xpu | less
    """
    from device_model.assembly import disassemble
    from device_model.fileio import check_output, write_text_atomic

    from ..runtime.programs import load_program_file

    if output:
        check_output(output, force=force, inputs=[program])
    text = disassemble(load_program_file(program), data=not no_data, annotate=True)
    if output:
        write_text_atomic(output, text, force=force, inputs=[program])
    else:
        click.echo(text, nl=False)


def register(root: click.Group) -> None:
    """Attach `xpu asm` and `xpu disasm` to the root."""
    root.add_command(asm)
    root.add_command(disasm)
