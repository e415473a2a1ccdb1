"""The XPU text assembly: exact spelling, round trips (per opcode and property-based), and errors
that name the line and what was expected."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from device_model.arch import arch_from_dict, load_arch
from device_model.assembly import (
    AsmError,
    assemble,
    disassemble,
    format_ap,
    format_instr,
    opcode_reference_markdown,
    parse_ap,
    parse_instr,
)
from device_model.isa import AP, OPCODES, Instr
from device_model.program import Origin, Program, Tap, TapPiece, Tensor
from tests.device_model.strategies import aps, canonical, instrs, programs

ROOT = Path(__file__).resolve().parents[2]
XPU1_HASH = load_arch("xpu1").hash


def sb(offset, n, dtype="f32", parts=128, pstart=0):
    return AP("sbuf", offset, ((1, n),), dtype, pstart, parts)


# ---- access patterns ----------------------------------------------------------------------------

def test_access_pattern_spelling():
    assert format_ap(AP("hbm", 0x1000, ((512, 128), (1, 512)), "f32")) == "hbm@0x1000{512:128,1:512}:f32"
    assert format_ap(AP("sbuf", 0x400, ((1, 512),), "bf16", 0, 128)) == "sbuf[0:+128]@0x400{1:512}:bf16"
    assert format_ap(AP("psum", 0, ((0, 4), (1, 8)), "f32", 32, 64)) == "psum[32:+64]@0x0{0:4,1:8}:f32"
    assert str(AP("hbm", 0, ((1, 3),), "i8")) == "hbm@0x0{1:3}:i8"


def test_access_pattern_offsets_accept_decimal_and_print_hex():
    ap = parse_ap("hbm@4096{512:128,1:512}:f32")
    assert ap == AP("hbm", 4096, ((512, 128), (1, 512)), "f32")
    assert format_ap(ap) == "hbm@0x1000{512:128,1:512}:f32"
    assert parse_ap("sbuf[3:+5]@0X1F{2:7}:u8") == AP("sbuf", 31, ((2, 7),), "u8", 3, 5)


@given(aps())
def test_any_access_pattern_round_trips(ap):
    assert parse_ap(format_ap(ap)) == ap


@pytest.mark.parametrize("text, expected", [
    ("vram@0x0{1:4}:f32", "unknown memory space 'vram'"),
    ("sbuf@0x0{1:4}:f32", "needs a partition range [pstart:+pcount]"),
    ("sbuf[0:128]@0x0{1:4}:f32", "expected a partition range [pstart:+pcount]"),
    ("hbm{1:4}:f32", "expected @OFFSET"),
    ("hbm@0x0[1:4]:f32", "expected {stride:count,...}"),
    ("hbm@0x0{1x4}:f32", "bad dim '1x4'"),
    ("hbm@0x0{1:4}", "expected :DTYPE"),
    ("hbm@0x0{1:4}:f33", "unknown dtype 'f33'"),
    ("hbm@0x0{}:f32", "1..4 free dims"),
    ("hbm@0x0{1:0}:f32", "count >= 1"),
    ("hbm@0x0{1:1,1:1,1:1,1:1,1:1}:f32", "1..4 free dims"),
    ("hbm[1:+2]@0x0{1:4}:f32", "hbm access patterns have no partitions"),
    ("sbuf[0:+0]@0x0{1:4}:f32", "bad partition range"),
])
def test_bad_access_patterns_say_what_was_expected(text, expected):
    with pytest.raises(AsmError, match=None) as info:
        parse_ap(text)
    assert expected in str(info.value)


# ---- instructions ---------------------------------------------------------------------------------

def _non_default(types, default, choices):
    if choices is not None:
        return [c for c in choices if c != default][-1]
    types = types if isinstance(types, tuple) else (types,)
    if float in types:
        return -2.5
    if int in types:
        return 3
    return "name"


def _representative(op: str) -> Instr:
    """Every operand of `op` (required and optional) and every attribute at a non-default value."""
    spec = OPCODES[op]
    operands = {}
    for i, name in enumerate(spec.required + spec.optional):
        if name == "dst" and op in ("matmul", "transpose"):
            operands[name] = AP("psum", 0x800, ((1, 64),), "f32", 0, 128)
        elif name == "dst" and op == "dma_copy":
            operands[name] = AP("hbm", 0x1000 * (i + 1), ((64, 128), (1, 64)), "f32")
        else:
            operands[name] = sb(0x100 * i, 64, "bf16" if i % 2 else "f32")
    attrs = {name: _non_default(*schema) for name, schema in spec.attrs.items()}
    return Instr(spec.engines[-1], op, operands, attrs, ((3, 2), (4, 1)), ((5, 1),), 0, f"at_{op}")


@pytest.mark.parametrize("op", list(OPCODES))
def test_every_opcode_formats_and_parses_back(op):
    ins = _representative(op)
    text = format_instr(ins)
    spec = OPCODES[op]
    # canonical order: label, engine, opcode, operands in schema order, attrs sorted, wait, signal, dbg
    keys = [tok.split("=", 1)[0] for tok in text.split()[3:]]
    assert keys == list(spec.required + spec.optional) + sorted(spec.attrs) + ["wait", "signal", "dbg"]
    assert text.startswith(f"at_{op}: {ins.engine:<4} {op} ")
    assert text.endswith("wait=s3>=2,s4>=1 signal=s5+=1 dbg=0")
    back = parse_instr(text)
    assert back == ins
    assert canonical(back) == canonical(ins)


def test_instruction_spelling_is_exact():
    ins = Instr("dve", "tensor_scalar", {"dst": sb(0x400, 64), "src": sb(0, 64)},
                {"op0": "mul", "s0": 2.0, "op1": "add", "s1": 1}, waits=((0, 1),), signals=((1, 1),))
    assert format_instr(ins) == ("dve  tensor_scalar dst=sbuf[0:+128]@0x400{1:64}:f32 "
                                 "src=sbuf[0:+128]@0x0{1:64}:f32 op0=mul op1=add s0=2.0 s1=1 "
                                 "wait=s0>=1 signal=s1+=1")
    assert str(ins) == format_instr(ins)


@pytest.mark.parametrize("text, value", [
    ("1.0", 1.0), ("1", 1), ("-0.0", -0.0), ("inf", math.inf), ("-inf", -math.inf),
    ("1e-05", 1e-05), ("0x10", 16), ("2.5e+16", 2.5e16), ("-7", -7),
])
def test_number_attributes_keep_their_type(text, value):
    ins = parse_instr(f"dve memset dst=sbuf[0:+1]@0x0{{1:4}}:f32 value={text}")
    got = ins.attrs["value"]
    assert type(got) is type(value) and got == value
    assert math.copysign(1, got) == math.copysign(1, value)
    assert parse_instr(format_instr(ins)).attrs["value"].__repr__() == got.__repr__()


def test_nan_attribute_round_trips():
    ins = parse_instr("act activate dst=sbuf[0:+1]@0x0{1:4}:f32 src=sbuf[0:+1]@0x0{1:4}:f32 bias=nan")
    assert math.isnan(ins.attrs["bias"])
    assert "bias=nan" in format_instr(ins)


def test_int_attribute_rejects_a_float():
    with pytest.raises(AsmError, match=r"pe matmul start: expected an integer"):
        parse_instr("pe matmul dst=psum[0:+1]@0x0{1:4}:f32 stat=sbuf[0:+1]@0x0{1:1}:bf16 "
                    "mov=sbuf[0:+1]@0x0{1:4}:bf16 start=1.0")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(instrs(n_origins=5, n_host_ops=3))
def test_any_valid_instruction_round_trips(ins):
    back = parse_instr(format_instr(ins))
    assert canonical(back) == canonical(ins)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_any_valid_program_round_trips(program):
    text = disassemble(program)
    back = assemble(text)
    assert canonical(back) == canonical(program)
    assert disassemble(back) == text
    annotated = disassemble(program, annotate=True)
    assert canonical(assemble(annotated)) == canonical(program)


# ---- whole programs --------------------------------------------------------------------------------

def _program() -> Program:
    w = Tensor("layer/w 0", "const", 0x10000, (2, 3), "f32", bytes(range(24)))
    ins = [
        Instr("dma0", "dma_copy", {"dst": sb(0, 64), "src": AP("hbm", 0, ((64, 128), (1, 64)), "f32")},
              signals=((0, 1),), dbg=0, label="load"),
        Instr("act", "activate", {"dst": sb(256, 64), "src": sb(0, 64)}, {"func": "gelu", "scale": 0.5},
              waits=((0, 1),), signals=((1, 1),), dbg=1),
        Instr("dma1", "dma_copy", {"dst": AP("hbm", 0x8000, ((64, 128), (1, 64)), "f32"), "src": sb(256, 64)},
              waits=((1, 1),), dbg=2),
    ]
    tensors = [Tensor("x", "input", 0, (128, 64), "f32"), w, Tensor("y", "output", 0x8000, (128, 64), "f32")]
    origins = [Origin("load x", "DMA"), Origin('/blk.0/"act"\nnew line', "Gelu"), Origin("store", "")]
    taps = [Tap("/blk.0/act_out", (128, 64), "f32", [TapPiece(sb(256, 64), 0, (64, 1))], "act", 0),
            Tap("fused", (), "f32", fused_into="/blk.0/act_out")]
    return Program(load_arch("xpu1"), ins, tensors, origins, taps, {"source": "model.onnx", "note": 'a "q"'})


def test_disassembly_of_a_program_reads_well_and_round_trips():
    program = _program()
    text = disassemble(program)
    assert text.splitlines()[:5] == [
        f".arch xpu1 {XPU1_HASH}",
        '.meta source "model.onnx"',
        '.meta note "a \\"q\\""',
        ".tensor input x @0x0 shape=128x64 dtype=f32",
        '.tensor const "layer/w 0" @0x10000 shape=2x3 dtype=f32 data=AAECAwQFBgcICQoLDA0ODxAREhMUFRYX',
    ]
    assert '.origin 1 "/blk.0/\\"act\\"\\nnew line" Gelu' in text
    assert ".origin 2 store\n" in text
    assert ".tap /blk.0/act_out shape=128x64 dtype=f32 after=act:0\n" in text
    assert ".piece sbuf[0:+128]@0x100{1:64}:f32 offset=0 strides=64,1\n" in text
    assert ".tap fused shape=scalar dtype=f32 fused_into=/blk.0/act_out\n" in text
    assert "load: dma0 dma_copy" in text
    assert assemble(text) == program


def test_annotations_name_the_origin_and_are_ignored_by_the_parser():
    program = _program()
    text = disassemble(program, annotate=True)
    lines = [ln for ln in text.splitlines() if "; node=" in ln]
    assert len(lines) == 3
    assert lines[0].endswith("; node=load x (DMA)")
    assert lines[1].endswith('; node="/blk.0/\\"act\\"\\nnew line" (Gelu)')  # newline escaped
    assert lines[2].endswith("; node=store")
    assert assemble(text) == program


def test_without_data_constants_are_marked_and_do_not_reassemble():
    text = disassemble(_program(), data=False)
    assert '.tensor const "layer/w 0" @0x10000 shape=2x3 dtype=f32  ; data omitted (24 bytes)' in text
    with pytest.raises(AsmError, match=r"<text>:5: constant layer/w 0 has no data="):
        assemble(text)


def test_default_arch_comments_blank_lines_labels_and_crlf():
    text = ("; a hand-written program\r\n"
            "\r\n"
            ".tensor input x @4096 shape=4 dtype=f32   ; decimal offsets are fine\r\n"
            "start:\r\n"
            "  dve memset dst=sbuf[0:+1]@0x0{1:4}:f32 value=1.5 ; trailing comment\r\n"
            '"odd label": pool nop signal=s0+=1\r\n')
    p = assemble(text, "hand.xasm")
    assert (p.arch_name, p.arch_hash) == ("xpu1", XPU1_HASH)
    assert p.tensors == [Tensor("x", "input", 4096, (4,), "f32")]
    assert [i.label for i in p.instrs] == ["start", "odd label"]
    assert p.instrs[0].attrs == {"value": 1.5}
    assert assemble(disassemble(p)) == p


def test_arch_without_hash_takes_the_preset_hash():
    p = assemble(".arch xpu1-edge\n")
    assert p.arch == load_arch("xpu1-edge")


def test_a_custom_arch_travels_in_the_text():
    raw = json.loads(json.dumps(load_arch("xpu1").raw))
    raw.update(name="custom", clock_ghz=2.0)
    custom = arch_from_dict(raw)
    text = disassemble(Program(custom, [Instr("pool", "nop", {}, {})]))
    assert ".archdesc" in text
    assert assemble(text).arch == custom
    # a name that is not a preset, without its description, cannot be run anywhere: refused
    with pytest.raises(AsmError, match="not a preset.*archdesc"):
        assemble(".arch custom abc123\n")
    # a preset name with another version's hash: refused, saying what to do
    with pytest.raises(AsmError, match="another version of xpu1.*archdesc or rebuild"):
        assemble(".arch xpu1 0123456789abcdef\n")
    # the description and the .arch line must agree
    with pytest.raises(AsmError, match="does not match its .archdesc"):
        assemble(text.replace(".arch custom", ".arch other"))


def test_sample_programs_assemble_and_round_trip():
    for path in sorted((ROOT / "samples" / "programs").glob("*.xasm")):
        p = assemble(path.read_text(), path.name)
        assert assemble(disassemble(p, annotate=True)) == p


# ---- errors ----------------------------------------------------------------------------------------

GOOD = "dve memset dst=sbuf[0:+1]@0x0{1:4}:f32"


@pytest.mark.parametrize("text, line, expected", [
    ("dve  memset\n", 1, "missing operand dst"),
    (f"{GOOD}\nfoo memset dst=sbuf[0:+1]@0x0{{1:4}}:f32\n", 2, "unknown engine 'foo' (expected pe, act"),
    ("\n\ndve frobnicate\n", 3, "unknown opcode 'frobnicate' (expected one of dma_copy"),
    ("dve\n", 1, "expected an opcode after engine dve"),
    ("pe memset dst=sbuf[0:+1]@0x0{1:4}:f32\n", 1, "cannot run on engine pe (runs on dve, pool)"),
    (f"{GOOD} colour=red\n", 1, "unknown operand or attribute 'colour' (expected dst, [value], [wait]"),
    (f"{GOOD} value=abc\n", 1, "dve memset value: expected an integer or a number"),
    (f"{GOOD} value=1 value=2\n", 1, "value= given twice"),
    (f"{GOOD} oops\n", 1, "expected key=value, got 'oops'"),
    (f"{GOOD} wait=s1>2\n", 1, "wait: expected sN>=V[,sN>=V...], got 's1>2'"),
    (f"{GOOD} signal=s1+1\n", 1, "signal: expected sN+=V"),
    (f"{GOOD} dbg=x\n", 1, "dbg: expected a decimal integer"),
    (f"{GOOD} dbg=0\n", 1, "dbg=0 names no origin (the program declares 0 .origin lines)"),
    ("dve memset dst=sbuf@0x0{1:4}:f32\n", 1,
     "dve memset dst: access pattern 'sbuf@0x0{1:4}:f32': sbuf needs"),
    ("dma0 dma_copy dst=psum[0:+1]@0x0{1:4}:f32 src=sbuf[0:+1]@0x0{1:4}:f32\n", 1, "DMA cannot write psum"),
    ("host host_call\n", 1, "host_call op=0 names no .hostop (the program declares 0)"),
    ("1abc: " + GOOD + "\n", 1, "bad label '1abc'"),
    ("lonely:\n", 1, "label 'lonely' has no instruction after it"),
    ("a:\nb:\n" + GOOD + "\n", 2, "two labels ('a', 'b')"),
    ('.meta k "unterminated\n', 1, "unterminated string"),
    (".bogus 1\n", 1, "unknown directive .bogus (expected .arch, .archdesc, .meta"),
    (".arch a 1\n.arch b 2\n", 2, ".arch given twice"),
    (".arch nosuch\n", 1, ".arch nosuch: not a preset (xpu1, xpu1-edge); a program for another arch carries"),
    (".meta k v\n", 1, 'expected .meta KEY "value"'),
    (".meta k \"1\"\n.meta k \"2\"\n", 2, ".meta k given twice"),
    (".tensor weight w @0 shape=1 dtype=f32\n", 1, "unknown tensor kind 'weight' (expected input, output"),
    (".tensor input x 0 shape=1 dtype=f32\n", 1, "expected .tensor KIND NAME @OFFSET"),
    (".tensor input x @0 dtype=f32\n", 1, "tensor x: missing shape="),
    (".tensor input x @0 shape=2,3 dtype=f32\n", 1, "expected shape=AxBx... (e.g. 128x512) or shape=scalar"),
    (".tensor input x @0 shape=2 dtype=f128\n", 1, "unknown dtype 'f128'"),
    (".tensor input x @0 shape=1 dtype=f32\n.tensor output x @8 shape=1 dtype=f32\n", 2,
     "tensor x already declared on line 1"),
    (".tensor const w @0 shape=2 dtype=f32 data=AAAA\n", 1,
     "constant w: data has 3 bytes, shape/dtype need 8"),
    (".tensor const w @0 shape=2 dtype=f32 data=!!\n", 1, "tensor w data: expected base64 data"),
    (".tensor input x @0 shape=1 dtype=f32 data=AAAAAA==\n", 1, "tensor x: only constants carry data="),
    (".tensor input x @0 shape=1 dtype=f32 size=4\n", 1, "unknown key 'size' (expected shape, dtype, data)"),
    (".origin 1 a\n", 1, ".origin 1: expected index 0"),
    (".origin 0 a b c\n", 1, "expected .origin INDEX NAME [OP_TYPE]"),
    ('.origin 0 "a"b\n', 1, "bad quoted string"),
    (".origin 0 a,b\n", 1, "expected a name (letters, digits, _ . / : -) or a \"quoted string\""),
    (".hostop 0 h Foo inputs=x\n", 1, 'host op h inputs: expected a JSON list of strings'),
    (".hostop 0 h Foo inputs=[\"x\"]\n", 1, "host op h: tensor x is not declared"),
    (".piece sbuf[0:+1]@0x0{1:4}:f32\n", 1, ".piece must follow the .tap"),
    (".tap t shape=4 dtype=f32 after=act\n", 1, "expected after=ENGINE:INDEX (e.g. act:3)"),
    (".tap t shape=4 dtype=f32 after=act:0\n.piece sbuf[0:+1]@0x0{1:4}:f32 offset=0 strides=1\n", 1,
     "tap t: after=act:0 names no instruction"),
])
def test_malformed_input_names_the_line_and_what_was_expected(text, line, expected):
    with pytest.raises(AsmError) as info:
        assemble(text, "bad.xasm")
    message = str(info.value)
    assert message.startswith(f"bad.xasm:{line}: "), message
    assert expected in message, message


def test_parse_instr_rejects_an_empty_line():
    with pytest.raises(AsmError, match="expected an instruction"):
        parse_instr("   ; only a comment")


# ---- documentation ---------------------------------------------------------------------------------

def test_doc_contains_the_generated_opcode_reference():
    doc = (ROOT / "docs" / "assembly.md").read_text(encoding="utf-8")
    assert opcode_reference_markdown() in doc, "regenerate the table: python -c 'from device_model." \
        "assembly import opcode_reference_markdown as f; print(f())'"
    for op in OPCODES:
        assert f"| `{op}` |" in doc


def test_doc_worked_example_assembles():
    doc = (ROOT / "docs" / "assembly.md").read_text(encoding="utf-8")
    block = doc.split("```xasm\n", 1)[1].split("```", 1)[0]
    p = assemble(block, "docs/assembly.md")
    assert assemble(disassemble(p)) == p
    assert p.instrs and p.taps and p.origins
