"""What `print`, `x`, `display`, `watch` and `dump` read: memory in the assembly's access-pattern
spelling (paste from `xpu disasm`), ONNX / program tensors by name with numpy-style slices, and
semaphores (`s3`); plus breakpoint conditions, evaluated without `eval`."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import numpy as np

from device_model.access import Footprint, footprint
from device_model.assembly import AsmError, parse_ap
from device_model.dtypes import DTYPES
from device_model.isa import AP, SPACES
from device_model.machine import Machine
from device_model.memory import AccessError
from device_model.program import Program, Tap

from ..runtime.taps import read_tap
from .errors import DebugError

EXPR_HELP = ("an access pattern as in the disassembly (sbuf[0:+128]@0x0{1:256}:f32), a tensor name with "
             "optional [slices], or a semaphore sN")
_SEM = re.compile(r"\$?s([0-9]+)")
_AP_START = re.compile(r"(hbm|sbuf|psum)[\[@]")


@dataclass(frozen=True)
class Target:
    """A readable thing: memory through an AP, a tensor (tap or HBM tensor), or a semaphore."""

    kind: str  # "ap", "tap", "tensor", "sem"
    text: str
    ap: AP | None = None
    tap: Tap | None = None
    sem: int = -1
    index: tuple = ()  # numpy index applied after reading

    def footprints(self, program: Program) -> list[Footprint]:
        """The device bytes this target's value lives in (watchpoints)."""
        if self.kind == "ap":
            return [footprint(self.ap)]
        if self.kind == "tap":
            return [footprint(p.ap) for p in self.tap.pieces]
        if self.kind == "tensor":
            t = program.tensor(self.text_name)
            n = max(t.nbytes // np.dtype(DTYPES[t.dtype]).itemsize, 1)
            return [footprint(AP("hbm", t.offset, ((1, n),), t.dtype))]
        return []

    @property
    def text_name(self) -> str:
        return self.text.split("[", 1)[0] if self.kind == "tensor" else self.text


@dataclass
class Value:
    """A value read now: `array` (numpy, or an int for a semaphore) and whether it is current
    (`note` says why not, e.g. a tap whose producing instruction has not retired yet)."""

    target: Target
    array: object
    note: str = ""


def parse_target(text: str, program: Program) -> Target:
    text = text.strip()
    if not text:
        raise DebugError(f"expected {EXPR_HELP}")
    m = _SEM.fullmatch(text)
    if m:
        return Target("sem", text, sem=int(m.group(1)))
    if _AP_START.match(text):
        try:
            return Target("ap", text, ap=parse_ap(text))
        except AsmError as exc:
            raise DebugError(str(exc)) from None
    name, index = text, ()
    if not _known(name, program) and text.endswith("]") and "[" in text:
        name, _, inner = text[:-1].rpartition("[")
        index = parse_index(inner)
    taps = {t.name: t for t in program.taps}
    tap = taps.get(name)
    if tap is not None and tap.pieces:
        return Target("tap", text, tap=tap, index=index)
    if tap is not None and tap.fused_into:
        raise DebugError(f"tensor {name} was fused into {tap.fused_into}: it is never in device memory")
    if any(t.name == name for t in program.tensors):
        return Target("tensor", text, index=index)
    raise DebugError(f"no tensor or memory {name!r}: expected {EXPR_HELP}")


def _known(name: str, program: Program) -> bool:
    return any(t.name == name for t in program.taps) or any(t.name == name for t in program.tensors)


def parse_index(text: str) -> tuple:
    """`0:4, 1, ::2, -1` -> a numpy index (no eval)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if re.fullmatch(r"-?[0-9]+", part):
            out.append(int(part))
            continue
        m = re.fullmatch(r"(-?[0-9]*):(-?[0-9]*)(?::(-?[0-9]*))?", part)
        if not m:
            raise DebugError(f"bad index {part!r}: expected N, A:B or A:B:STEP")
        out.append(slice(*(int(g) if g not in (None, "") else None for g in m.groups())))
    return tuple(out)


def read_target(machine: Machine, target: Target, retired) -> Value:
    """The target's value as memory holds it now. `retired(engine, index)` tells whether an
    instruction has completed (a tap is only valid after its producer)."""
    note = ""
    if target.kind == "sem":
        if not 0 <= target.sem < len(machine.sem):
            raise DebugError(f"no semaphore s{target.sem} (the device has {len(machine.sem)})")
        return Value(target, machine.sem[target.sem])
    try:
        if target.kind == "ap":
            arr = machine.read_ap(target.ap)
        elif target.kind == "tap":
            arr = read_tap(machine, target.tap)
            if not retired(target.tap.after_engine, target.tap.after_index):
                note = (f"not computed yet: valid after {target.tap.after_engine}:{target.tap.after_index} "
                        "retires (showing what memory holds now)")
        else:
            arr = machine.read_tensor(target.text_name)
    except AccessError as exc:
        raise DebugError(str(exc)) from None
    if target.index:
        try:
            arr = arr[target.index]
        except IndexError as exc:
            raise DebugError(f"{target.text}: {exc}") from None
    return Value(target, arr, note)


# ---- x/FMT ---------------------------------------------------------------------------------------
_X_TYPES = {("f", "w"): "f32", ("f", "h"): "bf16", ("f", "g"): "f64",
            ("x", "b"): "u8", ("x", "h"): "u16", ("x", "w"): "u32", ("x", "g"): "u64",
            ("u", "b"): "u8", ("u", "h"): "u16", ("u", "w"): "u32", ("u", "g"): "u64",
            ("d", "b"): "i8", ("d", "h"): "i16", ("d", "w"): "i32", ("d", "g"): "i64"}


def parse_examine(fmt: str, address: str) -> tuple[AP, str]:
    """`x/NFU ADDR`: N elements (per partition) shown as F (x hex, d signed, u unsigned, f float) of
    size U (b, h, w, g); ADDR a full access pattern, or SPACE[P:+N]@OFF / hbm@OFF."""
    m = re.fullmatch(r"([0-9]*)([xduf]?)([bhwg]?)", fmt)
    if not m:
        raise DebugError(f"bad format /{fmt}: expected /NFU, e.g. x/16xw or x/8f (F in x d u f, U in b h w g)")
    count = int(m.group(1) or 8)
    letter = m.group(2) or "x"
    size = m.group(3) or "w"
    address = address.strip()
    if "{" in address:
        try:
            return parse_ap(address), letter
        except AsmError as exc:
            raise DebugError(str(exc)) from None
    am = re.fullmatch(r"(hbm|sbuf|psum)(?:\[([0-9]+):\+([0-9]+)\])?@(0[xX][0-9a-fA-F]+|[0-9]+)", address)
    if not am or am.group(1) not in SPACES:
        raise DebugError(f"bad address {address!r}: expected hbm@OFF, sbuf[P:+N]@OFF or a full access pattern")
    space = am.group(1)
    pstart, pcount = (int(am.group(2)), int(am.group(3))) if am.group(2) else (0, 1)
    dtype = _X_TYPES.get((letter, size))
    if dtype is None:
        raise DebugError(f"format /{letter}{size} has no device dtype")
    ap = AP(space, int(am.group(4), 0), ((1, max(count, 1)),), dtype,
            0 if space == "hbm" else pstart, 1 if space == "hbm" else pcount)
    return ap, letter


# ---- conditions ----------------------------------------------------------------------------------
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
            ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.BinOp, ast.Add, ast.Sub, ast.Mult,
            ast.FloorDiv, ast.Mod, ast.Constant, ast.Name, ast.Load)
COND_HELP = "a condition over sN (semaphore values), time, index, engine, e.g. 's3 >= 2 and time > 1000'"


def parse_condition(text: str) -> ast.Expression:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise DebugError(f"bad condition {text!r}: expected {COND_HELP}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise DebugError(f"condition {text!r}: {type(node).__name__} is not allowed; expected {COND_HELP}")
        if isinstance(node, ast.Name) and not (node.id in ("time", "index", "engine", "hits")
                                               or _SEM.fullmatch(node.id)):
            raise DebugError(f"condition {text!r}: unknown name {node.id!r}; expected {COND_HELP}")
    return tree


def eval_condition(tree: ast.Expression, names: dict, sems: list[int]) -> bool:
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            m = _SEM.fullmatch(node.id)
            return sems[int(m.group(1))] if m and int(m.group(1)) < len(sems) else names.get(node.id, 0)
        if isinstance(node, ast.BoolOp):
            vals = (ev(v) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return (not v) if isinstance(node.op, ast.Not) else -v
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b if b else 0, ast.Mod: lambda: a % b if b else 0}
            return ops[type(node.op)]()
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                ok = {ast.Eq: left == right, ast.NotEq: left != right, ast.Lt: left < right,
                      ast.LtE: left <= right, ast.Gt: left > right, ast.GtE: left >= right}[type(op)]
                if not ok:
                    return False
                left = right
            return True
        raise DebugError("bad condition")

    try:
        return bool(ev(tree))
    except TypeError:
        return False
