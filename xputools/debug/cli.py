"""`xpu debug`: the debugger's command line (a thin wrapper over xputools.debug.Debugger)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..clikit import CheckFailed, compile_options, debug_option, feeds_from_options, input_options, program_from_path
from ..errors import UserError


def load_debugger(program: Path, compile_kw: dict, inputs_path: Path | None, random_inputs: bool, seed: int,
                  history_mib: int = 256):
    """The program (or the model, compiled with `compile_kw`) loaded in a Debugger with its inputs;
    reverse execution keeps at most `history_mib` MiB of snapshot pages."""
    from .core import Debugger

    prog = program_from_path(program, compile_kw)
    return Debugger(prog, feeds_from_options(prog, inputs_path, random_inputs, seed), budget_bytes=history_mib << 20)


@click.command("debug")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@compile_options
@input_options
@click.option("-x", "scripts", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Run the commands of a script file (repeatable; before the -ex commands).")
@click.option("-ex", "--eval-command", "commands", multiple=True, metavar="CMD",
              help="Run one command (repeatable, in order).")
@click.option("--history-mib", type=click.IntRange(16, 1 << 20), default=256, show_default=True,
              help="Memory for reverse execution (snapshot pages); over it, older snapshots thin out.")
@click.option("--json", "as_json", is_flag=True, help="Print each command's result as one JSON object per line.")
@click.option("--batch", is_flag=True, help="Run the -x / -ex commands and exit: 1 if a command failed or the "
                                            "program faulted or hung.")
@click.option("--tui", is_flag=True, help="Open the terminal UI (engine columns, node tree, console; docs/tui.md); "
                                          "-x / -ex commands run in its console.")
@debug_option
def debug_cmd(program: Path, inputs_path, random_inputs, seed, scripts, commands, history_mib, as_json, batch, tui,
              **compile_kw) -> None:
    """Debug a program or model on the emulated XPU with gdb's verbs: breakpoints on instructions,
    labels, ONNX nodes or opcodes; watchpoints on SBUF/PSUM/HBM ranges, tensors and semaphores;
    stepping one engine while the others are frozen; reverse execution. See docs/debugger.md.

    \b
    Examples:
      xpu debug samples/programs/gemm512.xasm --random-inputs
      xpu debug samples/programs/gemm512.xasm --random-inputs --tui
      xpu debug samples/cnn.onnx --inputs samples/cnn.inputs.npz -ex 'break op matmul' -ex run -ex bt --batch
      xpu debug prog.xpu --random-inputs -ex 'watch sbuf[0:+128]@0x0{1:256}:f32' -ex run -ex reverse-continue
      xpu debug prog.xasm --random-inputs -ex 'break pe:3' -ex run -ex 'print s2' --batch --json
    """
    from .commands import Commands
    from .console import Session

    lines: list[str] = []
    for script in scripts:
        try:
            lines += script.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{script}: cannot read ({exc})") from None
    lines += list(commands)
    if tui and (batch or as_json):
        raise UserError("--tui excludes --batch and --json")
    dbg = load_debugger(program, compile_kw, inputs_path, random_inputs, seed, history_mib)
    if tui:
        from ..tui import run_app

        run_app(debugger=dbg, startup=["start", *lines] if lines else None)
        return
    session = Session(Commands(dbg), echo=batch or not sys.stdin.isatty(), as_json=as_json)
    session.run_lines(lines)
    if not batch:
        if sys.stdin.isatty():
            session.interactive()
        else:
            session.run_lines(sys.stdin.read().splitlines())
    if session.failed:
        raise CheckFailed("a debugger command failed or the program faulted")


def register(root: click.Group) -> None:
    root.add_command(debug_cmd)
