"""The `.xpu` container: exact round trips, and one clear ProgramFormatError for every corruption."""
from __future__ import annotations

import hashlib
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings

from device_model.arch import arch_from_dict, load_arch
from device_model.assembly import disassemble
from device_model.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_CODE,
    MAX_HEADER,
    PREFIX,
    ProgramFormatError,
    load_program,
    program_from_bytes,
    program_to_bytes,
    save_program,
)
from device_model.isa import AP, Instr, IsaError
from device_model.program import HostOp, Origin, Program, Tap, TapPiece, Tensor
from tests.device_model.strategies import canonical, programs

XPU1 = load_arch("xpu1")


def sb(offset, n, dtype="f32"):
    return AP("sbuf", offset, ((1, n),), dtype, 0, 128)


def sample_program() -> Program:
    ins = [
        Instr("dma0", "dma_copy", {"dst": sb(0, 64), "src": AP("hbm", 0, ((64, 128), (1, 64)), "f32")},
              signals=((0, 1),), dbg=0, label="load"),
        Instr("dma1", "dma_copy", {"dst": sb(512, 1), "src": AP("hbm", 0x8000, ((1, 128), (1, 1)), "f32")},
              signals=((0, 1),), dbg=0),
        Instr("act", "activate", {"dst": sb(1024, 64), "src": sb(0, 64), "bias_ap": sb(512, 1)},
              {"func": "relu", "scale": -0.0, "alpha": float("inf")}, waits=((0, 2),), signals=((1, 1),),
              dbg=1),
        Instr("host", "host_call", {}, {"op": 0}, waits=((1, 1),), signals=((2, 1),)),
        Instr("dma2", "dma_copy",
              {"dst": AP("hbm", 0x9000, ((64, 128), (1, 64)), "f32"), "src": sb(1024, 64)},
              waits=((2, 1),), dbg=1),
    ]
    tensors = [Tensor("x", "input", 0, (128, 64), "f32"),
               Tensor("b", "const", 0x8000, (128,), "f32", bytes(range(256)) * 2),
               Tensor("s", "const", 0x8400, (), "i32", b"\x01\x02\x03\x04"),
               Tensor("y", "output", 0x9000, (128, 64), "f32")]
    origins = [Origin("/in/Add", "Add"), Origin('odd "name"\n', "Relu")]
    taps = [Tap("/in/Relu_out", (128, 64), "f32", [TapPiece(sb(1024, 64), 0, (64, 1))], "act", 0),
            Tap("/in/Add_out", (128, 64), "f32", fused_into="/in/Relu_out")]
    host_ops = [HostOp("h0", "Identity", ["y"], ["y"], b"\x00payload\xff")]
    return Program(XPU1, ins, tensors, origins, taps, {"source": "m.onnx"}, host_ops)


GOOD = program_to_bytes(sample_program())


def forge(header=None, code=None, blob=None, version=FORMAT_VERSION, magic=MAGIC, lengths=None) -> bytes:
    """A file with a valid checksum around arbitrary sections (what a hostile writer can make)."""
    h0, c0, b0 = PREFIX.unpack(GOOD[:PREFIX.size])[2:]
    pos = PREFIX.size
    parts = [GOOD[pos:pos + h0], GOOD[pos + h0:pos + h0 + c0], GOOD[pos + h0 + c0:pos + h0 + c0 + b0]]
    for i, new in enumerate((header, code, blob)):
        if new is not None:
            parts[i] = json.dumps(new).encode() if isinstance(new, dict) else new
    lens = lengths or tuple(len(p) for p in parts)
    body = PREFIX.pack(magic, version, *lens) + b"".join(parts)
    return body + hashlib.sha256(body).digest()


def header_of(data: bytes = GOOD) -> dict:
    h = PREFIX.unpack(data[:PREFIX.size])[2]
    return json.loads(data[PREFIX.size:PREFIX.size + h])


