"""Shared CLI plumbing for the root `xpu` commands and every tool's `cli.py`: error reporting (one
line, exit 2), --debug tracebacks, output names, and the compile options that `xpu compile`, `xpu run`
and `xpu-prof record/sweep` share. It lives outside the `xputools.cli` package so that a tool's CLI
never imports the root that registers it."""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from device_model.errors import EXIT_BAD_INPUT, XpuError

from .compiler.precision import PRECISIONS
from .errors import CheckFailed

__all__ = ["CheckFailed", "XpuGroup", "debug_option", "compile_options", "build_options", "program_from_path",
           "input_options", "feeds_from_options", "with_compile_progress", "fresh_output_path", "stderr_is_terminal"]

if TYPE_CHECKING:  # annotations only: importing these at start-up would load numpy
    from device_model.program import Program

    from .compiler.context import CompileOptions

EXIT_INTERNAL_ERROR = 3
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
ProgressFn = Callable[[int, int], None]


class XpuGroup(click.Group):
    """A click group that turns an XpuError into its message on stderr and its `exit_code`; any other
    exception is an internal error (exit 3, traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            debug = ctx.meta.get("xpu_debug") or "--debug" in sys.argv[1:]
            if debug:
                traceback.print_exc()
            if isinstance(exc, XpuError):
                if exc.exit_code == EXIT_BAD_INPUT:
                    click.echo(f"error: {_one_line(exc)}", err=True)
                elif str(exc):  # a failed check: its report, as written
                    click.echo(str(exc), err=True)
                ctx.exit(exc.exit_code)
            if not debug:
                click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                           "(rerun with --debug for the traceback)", err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()) if len(text.splitlines()) <= 3 else text.splitlines()[0]


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.meta["xpu_debug"] = True


def debug_option(f: F) -> F:
    """`--debug`: show the traceback of an error instead of its one line."""
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                        help="Show the Python traceback on errors.")(f)


def stderr_is_terminal() -> bool:
    """Progress bars only on a terminal; quiet when piped or captured."""
    return sys.stderr.isatty()


def force_option(f):
    """`--force`: let a writer replace an existing output file (never one of the command's inputs)."""
    return click.option("--force", is_flag=True, help="Overwrite an existing output file.")(f)


def input_files(*paths, **compile_kw) -> list[Path]:
    """Every file a command reads (its arguments and the compile options' files), so a writer can
    refuse to write over any of them."""
    extra = [compile_kw.get(k) for k in ("calibration", "const_inputs", "keep_file", "arch")]
    return [Path(p) for p in (*paths, *extra) if p]


def fresh_output_path(path: Path) -> Path:
    """`path` if free, else the first `stem-N.suffix` that is (default names never overwrite)."""
    if not path.exists():
        return path
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    n = 1
    while True:
        candidate = path.with_name(f"{stem}-{n}{suffixes}")
        if not candidate.exists():
            return candidate
        n += 1


# ---- inputs for every command that runs a program ---------------------------------------------------
def input_options(f: F) -> F:
    """--inputs IN.npz, --random-inputs, --seed N (read them with `feeds_from_options`)."""
    opts = [
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-inputs."),
        click.option("--random-inputs", is_flag=True, help="Feed deterministic random inputs instead."),
        click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
                     help=".npz with one array per input, keyed by input name."),
    ]
    for opt in opts:
        f = opt(f)
    return f


def feeds_from_options(program: Program, inputs_path: Path | None, random_inputs: bool, seed: int) -> dict:
    """The feeds `input_options` describe: the .npz, or seeded random inputs (also for a program
    without inputs); UserError when both or neither are given for a program that has inputs."""
    from .errors import UserError
    from .runtime import random_inputs as make_random
    from .runtime import read_npz

    if inputs_path and random_inputs:
        raise UserError("give either --inputs or --random-inputs, not both")
    if inputs_path:
        return read_npz(inputs_path)
    if random_inputs or not program.inputs():
        return make_random(program, seed)
    raise UserError("the program has inputs: give --inputs IN.npz or --random-inputs")


# ---- compile options shared by every command that accepts an ONNX model --------------------------
def compile_options(f: F) -> F:
    """--precision, --keep, --keep-file, --shape, --calibration, --const-inputs, --arch."""
    opts = [
        click.option("--arch", help="Arch preset name or TOML file [default: xpu1]. For a .xpu/.xasm program: "
                                    "the arch it must have been built for."),
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
        click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32",
                     show_default=True, help="Precision of matmul/conv operands and activation tables."),
    ]
    for opt in opts:
        f = opt(f)
    return f


def build_options(precision: str, keep: Iterable[str], keep_file: Path | None, shapes: Iterable[str],
                  calibration: Path | None, calibration_method: str, arch: str | None,
                  const_inputs: Path | None = None) -> CompileOptions:
    """The CompileOptions that the `compile_options` flags describe (files read, specs parsed)."""
    from .compiler.keepfile import options_from_spec

    return options_from_spec(precision, keep, keep_file, shapes, calibration, calibration_method, arch, const_inputs)


def with_compile_progress(work: Callable[[ProgressFn | None], T]) -> T:
    """Call `work(progress)`; on a terminal `progress(done, total)` drives a transient progress bar,
    elsewhere it is None (quiet when piped)."""
    if not stderr_is_terminal():
        return work(None)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("lowering", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def program_from_path(path: Path, compile_kw: dict) -> Program:
    """The Program a command-line source names: `.xpu`/`.xasm` loaded, `.onnx` compiled in memory
    with the `compile_options` flags in `compile_kw` (progress bar on a terminal)."""
    from .compiler.context import CompileOptions
    from .compiler.loading import load_program_or_model

    if Path(path).suffix == ".onnx":
        options = build_options(**compile_kw)
    else:  # a built program: only --arch means something (the arch it must be for)
        options = CompileOptions(arch=compile_kw.get("arch"))
    return with_compile_progress(lambda progress: load_program_or_model(path, options, progress))

