"""XPU text assembly: format and parse access patterns, instructions and whole programs.

The text round-trips exactly: `assemble(disassemble(p)) == p` for every valid Program, and
`parse_instr(format_instr(i)) == i` for every valid Instr. The grammar is in docs/assembly.md.
"""
from __future__ import annotations

import base64
import binascii
import json
import re

from .arch import Arch, ArchError, arch_from_dict, load_arch, preset_names
from .dtypes import np_dtype
from .errors import XpuError
from .isa import (
    AP,
    ENGINES,
    IDENT_RE,
    LABEL_RE,
    OPCODES,
    SEM_OP,
    SPACES,
    Instr,
    IsaError,
    OpSpec,
    engine_kind,
    format_ap,
    format_instr,
    format_instr_body,
    format_label,
    format_scalar,
    validate_ap,
    validate_instr,
)
from .program import TENSOR_KINDS, HostOp, Origin, Program, Tap, TapPiece, Tensor

# the text codec; the spelling of one AP or instruction lives with them in `isa` (str(ap) is it)
__all__ = ["AsmError", "assemble", "disassemble", "parse_ap", "parse_instr", "parse_instructions", "format_ap",
           "format_instr", "format_label", "format_name", "format_shape", "opcode_reference_markdown"]

DEFAULT_ARCH_NAME = "xpu1"
DIRECTIVES = (".arch", ".archdesc", ".meta", ".tensor", ".origin", ".hostop", ".tap", ".piece")


class AsmError(XpuError, ValueError):
    """Text that is not valid XPU assembly; the message names the place and what was expected."""


_NAME = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:\-]*\Z")  # tensor/node names spelled without quotes
_DEC = re.compile(r"[+-]?[0-9]+\Z")
_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)\Z")
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|nan)\Z")
_SEM = {"wait": re.compile(r"s([0-9]+)>=([0-9]+)\Z"), "signal": re.compile(r"s([0-9]+)\+=([0-9]+)\Z")}
_SPACE_CHARS = " \t\r\f\v"


# ---- scalars and names ------------------------------------------------------------------------

def _to_int(text: str, what: str) -> int:
    if not _INT.match(text):
        raise AsmError(f"{what}: expected an integer (decimal or 0x hex), got {text!r}")
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-")
    try:
        return sign * int(digits, 0 if digits[:2] in ("0x", "0X") else 10)
    except ValueError as exc:  # more digits than Python converts
        raise AsmError(f"{what}: {exc}") from None


def _to_dec(text: str, what: str) -> int:
    if not _DEC.match(text):
        raise AsmError(f"{what}: expected a decimal integer, got {text!r}")
    return _to_int(text, what)


def _quoted(text: str, what: str) -> str:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise AsmError(f"{what}: bad quoted string {text!r} (expected one JSON string)") from None
    if not isinstance(value, str):
        raise AsmError(f"{what}: expected a \"quoted string\", got {text!r}")
    return value


def format_name(name: str) -> str:
    """A name as assembly spells it: bare when it is simple, else a JSON string."""
    return name if _NAME.match(name) else json.dumps(name)


def _name(text: str, what: str) -> str:
    if text.startswith('"'):
        return _quoted(text, what)
    if _NAME.match(text):
        return text
    raise AsmError(f"{what}: expected a name (letters, digits, _ . / : -) or a \"quoted string\", "
                   f"got {text!r}")


def _parse_scalar(text: str, types, what: str):
    types = types if isinstance(types, tuple) else (types,)
    if int in types and _INT.match(text):
        return _to_int(text, what)
    if float in types and (_FLOAT.match(text) or _INT.match(text)):
        if _INT.match(text):
            return float(_to_int(text, what))
        return float(text)
    if str in types:
        if text.startswith('"'):
            return _quoted(text, what)
        if IDENT_RE.match(text):
            return text
        raise AsmError(f"{what}: expected an identifier, got {text!r}")
    expected = " or ".join({int: "an integer", float: "a number (e.g. 1.5, -0.0, inf, nan)"}[t]
                           for t in types)
    raise AsmError(f"{what}: expected {expected}, got {text!r}")


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise AsmError(f"{what}: expected base64 data") from None


# ---- access patterns --------------------------------------------------------------------------

