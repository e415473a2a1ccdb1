"""Shared CLI plumbing: error reporting (one line, exit 2), --debug tracebacks, output safety."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CheckFailed(Exception):
    """A check the user asked for failed (gate, mismatch, hang found): exit 1."""


def _user_error_types() -> tuple[type, ...]:
    from device_model.arch import ArchError
    from device_model.isa import IsaError
    from device_model.memory import AccessError

    from .errors import UserError

    types: list[type] = [UserError, ArchError, IsaError, AccessError, click.FileError]
    for mod, name in (("device_model.assembly", "AsmError"), ("device_model.container", "ProgramFormatError"),
                      ("xputools.compiler.errors", "CompileError")):
        try:
            types.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


class XpuGroup(click.Group):
    """A click group that turns known errors into one stderr line and the documented exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CheckFailed as exc:
            if str(exc):
                click.echo(str(exc), err=True)
            ctx.exit(EXIT_CHECK_FAILED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            from device_model.machine import HangError, MachineError

            debug = ctx.meta.get("xpu_debug") or "--debug" in sys.argv[1:]
            if debug:
                traceback.print_exc()
            if isinstance(exc, HangError):
                click.echo(str(exc), err=True)
                ctx.exit(EXIT_CHECK_FAILED)
            if isinstance(exc, (MachineError,) + _user_error_types()):
                click.echo(f"error: {_one_line(exc)}", err=True)
                ctx.exit(EXIT_BAD_INPUT)
            if not debug:
                click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                           "(rerun with --debug for the traceback)", err=True)
            ctx.exit(3)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()) if len(text.splitlines()) <= 3 else text.splitlines()[0]


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.meta["xpu_debug"] = True


def debug_option(f):
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                        help="Show the Python traceback on errors.")(f)


def stderr_is_terminal() -> bool:
    """Progress bars only on a terminal; quiet when piped or captured."""
    return sys.stderr.isatty()


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
