"""The one error base of the toolchain. Every error a user can cause derives from `XpuError` and
says, in its message, what is wrong and what to do; its `exit_code` is what the CLI exits with.

It lives in the device model (the bottom layer, which imports nothing above it) so that the device's
own errors and the tools' errors share it.
"""
from __future__ import annotations

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


class XpuError(Exception):
    """Base of every xputools error. `exit_code` 2: bad input or usage (the CLI prints one line);
    1: a check the user asked for failed (a hang found, a gate failed)."""

    exit_code: int = EXIT_BAD_INPUT
