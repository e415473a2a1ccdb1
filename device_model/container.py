"""The `.xpu` binary program container (layout in docs/xpu-format.md).

    magic "XPUPROG\\0" | u32 version | u64 header_len | u64 code_len | u64 blob_len
    | header (UTF-8 JSON) | code (UTF-8 assembly, one instruction per line) | blob (raw bytes)
    | SHA-256 of everything before it

Loading treats the file as hostile: sizes are checked against limits and against the file size
before anything is allocated, the checksum before anything is parsed, and every field's type after.
Every problem ends in one `ProgramFormatError` that says what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from .arch import Arch, ArchError, arch_from_dict
from .assembly import AsmError, format_ap, format_instr, parse_ap, parse_instructions
from .errors import XpuError
from .fileio import write_bytes_atomic
from .isa import IsaError
from .program import HostOp, Origin, Program, Tap, TapPiece, Tensor

MAGIC = b"XPUPROG\0"
FORMAT_VERSION = 2  # 2: the header carries the arch's full description
PREFIX = struct.Struct("<8sIQQQ")  # magic, version, header_len, code_len, blob_len
DIGEST_LEN = 32
MAX_HEADER = 64 << 20
MAX_CODE = 512 << 20
MAX_BLOB = 64 << 30
BLOB_ALIGN = 64  # constants start on 64-byte boundaries inside the blob


class ProgramFormatError(XpuError, ValueError):
    """A `.xpu` file that is corrupt, truncated, from a newer writer or for another arch."""


# ---- writing ------------------------------------------------------------------------------------

def program_to_bytes(program: Program) -> bytes:
    """Serialize a valid program (raises IsaError when it is not)."""
    program.validate()
    blob = bytearray()

    def put(data: bytes) -> list[int]:
        blob.extend(b"\0" * (-len(blob) % BLOB_ALIGN))
        start = len(blob)
        blob.extend(data)
        return [start, len(data)]

    header = {
        "arch": {"name": program.arch_name, "hash": program.arch_hash, "description": program.arch.raw},
        "meta": dict(program.meta),
        "tensors": [{"name": t.name, "kind": t.kind, "offset": t.offset, "shape": list(t.shape),
                     "dtype": t.dtype, "data": None if t.data is None else put(bytes(t.data))}
                    for t in program.tensors],
        "origins": [{"name": o.name, "op_type": o.op_type} for o in program.origins],
        "host_ops": [{"name": h.name, "op_type": h.op_type, "inputs": list(h.inputs),
                      "outputs": list(h.outputs), "payload": put(bytes(h.payload))}
                     for h in program.host_ops],
        "taps": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                  "pieces": [{"ap": format_ap(p.ap), "offset": p.offset, "strides": list(p.strides)}
                             for p in t.pieces],
                  "after_engine": t.after_engine, "after_index": t.after_index, "fused_into": t.fused_into}
                 for t in program.taps],
        "instructions": len(program.instrs),
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    code = "".join(format_instr(ins) + "\n" for ins in program.instrs).encode("utf-8")
    if len(head) > MAX_HEADER or len(code) > MAX_CODE or len(blob) > MAX_BLOB:
        raise ProgramFormatError(f"program too large for the .xpu format (header {len(head)} bytes, "
                                 f"code {len(code)} bytes, data {len(blob)} bytes; limits {MAX_HEADER}, "
                                 f"{MAX_CODE}, {MAX_BLOB})")
    body = b"".join([PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), len(code), len(blob)), head, code, blob])
    return body + hashlib.sha256(body).digest()


def save_program(program: Program, path, *, force: bool = False, inputs=()) -> None:
    """Write atomically (temp file + rename); an existing `path` only with `force`, never an input."""
    write_bytes_atomic(path, program_to_bytes(program), force=force, inputs=inputs)


# ---- reading ------------------------------------------------------------------------------------

def _check_prefix(prefix: bytes, total: int) -> tuple[int, int, int]:
    """Validate magic, version and section lengths against the limits and the file size."""
    if len(prefix) < len(MAGIC) or prefix[:len(MAGIC)] != MAGIC:
        if MAGIC.startswith(prefix):
            raise ProgramFormatError(f"truncated: {total} bytes, too short for an .xpu header")
        raise ProgramFormatError("not an .xpu program (bad magic: expected the file to start with "
                                 "XPUPROG)")
    if len(prefix) < PREFIX.size:
        raise ProgramFormatError(f"truncated: {total} bytes, too short for an .xpu header "
                                 f"({PREFIX.size} bytes)")
    _magic, version, head_len, code_len, blob_len = PREFIX.unpack(prefix[:PREFIX.size])
    if version > FORMAT_VERSION:
        raise ProgramFormatError(f"written by a newer xputools (.xpu format version {version}; this one "
                                 f"reads version {FORMAT_VERSION}): upgrade xputools")
    if 1 <= version < FORMAT_VERSION:
        raise ProgramFormatError(f"written by an older xputools (.xpu format version {version}; this one reads "
                                 f"version {FORMAT_VERSION}, which carries the arch description): recompile "
                                 "it (xpu compile) or reassemble it (xpu asm)")
    if version != FORMAT_VERSION:
        raise ProgramFormatError(f"unsupported .xpu format version {version} (expected {FORMAT_VERSION})")
    for what, size, limit in (("header", head_len, MAX_HEADER), ("code", code_len, MAX_CODE),
                              ("data", blob_len, MAX_BLOB)):
        if size > limit:
            raise ProgramFormatError(f"corrupt: {what} section declares {size} bytes, more than the "
                                     f"{limit} allowed")
    expected = PREFIX.size + head_len + code_len + blob_len + DIGEST_LEN
    if total < expected:
        raise ProgramFormatError(f"truncated: the sections declare {expected} bytes, the file has {total}")
    if total > expected:
        raise ProgramFormatError(f"corrupt: {total - expected} unexpected bytes after the end "
                                 f"({expected} bytes declared)")
    return head_len, code_len, blob_len


def program_from_bytes(data: bytes, expect_arch=None, source: str = "<bytes>") -> Program:
    """Parse a `.xpu` image. `expect_arch` (an Arch) rejects programs built for another arch."""
    try:
        return _from_bytes(memoryview(data), expect_arch)
    except ProgramFormatError as exc:
        raise ProgramFormatError(f"{source}: {exc}") from None


def load_program(path, expect_arch=None) -> Program:
    """Read and check a `.xpu` file (see program_from_bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            prefix = f.read(PREFIX.size)
            try:
                _check_prefix(prefix, total)  # sizes are within limits and match the file: safe to allocate
            except ProgramFormatError as exc:
                raise ProgramFormatError(f"{path}: {exc}") from None
            buf = memoryview(bytearray(total))
            buf[:len(prefix)] = prefix
            n = len(prefix) + (f.readinto(buf[len(prefix):]) or 0)
    except OSError as exc:
        raise ProgramFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return program_from_bytes(buf[:n], expect_arch, str(path))


def _from_bytes(data: memoryview, expect_arch) -> Program:
    head_len, code_len, blob_len = _check_prefix(bytes(data[:PREFIX.size]), len(data))
    body_end = len(data) - DIGEST_LEN
    if hashlib.sha256(data[:body_end]).digest() != bytes(data[body_end:]):
        raise ProgramFormatError("corrupt: checksum mismatch (the file was damaged or modified)")
    pos = PREFIX.size
    head_bytes, pos = data[pos:pos + head_len], pos + head_len
    code_bytes, pos = data[pos:pos + code_len], pos + code_len
    blob = data[pos:pos + blob_len]
    try:
        header = json.loads(bytes(head_bytes).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProgramFormatError(f"corrupt header: not UTF-8 JSON ({exc})") from None
    reader = _HeaderReader(blob)
    program = reader.program(header)
    _check_arch(program, expect_arch)
    try:
        code = bytes(code_bytes).decode("utf-8")
        instrs = parse_instructions(code, "code section")
    except UnicodeDecodeError as exc:
        raise ProgramFormatError(f"corrupt code section: not UTF-8 ({exc})") from None
    except AsmError as exc:
        raise ProgramFormatError(f"corrupt {exc}") from None
    if len(instrs) != reader.instruction_count:
        raise ProgramFormatError(f"corrupt: the header declares {reader.instruction_count} instructions, "
                                 f"the code section has {len(instrs)}")
    program.instrs = instrs
    try:
        program.validate()
    except (IsaError, ValueError) as exc:
        raise ProgramFormatError(f"invalid program: {exc}") from None
    return program


def _check_arch(program: Program, arch: Arch | None) -> None:
    problem = None if arch is None else program.arch_mismatch(arch)
    if problem:
        raise ProgramFormatError(problem)


class _HeaderReader:
    """Type-checks every header field; the first problem is a ProgramFormatError naming the field."""

    def __init__(self, blob: memoryview):
        self.blob = blob
        self.instruction_count = 0

    @staticmethod
    def fail(where: str, message: str):
        raise ProgramFormatError(f"corrupt header: {where}: {message}")

    def obj(self, value, keys: tuple[str, ...], where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, "expected an object")
        for key in keys:
            if key not in value:
                self.fail(where, f"missing {key!r}")
        for key in value:
            if key not in keys:
                self.fail(where, f"unexpected key {key!r}")
        return value

    def int(self, value, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {type(value).__name__}")
        if minimum is not None and value < minimum:
            self.fail(where, f"expected an integer >= {minimum}, got {value}")
        return value

    def str(self, value, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {type(value).__name__}")
        return value

    def list(self, value, where: str) -> list:
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def shape(self, value, where: str) -> tuple[int, ...]:
        return tuple(self.int(d, f"{where}[{i}]", 0) for i, d in enumerate(self.list(value, where)))

    def bytes(self, value, where: str) -> bytes:
        if not isinstance(value, list) or len(value) != 2:
            self.fail(where, "expected [start, length] in the data section")
        start, length = self.int(value[0], where, 0), self.int(value[1], where, 0)
        if start + length > len(self.blob):
            self.fail(where, f"bytes {start}..{start + length} lie outside the {len(self.blob)}-byte "
                             "data section")
        return bytes(self.blob[start:start + length])

    def program(self, header) -> Program:
        h = self.obj(header, ("arch", "meta", "tensors", "origins", "host_ops", "taps", "instructions"),
                     "header")
        arch = self.arch(h["arch"])
        meta = h["meta"]
        if not isinstance(meta, dict):
            self.fail("meta", "expected an object")
        for k, v in meta.items():
            self.str(v, f"meta[{k!r}]")
        tensors = []
        for i, t in enumerate(self.list(h["tensors"], "tensors")):
            w = f"tensors[{i}]"
            t = self.obj(t, ("name", "kind", "offset", "shape", "dtype", "data"), w)
            data = None if t["data"] is None else self.bytes(t["data"], f"{w}.data")
            tensors.append(Tensor(self.str(t["name"], f"{w}.name"), self.str(t["kind"], f"{w}.kind"),
                                  self.int(t["offset"], f"{w}.offset", 0),
                                  self.shape(t["shape"], f"{w}.shape"),
                                  self.str(t["dtype"], f"{w}.dtype"), data))
        origins = []
        for i, o in enumerate(self.list(h["origins"], "origins")):
            o = self.obj(o, ("name", "op_type"), f"origins[{i}]")
            origins.append(Origin(self.str(o["name"], f"origins[{i}].name"),
                                  self.str(o["op_type"], f"origins[{i}].op_type")))
        host_ops = []
        for i, op in enumerate(self.list(h["host_ops"], "host_ops")):
            w = f"host_ops[{i}]"
            op = self.obj(op, ("name", "op_type", "inputs", "outputs", "payload"), w)
            host_ops.append(HostOp(
                self.str(op["name"], f"{w}.name"), self.str(op["op_type"], f"{w}.op_type"),
                [self.str(v, f"{w}.inputs") for v in self.list(op["inputs"], f"{w}.inputs")],
                [self.str(v, f"{w}.outputs") for v in self.list(op["outputs"], f"{w}.outputs")],
                self.bytes(op["payload"], f"{w}.payload")))
        taps = [self.tap(t, f"taps[{i}]") for i, t in enumerate(self.list(h["taps"], "taps"))]
        self.instruction_count = self.int(h["instructions"], "instructions", 0)
        return Program(arch, [], tensors, origins, taps, dict(meta), host_ops)

    def arch(self, value) -> Arch:
        """The embedded arch description, validated like a preset file; its name and hash must agree."""
        a = self.obj(value, ("name", "hash", "description"), "arch")
        name, digest = self.str(a["name"], "arch.name"), self.str(a["hash"], "arch.hash")
        if not isinstance(a["description"], dict):
            self.fail("arch.description", "expected an object")
        try:
            arch = arch_from_dict(a["description"], "arch.description")
        except ArchError as exc:
            self.fail("arch", str(exc))
        if (arch.name, arch.hash) != (name, digest):
            self.fail("arch", f"the description is arch {arch.name!r} (hash {arch.hash}), the header says "
                              f"{name!r} (hash {digest})")
        return arch

    def tap(self, t, w: str) -> Tap:
        t = self.obj(t, ("name", "shape", "dtype", "pieces", "after_engine", "after_index", "fused_into"), w)
        pieces = []
        for j, p in enumerate(self.list(t["pieces"], f"{w}.pieces")):
            pw = f"{w}.pieces[{j}]"
            p = self.obj(p, ("ap", "offset", "strides"), pw)
            try:
                ap = parse_ap(self.str(p["ap"], f"{pw}.ap"))
            except AsmError as exc:
                self.fail(f"{pw}.ap", str(exc))
            strides = tuple(self.int(s, f"{pw}.strides") for s in self.list(p["strides"], f"{pw}.strides"))
            pieces.append(TapPiece(ap, self.int(p["offset"], f"{pw}.offset"), strides))
        return Tap(self.str(t["name"], f"{w}.name"), self.shape(t["shape"], f"{w}.shape"),
                   self.str(t["dtype"], f"{w}.dtype"), pieces,
                   self.str(t["after_engine"], f"{w}.after_engine"),
                   self.int(t["after_index"], f"{w}.after_index"),
                   self.str(t["fused_into"], f"{w}.fused_into"))
