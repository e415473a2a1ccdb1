"""Sanitizers for XPU programs (`xpu sanitize`): race, uninit, bounds, nan, hang and sync checks
over one run on the emulator. `sanitize(program, feeds, checks=...)` returns a SanitizeReport."""
import importlib

# Lazy, so that registering `xpu sanitize` does not import the checks (numpy, the machine).
_WHERE = {"sanitize": "core", "parse_checks": "core", "CHECKS": "findings", "SCHEMA": "findings",
          "Access": "findings", "Finding": "findings", "SanitizeReport": "findings"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
