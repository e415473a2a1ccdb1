"""Reusable hypothesis strategies for XPU access patterns, instructions and whole programs, plus
`canonical()`, a strict structural key for comparing them (NaN equals NaN, -0.0 differs from 0.0,
1 differs from 1.0)."""
from __future__ import annotations

import dataclasses
import json

from hypothesis import strategies as st

from device_model.arch import Arch, arch_from_dict, load_arch
from device_model.dtypes import DTYPES, np_dtype
from device_model.isa import AP, AP_LIMIT, ENGINES, OPCODES, SPACES, Instr
from device_model.program import TENSOR_KINDS, HostOp, Origin, Program, Tap, TapPiece, Tensor

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
simple_names = st.from_regex(r"[A-Za-z0-9_./][A-Za-z0-9_./:\-]{0,12}", fullmatch=True)
# names as ONNX produces them, plus anything at all (spaces, quotes, ';', newlines, unicode)
names = st.one_of(simple_names, st.text(max_size=12))
labels = st.one_of(st.none(), st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,10}", fullmatch=True),
                   st.text(max_size=10))
sem_refs = st.lists(st.tuples(st.integers(0, 63), st.integers(0, 1 << 20)), max_size=3).map(tuple)
dtypes = st.sampled_from(list(DTYPES))


@st.composite
def aps(draw, spaces=SPACES, max_count: int = 1 << 12) -> AP:
    """A valid access pattern (fewer than AP_LIMIT elements)."""
    space = draw(st.sampled_from(spaces))
    dims = tuple(draw(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, max_count)),
                               min_size=1, max_size=4)))
    dtype = draw(dtypes)
    if space == "hbm":
        ap = AP(space, draw(st.integers(0, 1 << 36)), dims, dtype)
    else:
        ap = AP(space, draw(st.integers(0, 1 << 18)), dims, dtype,
                draw(st.integers(0, 127)), draw(st.integers(1, 128)))
    while ap.num_elements >= AP_LIMIT:  # drop inner dims until it fits
        ap = dataclasses.replace(ap, dims=ap.dims[:-1])
    return ap


def attr_values(types, choices):
    """Values the schema accepts for one attribute (floats include inf, nan and -0.0)."""
    if choices is not None:
        return st.sampled_from(choices)
    types = types if isinstance(types, tuple) else (types,)
    options = []
    if int in types:
        options.append(st.integers(-(1 << 63), 1 << 63))
    if float in types:
        options.append(st.floats(allow_nan=True, allow_infinity=True))
    if str in types:
        options.append(identifiers)
    return st.one_of(options)


def _operand_spaces(op: str, name: str) -> tuple[str, ...]:
    if name == "dst" and op == "dma_copy":
        return ("hbm", "sbuf")
    if name == "dst" and op in ("matmul", "transpose"):
        return ("psum",)
    return SPACES


@st.composite
def instrs(draw, n_origins: int = 0, n_host_ops: int = 1, ops=None) -> Instr:
    """A schema-valid instruction. dbg < n_origins; host_call op < n_host_ops (no host_call when 0)."""
    choices = list(ops or OPCODES)
    if n_host_ops == 0:
        choices = [op for op in choices if op != "host_call"]
    op = draw(st.sampled_from(choices))
    spec = OPCODES[op]
    operands = {n: draw(aps(_operand_spaces(op, n))) for n in spec.required}
    for n in spec.optional:
        if draw(st.booleans()):
            operands[n] = draw(aps(_operand_spaces(op, n)))
    attrs = {}
    for name, (types, _default, choices_) in spec.attrs.items():
        if draw(st.booleans()):
            if op == "host_call" and name == "op":
                attrs[name] = draw(st.integers(0, n_host_ops - 1))
            else:
                attrs[name] = draw(attr_values(types, choices_))
    dbg = draw(st.integers(-1, n_origins - 1))
    return Instr(draw(st.sampled_from(spec.engines)), op, operands, attrs, draw(sem_refs), draw(sem_refs),
                 dbg, draw(labels))


shapes = st.lists(st.integers(0, 1 << 20), max_size=4).map(tuple)
small_shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@st.composite
def tensors(draw, name: str, offset: int = 0) -> Tensor:
    """A tensor at or after `offset`, smaller than 2^36 bytes."""
    kind = draw(st.sampled_from(TENSOR_KINDS))
    dtype = draw(dtypes)
    offset += draw(st.integers(0, 1 << 36))
    if kind != "const":
        return Tensor(name, kind, offset, draw(shapes.filter(_fits(dtype))), dtype)
    shape = draw(small_shapes)
    t = Tensor(name, kind, offset, shape, dtype)
    t.data = draw(st.binary(min_size=t.nbytes, max_size=t.nbytes))
    assert len(t.data) == t.nbytes and np_dtype(dtype)
    return t


