"""Compiler errors. `CompileError` is bad user input (the CLI prints its one line and exits 2)."""
from __future__ import annotations

from ..errors import UserError


class CompileError(UserError):
    """The model, its shapes or the options cannot be compiled; the message says why and what to do."""


class UnsupportedError(CompileError):
    """The model uses something this compiler cannot handle at all (not even on the host)."""