_AP_FORM = "SPACE[pstart:+pcount]@OFFSET{stride:count,...}:DTYPE"


def parse_ap(text: str) -> AP:
    """Parse `hbm@0x1000{512:128,1:512}:f32` or `sbuf[0:+128]@0x400{1:512}:bf16` (validated)."""
    m = re.match(r"[a-z]+", text)
    if not m:
        raise AsmError(f"expected an access pattern {_AP_FORM}, got {text!r}")
    space, pos = m.group(), m.end()
    if space not in SPACES:
        raise AsmError(f"access pattern {text!r}: unknown memory space {space!r} "
                       f"(expected {', '.join(SPACES)})")
    pstart, pcount = 0, 1
    m = re.compile(r"\[([0-9]+):\+([0-9]+)\]").match(text, pos)
    if m:
        pstart, pcount, pos = _to_int(m.group(1), "pstart"), _to_int(m.group(2), "pcount"), m.end()
    elif text.startswith("[", pos):
        raise AsmError(f"access pattern {text!r}: expected a partition range [pstart:+pcount]")
    elif space != "hbm":
        raise AsmError(f"access pattern {text!r}: {space} needs a partition range [pstart:+pcount] "
                       f"after {space!r}")
    m = re.compile(r"@(0[xX][0-9a-fA-F]+|[0-9]+)").match(text, pos)
    if not m:
        raise AsmError(f"access pattern {text!r}: expected @OFFSET (bytes, decimal or 0x hex) "
                       f"after {text[:pos]!r}")
    offset, pos = _to_int(m.group(1), "offset"), m.end()
    m = re.compile(r"\{([^{}]*)\}").match(text, pos)
    if not m:
        raise AsmError(f"access pattern {text!r}: expected {{stride:count,...}} after {text[:pos]!r}")
    dims = []
    for dim in m.group(1).split(",") if m.group(1) else []:
        dm = re.fullmatch(r"([0-9]+):([0-9]+)", dim)
        if not dm:
            raise AsmError(f"access pattern {text!r}: bad dim {dim!r} (expected stride:count, "
                           "in elements)")
        dims.append((_to_int(dm.group(1), "stride"), _to_int(dm.group(2), "count")))
    pos = m.end()
    m = re.compile(r":([A-Za-z0-9_]+)\Z").match(text, pos)
    if not m:
        raise AsmError(f"access pattern {text!r}: expected :DTYPE at the end, after {text[:pos]!r}")
    ap = AP(space, offset, tuple(dims), m.group(1), pstart, pcount)
    try:
        validate_ap(ap)
    except IsaError as exc:
        raise AsmError(f"access pattern {text!r}: {exc}") from None
    return ap


# ---- tokens -----------------------------------------------------------------------------------

