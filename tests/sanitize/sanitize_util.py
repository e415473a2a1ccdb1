"""Helpers for the sanitizer tests: load a hand-written program, run the sanitizers on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from device_model.assembly import assemble
from xputools.debug.sanitize import sanitize
from xputools.runtime import random_inputs

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "samples" / "programs"


def program_text(name: str) -> str:
    return (PROGRAMS / name).read_text(encoding="utf-8")


def sanitize_text(text: str, checks=None, seed: int = 0):
    program = assemble(text, source="test.xasm")
    return sanitize(program, random_inputs(program, seed), checks)


def sides(finding) -> list[tuple[str, int, str | None]]:
    """(engine, index, operand) of each access of a finding."""
    return [(a.engine, a.index, a.operand) for a in finding.accesses]


def summary(report) -> list[tuple[str, str]]:
    return [(f.check, f.kind) for f in report.findings]


def rng_feeds(program, seed: int) -> dict[str, np.ndarray]:
    return random_inputs(program, seed)
