"""The tools' errors, all `device_model.errors.XpuError`s: the CLI prints their message and exits
with their `exit_code` (2 bad usage or input, 1 a check failed)."""
from __future__ import annotations

from device_model.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, XpuError

__all__ = ["XpuError", "UserError", "CheckFailed", "EXIT_BAD_INPUT", "EXIT_CHECK_FAILED"]


class UserError(XpuError, ValueError):
    """Bad input from the user (file, option, shape...). The message is the whole story."""


class CheckFailed(XpuError):
    """A check the user asked for failed (gate, mismatch, hang found): exit 1."""

    exit_code = EXIT_CHECK_FAILED