def _fits(dtype):
    def small(shape) -> bool:
        n = np_dtype(dtype).itemsize
        for d in shape:
            n *= d
        return n < 1 << 36
    return small


@st.composite
def tap_pieces(draw, size: int) -> TapPiece:
    """A piece naming elements of a tensor of `size` (>= 1) elements: indices in range."""
    ap = draw(aps(max_count=4))
    while ap.num_elements > size:
        ap = dataclasses.replace(ap, dims=ap.dims[:-1] or ((0, 1),), pcount=1)
    strides, reach = [], 0
    for n in ap.shape:
        stride = draw(st.integers(-3, size)) if n > 1 else draw(st.integers(-64, 1 << 20))
        strides.append(stride if reach + abs(stride) * (n - 1) < size else 0)
        reach += abs(strides[-1]) * (n - 1)
    low = sum(min(0, (n - 1) * s) for n, s in zip(ap.shape, strides))
    offset = draw(st.integers(-low, size - 1 - (reach + low)))
    return TapPiece(ap, offset, tuple(strides))


@st.composite
def taps(draw, counts: dict[str, int]) -> Tap:
    tap = Tap(draw(names), draw(small_shapes), draw(dtypes))
    size = 1
    for d in tap.shape:
        size *= d
    engines = [e for e, n in counts.items() if n]
    if engines and size and draw(st.booleans()):
        tap.after_engine = draw(st.sampled_from(engines))
        tap.after_index = draw(st.integers(0, counts[tap.after_engine] - 1))
        for _ in range(draw(st.integers(1, 3))):
            tap.pieces.append(draw(tap_pieces(size)))
    elif draw(st.booleans()):
        tap.fused_into = draw(names)
    return tap


@st.composite
def arches(draw) -> Arch:
    """A bundled preset, or a custom arch (a preset with another name and clock) that only the
    program itself describes."""
    base = load_arch(draw(st.sampled_from(["xpu1", "xpu1-edge"])))
    if draw(st.booleans()):
        return base
    raw = json.loads(json.dumps(base.raw))
    raw["name"] = draw(names)
    raw["description"] = draw(st.text(max_size=20))
    raw["clock_ghz"] = draw(st.floats(0.1, 4.0, allow_nan=False))
    return arch_from_dict(raw)


@st.composite
def programs(draw, max_instrs: int = 8) -> Program:
    """A Program that passes Program.validate()."""
    tensor_names = draw(st.lists(names, max_size=4, unique=True))
    prog_tensors, end = [], 0
    for n in tensor_names:  # disjoint in HBM
        prog_tensors.append(draw(tensors(n, end)))
        end = prog_tensors[-1].offset + prog_tensors[-1].nbytes
    origins = draw(st.lists(st.builds(Origin, names, st.one_of(st.just(""), names)), max_size=4))
    ref = st.sampled_from(tensor_names + [""]) if tensor_names else st.just("")
    host_ops = draw(st.lists(st.builds(HostOp, names, names, st.lists(ref, max_size=2),
                                       st.lists(ref, max_size=2), st.binary(max_size=16)), max_size=2))
    code = draw(st.lists(instrs(len(origins), len(host_ops)), max_size=max_instrs))
    counts = {e: 0 for e in ENGINES}
    for ins in code:
        counts[ins.engine] += 1
    prog_taps = draw(st.lists(taps(counts), max_size=3))
    arch = draw(arches())
    meta = draw(st.dictionaries(names, st.text(max_size=20), max_size=3))
    program = Program(arch, code, prog_tensors, origins, prog_taps, meta, host_ops)
    program.validate()
    return program


def canonical(obj):
    """A comparison key stricter than ==: float vs int, -0.0 vs 0.0 and list vs tuple differ, and
    NaN equals NaN."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__,) + tuple(canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return ("dict", tuple(sorted((repr(k), canonical(v)) for k, v in obj.items())))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__,) + tuple(canonical(v) for v in obj)
    if isinstance(obj, bool):
        return ("bool", obj)
    if isinstance(obj, float):
        return ("float", float.__repr__(obj))
    if isinstance(obj, int):
        return ("int", obj)
    return (type(obj).__name__, obj)
