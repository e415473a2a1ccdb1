"""The one error a debugger command raises for bad input: its message is the line of help."""
from __future__ import annotations

from ..errors import UserError


class DebugError(UserError):
    """A command that cannot be done as given (bad location, unknown tensor, program not running...)."""