def fails(data: bytes, *fragments: str, **kw) -> str:
    with pytest.raises(ProgramFormatError) as info:
        program_from_bytes(data, source="m.xpu", **kw)
    message = str(info.value)
    assert message.startswith("m.xpu: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- round trips ---------------------------------------------------------------------------------

def test_round_trip_keeps_everything():
    program = sample_program()
    back = program_from_bytes(GOOD)
    assert back == program
    assert canonical(back) == canonical(program)  # -0.0, inf and int/float kinds survive
    assert program_to_bytes(back) == GOOD  # deterministic


def test_layout_is_the_documented_one():
    magic, version, h, c, b = PREFIX.unpack(GOOD[:PREFIX.size])
    assert (magic, version, PREFIX.size) == (b"XPUPROG\0", 2, 36)
    assert len(GOOD) == PREFIX.size + h + c + b + 32
    assert hashlib.sha256(GOOD[:-32]).digest() == GOOD[-32:]
    header = header_of()
    assert header["arch"] == {"name": "xpu1", "hash": XPU1.hash, "description": XPU1.raw}
    assert header["instructions"] == 5
    code = GOOD[PREFIX.size + h:PREFIX.size + h + c].decode()
    assert code.splitlines()[0].startswith("load: dma0 dma_copy dst=sbuf[0:+128]@0x0{1:64}:f32")
    start, length = header["tensors"][1]["data"]
    blob = GOOD[PREFIX.size + h + c:PREFIX.size + h + c + b]
    assert blob[start:start + length] == bytes(range(256)) * 2 and start % 64 == 0


def test_save_is_atomic_and_load_reads_it_back(tmp_path):
    path = tmp_path / "m.xpu"
    path.write_bytes(b"old contents")
    save_program(sample_program(), path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xpu"]  # no temp file left behind
    assert path.read_bytes() == GOOD
    assert load_program(path, expect_arch=XPU1) == sample_program()


def test_a_failed_save_leaves_the_old_file_alone(tmp_path):
    path = tmp_path / "m.xpu"
    path.write_bytes(b"old contents")
    bad = sample_program()
    bad.instrs[0].op = "frobnicate"
    with pytest.raises(IsaError):
        save_program(bad, path, force=True)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xpu"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_any_valid_program_round_trips(program):
    back = program_from_bytes(program_to_bytes(program))
    assert canonical(back) == canonical(program)
    assert disassemble(back) == disassemble(program)


# ---- corruption ------------------------------------------------------------------------------------

def test_truncation_at_every_offset_is_reported_as_truncation():
    for cut in range(len(GOOD)):
        fails(GOOD[:cut], "truncated")


def test_truncated_file_on_disk(tmp_path):
    path = tmp_path / "cut.xpu"
    path.write_bytes(GOOD[:len(GOOD) // 2])
    with pytest.raises(ProgramFormatError, match=r"cut.xpu: truncated: the sections declare \d+ bytes, "
                                                 r"the file has \d+"):
        load_program(path)


def test_every_flipped_byte_is_caught():
    for pos in range(len(GOOD)):
        data = bytearray(GOOD)
        data[pos] ^= 0x41
        message = fails(bytes(data))
        if pos >= PREFIX.size:
            assert "checksum mismatch" in message, (pos, message)


def test_trailing_garbage():
    fails(GOOD + b"\0", "1 unexpected bytes after the end")


def test_bad_magic():
    fails(b"PK\x03\x04" + GOOD[4:], "not an .xpu program (bad magic")
    fails(b"hello", "not an .xpu program")
    fails(b"", "truncated")


def test_newer_version_asks_for_an_upgrade():
    fails(forge(version=FORMAT_VERSION + 1), "written by a newer xputools", f"version {FORMAT_VERSION + 1}",
          "upgrade xputools")
    fails(forge(version=0), "unsupported .xpu format version 0")


def test_a_version_1_file_is_refused_with_what_to_do():
    fails(forge(version=1), "written by an older xputools", "version 1", "recompile it (xpu compile)")


def test_the_arch_description_travels_and_is_checked():
    custom = json.loads(json.dumps(XPU1.raw))
    custom.update(name="custom", clock_ghz=2.0)
    arch = arch_from_dict(custom)
    program = sample_program()
    program.arch = arch
    assert program_from_bytes(program_to_bytes(program)).arch == arch
    fails(forge(_edit(lambda h: h["arch"].update(hash="0" * 16))), "corrupt header: arch",
          f"the description is arch 'xpu1' (hash {XPU1.hash})")
    fails(forge(_edit(lambda h: h["arch"]["description"].update(clock_ghz=-1))), "corrupt header: arch",
          "clock_ghz", "must be > 0")
    fails(forge(_edit(lambda h: h["arch"].pop("description"))), "arch: missing 'description'")
    # what a hostile file could make a run allocate is bounded
    def huge(h):
        for mem in ("sbuf", "psum"):
            h["arch"]["description"][mem]["partitions"] = 1024  # each number in range, the product not
            h["arch"]["description"][mem]["bytes_per_partition"] = 1 << 30
    fails(forge(_edit(huge)), "corrupt header", "sbuf", "above 4 GiB")
    fails(forge(_edit(lambda h: h["arch"]["description"].update(semaphores=1 << 40))), "semaphores",
          "must be at most")


def test_oversized_declared_lengths_are_rejected_before_allocating(tmp_path):
    fails(forge(lengths=(MAX_HEADER + 1, 0, 0)), "header section declares", "more than the 67108864 allowed")
    fails(forge(lengths=(10, MAX_CODE + 1, 0)), "code section declares")
    fails(forge(lengths=(10, 10, 1 << 60)), "data section declares")
    # a 2 GiB declared code section in a tiny file: rejected from the 36-byte prefix alone
    path = tmp_path / "huge.xpu"
    path.write_bytes(PREFIX.pack(MAGIC, FORMAT_VERSION, 10, 500 << 20, 1 << 30) + b"{}")
    with pytest.raises(ProgramFormatError, match="truncated: the sections declare"):
        load_program(path)


def test_arch_mismatch_says_which_arch_the_program_needs():
    edge = load_arch("xpu1-edge")
    fails(GOOD, "built for arch 'xpu1'", "not 'xpu1-edge'", "it needs arch xpu1", expect_arch=edge)
    raw = json.loads(json.dumps(XPU1.raw))
    raw["clock_ghz"] = 2.0
    changed = arch_from_dict(raw)
    fails(GOOD, "different version of arch 'xpu1'", f"hash {XPU1.hash}", f"this one is {changed.hash}",
          expect_arch=changed)
    assert program_from_bytes(GOOD, expect_arch=XPU1) == sample_program()


def test_missing_file(tmp_path):
    with pytest.raises(ProgramFormatError, match="nope.xpu: cannot read: No such file"):
        load_program(tmp_path / "nope.xpu")


# ---- hostile content with a valid checksum ----------------------------------------------------------

def _edit(fn) -> dict:
    h = header_of()
    fn(h)
    return h


@pytest.mark.parametrize("header, expected", [
    (b"\xff\xfe", "corrupt header: not UTF-8 JSON"),
    (b"{", "corrupt header: not UTF-8 JSON"),
    (b"[" * 100000, "corrupt header"),
    (b"[]", "corrupt header: header: expected an object"),
    (_edit(lambda h: h.pop("taps")), "header: missing 'taps'"),
    (_edit(lambda h: h.update(extra=1)), "header: unexpected key 'extra'"),
    (_edit(lambda h: h["arch"].update(name=5)), "arch.name: expected a string, got int"),
    (_edit(lambda h: h["tensors"][0].update(offset=-1)), "tensors[0].offset: expected an integer >= 0"),
    (_edit(lambda h: h["tensors"][0].update(shape=[1.5])),
     "tensors[0].shape[0]: expected an integer, got float"),
    (_edit(lambda h: h["tensors"][0].update(shape=[True])), "tensors[0].shape[0]: expected an integer"),
    (_edit(lambda h: h["tensors"][1].update(data=[0, 1 << 40])),
     "tensors[1].data: bytes 0..1099511627776 lie outside the"),
    (_edit(lambda h: h["tensors"][1].update(data=7)), "tensors[1].data: expected [start, length]"),
    (_edit(lambda h: h["tensors"][1].update(data=[0, 8])), "invalid program: constant b: data has 8 bytes"),
    (_edit(lambda h: h["tensors"][0].update(dtype="f128")), "invalid program: tensor x: unknown dtype 'f128'"),
    (_edit(lambda h: h["meta"].update(k=[1])), "meta['k']: expected a string, got list"),
    (_edit(lambda h: h["taps"][0]["pieces"][0].update(ap="sbuf@1")), "taps[0].pieces[0].ap: access pattern"),
    (_edit(lambda h: h["taps"][0].update(after_index=99)), "invalid program: tap /in/Relu_out: after act:99"),
    (_edit(lambda h: h["host_ops"][0].update(inputs=["zz"])), "host op h0: tensor zz is not declared"),
    (_edit(lambda h: h.update(instructions=4)), "header declares 4 instructions, the code section has 5"),
    (_edit(lambda h: h.update(origins=[])), "invalid program: instruction 0: debug index 0 out of range"),
])
def test_hostile_header_is_one_clear_error(header, expected):
    fails(forge(header=header), expected)


@pytest.mark.parametrize("code, expected", [
    (b"\xc3\x28", "corrupt code section: not UTF-8"),
    (b"dve frob\n", "corrupt code section:1: unknown opcode 'frob'"),
    (b".tensor input q @0 shape=1 dtype=f32\n", "corrupt code section:1: directive .tensor not allowed here"),
])
def test_hostile_code_is_one_clear_error(code, expected):
    fails(forge(code=code), expected)


def test_error_is_a_value_error():
    assert issubclass(ProgramFormatError, ValueError)
    with pytest.raises(ValueError):
        program_from_bytes(struct.pack("<8sI", MAGIC, 7))
