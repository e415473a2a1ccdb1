"""`xpu`: the root command. It only registers command groups: the root's own commands (one module
each in this package) and every tool's group (`xputools/<tool>/cli.py` with `register(root)`)."""
from __future__ import annotations

import importlib

import click

from .. import __version__
from ..clikit import XpuGroup, debug_option
from . import arch, asm, compile, run, tui

# Tool groups: each `xputools/<tool>/cli.py` defines `register(root)`. Adding a tool is one line here.
# A missing module fails loudly (no tool is skipped silently).
TOOL_CLIS = (
    "xputools.profile.cli",
    "xputools.debug.cli",
    "xputools.debug.sanitize.cli",
    "xputools.accuracy.cli",
)


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


for _module in (arch, asm, run, compile, tui):
    _module.register(cli)
for _name in TOOL_CLIS:
    importlib.import_module(_name).register(cli)


def main() -> None:
    """The `xpu` console script."""
    cli(prog_name="xpu")
