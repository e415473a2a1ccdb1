"""Sanitizers for XPU programs (`xpu sanitize`): race, uninit, bounds, nan, hang and sync checks
over one run on the emulator. `sanitize(program, feeds, checks=...)` returns a SanitizeReport."""
from .core import parse_checks, sanitize
from .findings import CHECKS, SCHEMA, Access, Finding, SanitizeReport

__all__ = ["sanitize", "parse_checks", "CHECKS", "SCHEMA", "Access", "Finding", "SanitizeReport"]
