"""Fuzzing the two readers of untrusted program text and bytes (the assembler and the .xpu loader):
whatever the input, the only exceptions are the project's own (XpuError), never a numpy, json or
Python internal error. Bounded and deterministic (the root conftest derandomizes hypothesis)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from corpus import COPY_XASM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_model.assembly import assemble
from device_model.container import FORMAT_VERSION, MAGIC, PREFIX, program_from_bytes, program_to_bytes
from device_model.errors import XpuError

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [COPY_XASM, (ROOT / "samples/programs/deadlock.xasm").read_text(),
         (ROOT / "samples/programs/out_of_bounds.xasm").read_text(),
         COPY_XASM + ".tap t shape=4 dtype=f32 after=dma0:0\n.piece hbm@0x40{1:4}:f32 offset=0 strides=1\n"]
# pieces of the grammar to splice in: numbers at the edges, every kind of token the parser splits on
TOKENS = ["0", "-1", "1", "4", "0x40", "9" * 30, "9" * 5000, "inf", "nan", "1e999", "@", "{", "}", ":", ",", "=",
          "[", "]", "+", "x", "s0>=1", "s99999+=1", "hbm", "sbuf[0:+128]", "psum", "f32", "bf16", "i4", "dma0",
          "pe", "act", "host", "host_call", "op=7", "matmul", ".tensor", ".tap", ".piece", ".hostop", ".arch",
          ".origin", ".meta", '"', "\\", "\n", " ", "\t", ";", "é", "\x00", "²", "payload=AAAA", "data=@@"]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated_text(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        insert = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)))
        text = text[:pos] + insert + text[pos + cut:]
    return text


@FUZZ
@given(mutated_text())
def test_assembler_raises_only_its_own_errors(text):
    try:
        program = assemble(text)
    except XpuError:
        return
    program.validate()  # what it accepts is a valid program


GOOD = program_to_bytes(assemble(SEEDS[3]))


def _sections(image: bytes) -> tuple[bytes, bytes, bytes]:
    _, _, h, c, b = PREFIX.unpack(image[:PREFIX.size])
    body = image[PREFIX.size:-32]
    return body[:h], body[h:h + c], body[h + c:h + c + b]


def _image(head: bytes, code: bytes, blob: bytes) -> bytes:
    body = PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), len(code), len(blob)) + head + code + blob
    return body + hashlib.sha256(body).digest()


def _json_leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_leaves(v, path + (i,))
    yield path


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
                        st.lists(st.integers(-3, 2**64), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                      st.integers(), max_size=2))


@st.composite
def forged_images(draw) -> bytes:
    """A .xpu whose checksum and section sizes are right but whose contents are mutated: the header
    JSON (a value replaced), the code text, the data, or the raw bytes anywhere."""
    head, code, blob = _sections(GOOD)
    what = draw(st.sampled_from(["header", "code", "blob", "raw"]))
    if what == "header":
        header = json.loads(head)
        paths = [p for p in _json_leaves(header) if p]
        path = draw(st.sampled_from(paths))
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = draw(JSON_VALUES)
        return _image(json.dumps(header).encode(), code, blob)
    if what == "code":
        text = code.decode()
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos + draw(st.integers(0, 8)):]
        return _image(head, text.encode("utf-8", "surrogatepass"), blob)
    if what == "blob":
        return _image(head, code, draw(st.binary(max_size=64)))
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


@FUZZ
@given(forged_images())
def test_xpu_loader_raises_only_its_own_errors(image):
    try:
        program = program_from_bytes(image)
    except XpuError:
        return
    program.validate()
