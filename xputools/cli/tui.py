"""`xpu tui`: the terminal UI over one model: Debug, Profile and Accuracy tabs (docs/tui.md)."""
from __future__ import annotations

from pathlib import Path

import click

from ..clikit import compile_options, debug_option, input_options


@click.command("tui")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@compile_options
@input_options
@debug_option
def tui_cmd(model: Path, inputs_path: Path | None, random_inputs: bool, seed: int, **compile_kw) -> None:
    """Open MODEL (.onnx, or a .xpu/.xasm program) in the terminal UI: the Debug tab (engine columns,
    node tree, console with every `xpu debug` command), the Profile tab (timeline, layers, critical
    path; recorded in the background at start) and, for an ONNX model, the Accuracy tab (`xpu acc compare` against
    ONNX Runtime; keep a node at fp32 and re-run). ? lists the keys, q quits.

    \b
    Examples:
      xpu tui samples/mlp.onnx --inputs samples/mlp.inputs.npz
      xpu tui samples/cnn.onnx --precision bf16 --random-inputs
      xpu tui samples/programs/gemm512.xasm --random-inputs
    """
    from ..clikit import feeds_from_options, program_from_path
    from ..tui import run_app
    from ..tui.sessions import ModelSession

    program = program_from_path(model, compile_kw)
    feeds = feeds_from_options(program, inputs_path, random_inputs, seed)
    session = ModelSession(model, compile_kw, feeds, program)
    try:
        run_app(**session.app_kwargs())
    finally:
        session.close()


def register(root: click.Group) -> None:
    root.add_command(tui_cmd)
