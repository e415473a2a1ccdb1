"""What a sanitizer run returns: findings (each naming every instruction involved) and the report.

The JSON form (`SanitizeReport.to_json`) is versioned by `SCHEMA` and documented in docs/sanitize.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA = "xpu-sanitize/1"
CHECKS = ("race", "uninit", "bounds", "nan", "hang", "sync")
# "fault" is not selectable: a run that stops on a device fault is always reported.
ALL_KINDS = CHECKS + ("fault",)


@dataclass(frozen=True)
class Access:
    """One side of a finding: an instruction and, where memory is involved, the bytes it touched."""

    engine: str  # spelled as in the assembly: pe, act, dve, pool, dma0..dma15, host
    index: int  # position in that engine's stream (`break ENGINE:INDEX` in xpu debug)
    opcode: str
    ap: str | None = None  # the operand's access pattern, assembly spelling
    operand: str | None = None  # dst, src, a, ...
    access: str | None = None  # "read" or "write"
    node: str | None = None  # the ONNX node (or hand-written origin) the instruction implements
    bytes: str | None = None  # the bytes involved, e.g. "sbuf partitions 0..127 bytes 0x0..0xff"

    def to_json(self) -> dict:
        return {"engine": self.engine, "index": self.index, "opcode": self.opcode, "ap": self.ap,
                "operand": self.operand, "access": self.access, "node": self.node, "bytes": self.bytes}

    def where(self) -> str:
        text = f"{self.engine} #{self.index} {self.opcode}"
        if self.operand:
            text += f" {self.access or ''} {self.operand}={self.ap}".replace("  ", " ")
        if self.node:
            text += f" (node {self.node})"
        return text


@dataclass
class Finding:
    check: str  # one of ALL_KINDS
    kind: str  # e.g. RAW, WAR, WAW, uninit-read, memory, tensor, nonfinite, deadlock, under-signalled
    message: str
    accesses: list[Access] = field(default_factory=list)
    debug: list[str] = field(default_factory=list)  # xpu debug commands that stop at the finding
    jitter_seed: int | None = None  # found only in a run with timing jitter (this seed)

    def to_json(self) -> dict:
        return {"check": self.check, "kind": self.kind, "message": self.message,
                "accesses": [a.to_json() for a in self.accesses], "debug": list(self.debug),
                "jitter_seed": self.jitter_seed}


@dataclass
class SanitizeReport:
    checks: tuple[str, ...]
    findings: list[Finding] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)  # check -> findings beyond the cap
    completed: bool = True  # False when a hang or fault stopped the run early
    instructions: int = 0  # instructions that completed
    cycles: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "checks": list(self.checks), "completed": self.completed,
                "instructions": self.instructions, "cycles": self.cycles,
                "findings": [f.to_json() for f in self.findings],
                "suppressed": dict(self.suppressed)}
