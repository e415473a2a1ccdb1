"""Errors the CLI reports as one line on stderr with exit code 2 (bad usage or bad input)."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (file, option, shape...). The message is the whole story."""
