"""Breakpoint locations: `ENGINE:INDEX`, `INDEX` (on the focused engine), a label, `node NAME_OR_GLOB`
or `op OPCODE`, resolved against a program to the instructions they name."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from device_model.isa import ENGINES, OPCODES
from device_model.program import Program

from .errors import DebugError

LOC_HELP = "LOC is ENGINE:INDEX (e.g. pe:12), INDEX on the focused engine, a label, node NAME_OR_GLOB or op OPCODE"


@dataclass(frozen=True)
class Location:
    kind: str  # "instr", "label", "node", "op"
    text: str
    instrs: frozenset[tuple[str, int]]  # (engine, index) it names
    nodes: frozenset[int] = frozenset()  # origin indices (node locations stop once per node)


class ProgramIndex:
    """Per-engine streams and origin lookups of a program, built once."""

    def __init__(self, program: Program):
        self.program = program
        self.streams = {e: s for e, s in program.streams().items() if s}
        self.labels: dict[str, tuple[str, int]] = {}
        self.by_dbg: dict[int, list[tuple[str, int]]] = {}
        self.by_op: dict[str, list[tuple[str, int]]] = {}
        for engine, stream in self.streams.items():
            for i, ins in enumerate(stream):
                if ins.label is not None:
                    self.labels.setdefault(ins.label, (engine, i))
                self.by_dbg.setdefault(ins.dbg, []).append((engine, i))
                self.by_op.setdefault(ins.op, []).append((engine, i))

    def instr(self, engine: str, index: int):
        return self.streams[engine][index]

    def node_name(self, dbg: int) -> str:
        return self.program.origins[dbg].name if 0 <= dbg < len(self.program.origins) else ""

    def resolve(self, text: str, focus: str) -> Location:
        text = text.strip()
        if not text:
            raise DebugError(f"missing location: {LOC_HELP}")
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word == "node":
            return self._node(rest, text)
        if word == "op":
            if rest not in OPCODES:
                raise DebugError(f"unknown opcode {rest!r} (one of {', '.join(OPCODES)})")
            found = self.by_op.get(rest, [])
            if not found:
                raise DebugError(f"no instruction of the program has opcode {rest}")
            return Location("op", text, frozenset(found))
        m = re.fullmatch(r"(?:([a-z]+[0-9]*):)?([0-9]+)", text)
        if m:
            engine = m.group(1) or focus
            if engine not in ENGINES:
                raise DebugError(f"unknown engine {engine!r} (pe, act, dve, pool, dma0..dma15, host)")
            index = int(m.group(2))
            count = len(self.streams.get(engine, ()))
            if index >= count:
                raise DebugError(f"{engine} has {count} instructions (0..{count - 1}), no #{index}")
            return Location("instr", f"{engine}:{index}", frozenset([(engine, index)]))
        if text in self.labels:
            return Location("label", text, frozenset([self.labels[text]]))
        raise DebugError(f"no location {text!r}: {LOC_HELP}")

    def _node(self, pattern: str, text: str) -> Location:
        if not pattern:
            raise DebugError("node needs a NAME or glob, e.g. break node '/layer.0/*'")
        pattern = pattern.strip("'\"")
        origins = self.program.origins
        exact = [i for i, o in enumerate(origins) if o.name == pattern]
        matched = exact or [i for i, o in enumerate(origins) if fnmatch.fnmatchcase(o.name, pattern)]
        if not matched:  # a node the compiler replaced by several (its ONNX function body, a rewrite)
            matched = [i for i, o in enumerate(origins) if o.name.startswith(pattern + "/")]
        matched = [i for i in matched if i in self.by_dbg]
        if not matched:
            raise DebugError(f"no node matches {pattern!r}" + ("" if origins else " (the program names no nodes)"))
        instrs = [ref for i in matched for ref in self.by_dbg[i]]
        return Location("node", text, frozenset(instrs), frozenset(matched))
