"""One door for "a program, whatever the user gave": a `.xpu`/`.xasm` file is loaded, an ONNX model
is compiled in memory. The tools (`xpu run`, `xpu-prof record`, the debugger) all open sources here."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from device_model.program import Program

from ..errors import UserError
from ..runtime.programs import load_program_file
from .context import CompileOptions


def load_program_or_model(path: Path | str, options: CompileOptions | None = None,
                          progress: Callable[[int, int], None] | None = None) -> Program:
    """A Program from a `.xpu`/`.xasm` file, or compiled in memory from an `.onnx` model with
    `options` (`progress(done, total)` is called per lowered node). A program file must have been
    built for `options.arch` when that is given (UserError otherwise)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from .driver import compile_model

        return compile_model(path, options, progress).program
    program = load_program_file(path)
    problem = program.arch_mismatch(options.arch) if options is not None and options.arch else None
    if problem:
        raise UserError(f"{path}: {problem}")
    return program