def _tokens(line: str) -> list[str]:
    """Whitespace-separated tokens up to a `;` comment. A "JSON string" inside a token keeps its
    spaces and semicolons."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in _SPACE_CHARS:
            i += 1
            continue
        if c == ";":
            break
        start = i
        while i < n and line[i] not in _SPACE_CHARS and line[i] != ";":
            if line[i] == '"':
                i += 1
                while i < n and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
                if i >= n:
                    raise AsmError(f"unterminated string starting {line[start:start + 20]!r}")
            i += 1
        out.append(line[start:i])
    return out


def _key_value(token: str, what: str) -> tuple[str, str]:
    key, eq, value = token.partition("=")
    if not eq or not IDENT_RE.match(key):
        raise AsmError(f"{what}: expected key=value, got {token!r}")
    return key, value


def _key_values(tokens: list[str], allowed: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in tokens:
        key, value = _key_value(tok, what)
        if key not in allowed:
            raise AsmError(f"{what}: unknown key {key!r} (expected {', '.join(allowed)})")
        if key in out:
            raise AsmError(f"{what}: {key}= given twice")
        out[key] = value
    return out


# ---- instructions -----------------------------------------------------------------------------

def _parse_sems(text: str, key: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        m = _SEM[key].match(item)
        if not m:
            form = f"sN{SEM_OP[key]}V"
            raise AsmError(f"{key}: expected {form}[,{form}...], got {item!r}")
        out.append((_to_int(m.group(1), "semaphore"), _to_int(m.group(2), "semaphore value")))
    return tuple(out)


def _split_label(tokens: list[str]) -> tuple[str | None, list[str]]:
    if tokens and tokens[0].endswith(":") and not tokens[0].startswith("."):
        text = tokens[0][:-1]
        if text.startswith('"'):
            return _quoted(text, "label"), tokens[1:]
        if not LABEL_RE.match(text):
            raise AsmError(f"bad label {text!r} (expected letters, digits, _ and ., or a \"quoted string\")")
        return text, tokens[1:]
    return None, tokens


def _engines_text() -> str:
    return "pe, act, dve, pool, dma0..dma15 or host"


def _instr_from_tokens(tokens: list[str], label: str | None) -> Instr:
    if not tokens:
        raise AsmError("expected ENGINE OPCODE after the label")
    engine = tokens[0]
    if engine not in ENGINES:
        raise AsmError(f"unknown engine {engine!r} (expected {_engines_text()})")
    if len(tokens) < 2:
        raise AsmError(f"expected an opcode after engine {engine}")
    op = tokens[1]
    spec = OPCODES.get(op)
    if spec is None:
        raise AsmError(f"unknown opcode {op!r} (expected one of {', '.join(OPCODES)})")
    operand_names = spec.required + spec.optional
    ins = Instr(engine, op, label=label)
    seen: set[str] = set()
    for tok in tokens[2:]:
        key, value = _key_value(tok, f"{engine} {op}")
        if key in seen:
            raise AsmError(f"{engine} {op}: {key}= given twice")
        seen.add(key)
        if key in operand_names or spec.allows_operand(key):
            try:
                ins.operands[key] = parse_ap(value)
            except AsmError as exc:
                raise AsmError(f"{engine} {op} {key}: {exc}") from None
        elif key in spec.attrs:
            ins.attrs[key] = _parse_scalar(value, spec.attrs[key][0], f"{engine} {op} {key}")
        elif key in ("wait", "signal"):
            sems = _parse_sems(value, key)
            if key == "wait":
                ins.waits = sems
            else:
                ins.signals = sems
        elif key == "dbg":
            ins.dbg = _to_dec(value, "dbg")
        else:
            raise AsmError(f"{engine} {op}: unknown operand or attribute {key!r} "
                           f"(expected {_allowed_keys(spec)})")
    try:
        validate_instr(ins)
    except IsaError as exc:
        raise AsmError(str(exc)) from None
    return ins


def _allowed_keys(spec: OpSpec) -> str:
    operands = list(spec.required) + [f"[{n}]" for n in spec.optional] + [f"[{p}N]" for p in spec.numbered]
    return ", ".join(operands + [f"[{a}]" for a in sorted(spec.attrs)] + ["[wait]", "[signal]", "[dbg]"])


def parse_instr(line: str) -> Instr:
    """One instruction line (a trailing `; comment` is allowed). Validated against the schema."""
    label, tokens = _split_label(_tokens(line))
    if not tokens:
        raise AsmError("expected an instruction: [label:] ENGINE OPCODE key=value ...")
    return _instr_from_tokens(tokens, label)


def parse_instructions(text: str, source: str = "<text>") -> list[Instr]:
    """Instruction lines only (plus comments and blank lines): the code section of a `.xpu` file."""
    out: list[Instr] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        try:
            tokens = _tokens(line)
            if not tokens:
                continue
            if tokens[0].startswith("."):
                raise AsmError(f"directive {tokens[0]} not allowed here (instructions only)")
            out.append(parse_instr(line))
        except AsmError as exc:
            raise AsmError(f"{source}:{lineno}: {exc}") from None
    return out


# ---- shapes -------------------------------------------------------------------------------------

def format_shape(shape) -> str:
    """`AxBxC`, or `scalar` for the 0-d shape."""
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _parse_shape(text: str, what: str) -> tuple[int, ...]:
    if text == "scalar":
        return ()
    if not re.fullmatch(r"[0-9]+(?:x[0-9]+)*", text):
        raise AsmError(f"{what}: expected shape=AxBx... (e.g. 128x512) or shape=scalar, got {text!r}")
    return tuple(_to_int(d, what) for d in text.split("x"))


# ---- whole programs -----------------------------------------------------------------------------

class _Assembler:
    def __init__(self, source: str):
        self.source = source
        self.arch: tuple[str, str | None] | None = None  # (name, hash) as written
        self.arch_desc: dict | None = None
        self.arch_line = 1  # where .arch / .archdesc was given, for errors
        self.meta: dict[str, str] = {}
        self.tensors: list[Tensor] = []
        self.tensor_lines: dict[str, int] = {}
        self.origins: list[Origin] = []
        self.host_ops: list[tuple[HostOp, int]] = []
        self.taps: list[tuple[Tap, int]] = []
        self.instrs: list[tuple[Instr, int]] = []
        self.pending_label: tuple[str, int] | None = None

    def fail(self, lineno: int, message: str):
        raise AsmError(f"{self.source}:{lineno}: {message}")

    def run(self, text: str) -> Program:
        for lineno, line in enumerate(text.split("\n"), 1):
            try:
                self.line(line, lineno)
            except AsmError as exc:
                self.fail(lineno, str(exc))
        if self.pending_label:
            self.fail(self.pending_label[1], f"label {self.pending_label[0]!r} has no instruction after it")
        return self.finish()

    def line(self, line: str, lineno: int) -> None:
        tokens = _tokens(line)
        if not tokens:
            return
        if tokens[0].startswith("."):
            if self.pending_label:
                raise AsmError(f"label {self.pending_label[0]!r} must be followed by an instruction")
            handler = getattr(self, "d_" + tokens[0][1:], None) if tokens[0] in DIRECTIVES else None
            if handler is None:
                raise AsmError(f"unknown directive {tokens[0]} (expected {', '.join(DIRECTIVES)})")
            handler(tokens[1:], lineno)
            return
        label, rest = _split_label(tokens)
        if label is not None and not rest:  # a label alone on its line names the next instruction
            if self.pending_label:
                raise AsmError(f"two labels ({self.pending_label[0]!r}, {label!r}) for one instruction")
            self.pending_label = (label, lineno)
            return
        if self.pending_label:
            if label is not None:
                raise AsmError(f"two labels ({self.pending_label[0]!r}, {label!r}) for one instruction")
            label = self.pending_label[0]
            self.pending_label = None
        self.instrs.append((_instr_from_tokens(rest, label), lineno))

    # -- directives
    def d_arch(self, args: list[str], lineno: int) -> None:
        if self.arch is not None:
            raise AsmError(".arch given twice")
        if not 1 <= len(args) <= 2:
            raise AsmError("expected .arch NAME [HASH]")
        self.arch = (_name(args[0], ".arch name"), _name(args[1], ".arch hash") if len(args) == 2 else None)
        self.arch_line = lineno

    def d_archdesc(self, args: list[str], lineno: int) -> None:
        if self.arch_desc is not None:
            raise AsmError(".archdesc given twice")
        if len(args) != 1 or not args[0].startswith('"'):
            raise AsmError('expected .archdesc "JSON" (the arch description as one JSON string)')
        try:
            desc = json.loads(_quoted(args[0], ".archdesc"))
        except (ValueError, RecursionError) as exc:
            raise AsmError(f".archdesc: not JSON ({exc})") from None
        if not isinstance(desc, dict):
            raise AsmError(".archdesc: expected a JSON object")
        self.arch_desc = desc
        self.arch_line = lineno

    def resolve_arch(self) -> Arch:
        """The arch the program names: its `.archdesc`, else the bundled preset `.arch` names."""
        name, digest = self.arch or (None, None)
        if self.arch_desc is not None:
            try:
                arch = arch_from_dict(self.arch_desc, ".archdesc")
            except ArchError as exc:
                raise AsmError(str(exc)) from None
            if (name, digest) != (None, None) and (name != arch.name or digest not in (None, arch.hash)):
                raise AsmError(f".arch {name} {digest or ''}".rstrip() + f" does not match its .archdesc "
                               f"(arch {arch.name!r}, hash {arch.hash})")
            return arch
        name = name or DEFAULT_ARCH_NAME
        if name not in preset_names():
            raise AsmError(f".arch {name}: not a preset ({', '.join(preset_names())}); a program for another "
                           'arch carries its description: .archdesc "JSON"')
        try:
            arch = load_arch(name)
        except ArchError as exc:
            raise AsmError(str(exc)) from None
        if digest is not None and digest != arch.hash:
            raise AsmError(f".arch {name} {digest}: built for another version of {name} (the bundled one "
                           f"has hash {arch.hash}); give its description with .archdesc or rebuild it")
        return arch

    def d_meta(self, args: list[str], lineno: int) -> None:
        if len(args) != 2 or not args[1].startswith('"'):
            raise AsmError('expected .meta KEY "value"')
        key = _name(args[0], ".meta key")
        if key in self.meta:
            raise AsmError(f".meta {key} given twice")
        self.meta[key] = _quoted(args[1], f".meta {key}")

    def d_tensor(self, args: list[str], lineno: int) -> None:
        form = ".tensor KIND NAME @OFFSET shape=AxB dtype=DTYPE [data=BASE64]"
        if len(args) < 3 or not args[2].startswith("@"):
            raise AsmError(f"expected {form}")
        kind = args[0]
        if kind not in TENSOR_KINDS:
            raise AsmError(f"unknown tensor kind {kind!r} (expected {', '.join(TENSOR_KINDS)})")
        name = _name(args[1], "tensor name")
        if name in self.tensor_lines:
            raise AsmError(f"tensor {name} already declared on line {self.tensor_lines[name]}")
        offset = _to_int(args[2][1:], f"tensor {name} offset")
        kv = _key_values(args[3:], ("shape", "dtype", "data"), f"tensor {name}")
        for key in ("shape", "dtype"):
            if key not in kv:
                raise AsmError(f"tensor {name}: missing {key}= (expected {form})")
        shape = _parse_shape(kv["shape"], f"tensor {name}")
        try:
            np_dtype(kv["dtype"])
        except ValueError as exc:
            raise AsmError(f"tensor {name}: {exc}") from None
        data = _base64(kv["data"], f"tensor {name} data") if "data" in kv else None
        tensor = Tensor(name, kind, offset, shape, kv["dtype"], data)
        if kind == "const" and data is None:
            raise AsmError(f"constant {name} has no data= (a disassembly made without data "
                           "does not re-assemble)")
        if kind != "const" and data is not None:
            raise AsmError(f"tensor {name}: only constants carry data=")
        if data is not None and len(data) != tensor.nbytes:
            raise AsmError(f"constant {name}: data has {len(data)} bytes, shape/dtype need {tensor.nbytes}")
        self.tensors.append(tensor)
        self.tensor_lines[name] = lineno

    def _index(self, text: str, expected: int, directive: str) -> None:
        index = _to_dec(text, f"{directive} index")
        if index != expected:
            raise AsmError(f"{directive} {index}: expected index {expected} (they count up from 0 "
                           "in file order)")

    def d_origin(self, args: list[str], lineno: int) -> None:
        if not 2 <= len(args) <= 3:
            raise AsmError("expected .origin INDEX NAME [OP_TYPE]")
        self._index(args[0], len(self.origins), ".origin")
        op_type = _name(args[2], ".origin op type") if len(args) == 3 else ""
        self.origins.append(Origin(_name(args[1], ".origin name"), op_type))

    def d_hostop(self, args: list[str], lineno: int) -> None:
        form = ".hostop INDEX NAME OP_TYPE inputs=[..] outputs=[..] [payload=BASE64]"
        if len(args) < 3:
            raise AsmError(f"expected {form}")
        self._index(args[0], len(self.host_ops), ".hostop")
        name = _name(args[1], ".hostop name")
        op = HostOp(name, _name(args[2], ".hostop op type"))
        kv = _key_values(args[3:], ("inputs", "outputs", "payload"), f"host op {name}")
        for key in ("inputs", "outputs"):
            if key in kv:
                setattr(op, key, _string_list(kv[key], f"host op {name} {key}"))
        if "payload" in kv:
            op.payload = _base64(kv["payload"], f"host op {name} payload")
        self.host_ops.append((op, lineno))

    def d_tap(self, args: list[str], lineno: int) -> None:
        form = ".tap NAME shape=AxB dtype=DTYPE [after=ENGINE:INDEX] [fused_into=NAME]"
        if not args:
            raise AsmError(f"expected {form}")
        name = _name(args[0], "tap name")
        kv = _key_values(args[1:], ("shape", "dtype", "after", "fused_into"), f"tap {name}")
        for key in ("shape", "dtype"):
            if key not in kv:
                raise AsmError(f"tap {name}: missing {key}= (expected {form})")
        tap = Tap(name, _parse_shape(kv["shape"], f"tap {name}"), _name(kv["dtype"], f"tap {name} dtype"))
        if "after" in kv:
            m = re.fullmatch(r"([a-z0-9]*):(-?[0-9]+)", kv["after"])
            if not m:
                raise AsmError(f"tap {name}: expected after=ENGINE:INDEX (e.g. act:3), got {kv['after']!r}")
            tap.after_engine, tap.after_index = m.group(1), _to_int(m.group(2), f"tap {name} after index")
        if "fused_into" in kv:
            tap.fused_into = _name(kv["fused_into"], f"tap {name} fused_into")
        self.taps.append((tap, lineno))

    def d_piece(self, args: list[str], lineno: int) -> None:
        if not self.taps:
            raise AsmError(".piece must follow the .tap it belongs to")
        tap = self.taps[-1][0]
        if not args:
            raise AsmError("expected .piece AP offset=N strides=S,S,...")
        ap = parse_ap(args[0])
        kv = _key_values(args[1:], ("offset", "strides"), f"tap {tap.name} piece")
        strides = tuple(_to_dec(s, f"tap {tap.name} piece strides")
                        for s in kv.get("strides", "").split(",") if kv.get("strides"))
        offset = _to_dec(kv.get("offset", "0"), f"tap {tap.name} piece offset")
        tap.pieces.append(TapPiece(ap, offset, strides))

    # -- cross-references and the Program
    def finish(self) -> Program:
        try:
            arch = self.resolve_arch()
        except AsmError as exc:
            self.fail(self.arch_line, str(exc))
        counts = {e: 0 for e in ENGINES}
        for ins, lineno in self.instrs:
            counts[ins.engine] += 1
            if not -1 <= ins.dbg < len(self.origins):
                self.fail(lineno, f"dbg={ins.dbg} names no origin (the program declares "
                                  f"{len(self.origins)} .origin lines)")
            if ins.op == "host_call" and not 0 <= ins.attrs.get("op", 0) < len(self.host_ops):
                self.fail(lineno, f"host_call op={ins.attrs.get('op', 0)} names no .hostop "
                                  f"(the program declares {len(self.host_ops)})")
        for op, lineno in self.host_ops:
            for tname in op.inputs + op.outputs:
                if tname and tname not in self.tensor_lines:
                    self.fail(lineno, f"host op {op.name}: tensor {tname} is not declared by a .tensor line")
        for tap, lineno in self.taps:
            if tap.pieces and not 0 <= tap.after_index < counts.get(tap.after_engine, 0):
                self.fail(lineno, f"tap {tap.name}: after={tap.after_engine}:{tap.after_index} names no "
                                  f"instruction (a tap with pieces needs after=ENGINE:INDEX, INDEX "
                                  f"counting that engine's instructions from 0)")
        program = Program(arch, [i for i, _ in self.instrs], self.tensors,
                          self.origins, [t for t, _ in self.taps], self.meta, [h for h, _ in self.host_ops])
        try:
            program.validate()
        except (IsaError, ValueError) as exc:
            raise AsmError(f"{self.source}: {exc}") from None
        return program


def _string_list(text: str, what: str) -> list[str]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AsmError(f'{what}: expected a JSON list of strings like ["a","b"], got {text!r}')
    return value


def assemble(text: str, source: str = "<text>") -> Program:
    """Parse a whole program (directives + instructions) and validate it."""
    return _Assembler(source).run(text)


def _comment_text(text: str) -> str:
    return text if text.isprintable() else json.dumps(text)


def _is_bundled(arch: Arch) -> bool:
    return arch.name in preset_names() and load_arch(arch.name).hash == arch.hash


def disassemble(program: Program, data: bool = True, annotate: bool = False) -> str:
    """The program as assembly. With data=False constants lose their data (the text then no
    longer assembles); annotate=True adds `; node=NAME (OP_TYPE)` after each instruction."""
    out = [f".arch {format_name(program.arch_name)} {format_name(program.arch_hash)}"]
    if not _is_bundled(program.arch):
        out.append(f".archdesc {json.dumps(json.dumps(program.arch.raw, separators=(',', ':')))}")
    out += [f".meta {format_name(k)} {json.dumps(v)}" for k, v in program.meta.items()]
    for t in program.tensors:
        line = (f".tensor {t.kind} {format_name(t.name)} @{hex(t.offset)} shape={format_shape(t.shape)} "
                f"dtype={t.dtype}")
        if t.data is not None:
            line += f" data={base64.b64encode(bytes(t.data)).decode('ascii')}" if data \
                else f"  ; data omitted ({len(t.data)} bytes)"
        out.append(line)
    for i, o in enumerate(program.origins):
        out.append(f".origin {i} {format_name(o.name)}" + (f" {format_name(o.op_type)}" if o.op_type else ""))
    for i, h in enumerate(program.host_ops):
        line = (f".hostop {i} {format_name(h.name)} {format_name(h.op_type)} "
                f"inputs={json.dumps(list(h.inputs), separators=(',', ':'))} "
                f"outputs={json.dumps(list(h.outputs), separators=(',', ':'))}")
        if h.payload:
            line += f" payload={base64.b64encode(bytes(h.payload)).decode('ascii')}"
        out.append(line)
    # labels in their own column so the engines line up
    labels = ["" if ins.label is None else format_label(ins.label) + ": " for ins in program.instrs]
    width = min(max(map(len, labels), default=0), 24)
    code = [f"{lb:<{width}}{format_instr_body(ins)}" for lb, ins in zip(labels, program.instrs)]
    if annotate:
        width = min(max((len(c) for c in code), default=0), 100)
        for k, ins in enumerate(program.instrs):
            if 0 <= ins.dbg < len(program.origins):
                o = program.origins[ins.dbg]
                note = f"; node={_comment_text(o.name)}"
                if o.op_type:
                    note += f" ({_comment_text(o.op_type)})"
                code[k] = f"{code[k]:<{width}}  {note}"
    if code:
        out.append("")
        out += code
    for tap in program.taps:
        line = f".tap {format_name(tap.name)} shape={format_shape(tap.shape)} dtype={format_name(tap.dtype)}"
        if tap.after_engine or tap.after_index != -1:
            line += f" after={tap.after_engine}:{tap.after_index}"
        if tap.fused_into:
            line += f" fused_into={format_name(tap.fused_into)}"
        if not out[-1].startswith((".tap", ".piece")):
            out.append("")
        out.append(line)
        for p in tap.pieces:
            out.append(f".piece {format_ap(p.ap)} offset={p.offset} strides={','.join(map(str, p.strides))}")
    return "\n".join(out) + "\n"


# ---- reference documentation ----------------------------------------------------------------------

def _engines_of(spec: OpSpec) -> str:
    if set(spec.engines) == set(ENGINES):
        return "any"
    kinds = []
    for e in spec.engines:
        kind = "dma0..dma15" if engine_kind(e) == "dma" else e
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds)


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return "number" if set(types) == {int, float} else "/".join(t.__name__ for t in types)


def _markdown_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("*", "\\*"))


def opcode_reference_markdown() -> str:
    """The opcode table of docs/assembly.md, generated from OPCODES (a test keeps them in sync)."""
    rows = ["| opcode | engines | operands | attributes (type, default) | semantics |",
            "|---|---|---|---|---|"]
    for op, spec in OPCODES.items():
        operands = [f"`{n}`" for n in spec.required] + [f"[`{n}`]" for n in spec.optional]
        operands += [f"[`{p}N`…]" for p in spec.numbered]
        attrs = []
        for name, (types, default, choices) in spec.attrs.items():
            text = f"`{name}` {_type_name(types)} = `{format_scalar(default)}`"
            if choices is not None:
                text += " (" + ", ".join(format_scalar(c) for c in choices) + ")"
            attrs.append(text)
        rows.append(f"| `{op}` | {_engines_of(spec)} | {' '.join(operands) or '—'} | "
                    f"{'<br>'.join(attrs) or '—'} | {_markdown_escape(spec.doc)} |")
    return "\n".join(rows) + "\n"
