"""Attach each tool's command group to the `xpu` root (tools that are not built yet are skipped)."""
from __future__ import annotations

import importlib

import click

TOOL_GROUPS = (
    ("xputools.compiler.cli", "register"),
    ("xputools.profile.cli", "register"),
    ("xputools.debug.cli", "register"),
    ("xputools.accuracy.cli", "register"),
)


def register_tools(root: click.Group) -> None:
    for module, fn in TOOL_GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):  # that tool is not built yet
                continue
            raise
        getattr(mod, fn)(root)
