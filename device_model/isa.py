"""The XPU instruction set: engines, access patterns, instructions and the opcode schema.

Everything here is plain data. Functional semantics live in `engines`, costs in `timing`,
the text form in `assembly`. An instruction is valid when `validate_instr` accepts it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Union

from .dtypes import DTYPES, itemsize
from .errors import XpuError

SPACES = ("hbm", "sbuf", "psum")
MAX_FREE_DIMS = 4
NUM_DMA_QUEUES = 16
# Every number in an access pattern (offset, stride, count, partition) stays below this (1 TiB, the
# largest HBM an arch may declare): larger values can address nothing and overflow numpy's strides.
AP_LIMIT = 1 << 40
COMPUTE_ENGINES = ("pe", "act", "dve", "pool")
DMA_ENGINES = tuple(f"dma{i}" for i in range(NUM_DMA_QUEUES))
HOST_ENGINE = "host"  # fallback work the device cannot do, run by the host between device work
ENGINES = COMPUTE_ENGINES + DMA_ENGINES + (HOST_ENGINE,)  # fixed order (also the profiler's track order)
ENGINE_INDEX = {name: i for i, name in enumerate(ENGINES)}


class IsaError(XpuError, ValueError):
    """An instruction or access pattern that the ISA does not allow."""


@dataclass(frozen=True)
class AP:
    """An access pattern: which elements of which memory an operand touches.

    hbm:       element i = hbm byte `offset + Σ iₖ·strideₖ·itemsize`; shape = counts.
    sbuf/psum: partitions `pstart .. pstart+pcount-1` form the first (outermost) axis; inside each
               partition element i = byte `offset + Σ iₖ·strideₖ·itemsize`; shape = (pcount, *counts).
    `dims` is a tuple of (stride, count) pairs in elements, outermost first, at most MAX_FREE_DIMS.
    """

    space: str
    offset: int
    dims: tuple[tuple[int, int], ...]
    dtype: str
    pstart: int = 0
    pcount: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        free = tuple(c for _, c in self.dims)
        return free if self.space == "hbm" else (self.pcount,) + free

    @property
    def free_size(self) -> int:
        n = 1
        for _, c in self.dims:
            n *= c
        return n

    @property
    def num_elements(self) -> int:
        return self.free_size * (1 if self.space == "hbm" else self.pcount)

    @property
    def nbytes(self) -> int:
        return self.num_elements * itemsize(self.dtype)

    @property
    def partitioned(self) -> bool:
        return self.space != "hbm"

    def byte_extent(self) -> tuple[int, int]:
        """[first, last+1) bytes touched inside one partition (or in HBM)."""
        size = itemsize(self.dtype)
        last = self.offset + sum((c - 1) * s * size for s, c in self.dims)
        return self.offset, last + size

    def __str__(self) -> str:  # the assembly spelling; see docs/assembly.md
        return format_ap(self)


Scalar = Union[int, float, str]
Value = Union[Scalar, AP]


@dataclass
class Instr:
    """One instruction of one engine's stream.

    `operands` maps operand names (dst, src, a, b, ...) to access patterns; `attrs` holds scalars
    (numbers or identifiers). `waits` are (semaphore, value) pairs: start only when sem >= value.
    `signals` are (semaphore, increment) pairs applied at completion. `dbg` indexes the program's
    origin table (-1 = none). `label` is kept for readability of the assembly only.
    """

    engine: str
    op: str
    operands: dict[str, AP] = field(default_factory=dict)
    attrs: dict[str, Scalar] = field(default_factory=dict)
    waits: tuple[tuple[int, int], ...] = ()
    signals: tuple[tuple[int, int], ...] = ()
    dbg: int = -1
    label: str | None = None

    def __str__(self) -> str:
        return format_instr(self)


# --- opcode schema -----------------------------------------------------------------------------

FLOAT_TYPES = ("f32", "bf16", "f16", "fp8e4", "fp8e5")
MATMUL_TYPES = FLOAT_TYPES + ("i8",)
ALU_OPS = ("add", "sub", "mul", "div", "max", "min", "pow", "mod",
           "eq", "ne", "gt", "ge", "lt", "le", "and", "or", "xor", "bypass")
REDUCE_OPS = ("sum", "max", "min")
ACT_FUNCS = ("identity", "copy", "relu", "gelu", "gelu_tanh", "exp", "log", "tanh", "sigmoid",
             "silu", "erf", "sqrt", "rsqrt", "reciprocal", "square", "abs", "neg", "sign",
             "hardsigmoid", "hardswish", "softplus", "leaky_relu", "floor", "ceil", "round",
             "isnan", "not")
ACT_MODES = ("exact", "table")


@dataclass(frozen=True)
class OpSpec:
    engines: tuple[str, ...]
    required: tuple[str, ...]                  # operand names that must be present
    optional: tuple[str, ...] = ()             # operand names that may be present
    attrs: dict[str, tuple] = field(default_factory=dict)  # name -> (type(s), default, choices|None)
    doc: str = ""
    numbered: tuple[str, ...] = ()             # operand name prefixes taking any number: src0, src1, ...

    def allows_operand(self, name: str) -> bool:
        if name in self.required or name in self.optional:
            return True
        return any(name.startswith(p) and name[len(p):].isdigit() and str(int(name[len(p):])) == name[len(p):]
                   for p in self.numbered)


WRITTEN_OPERANDS = ("dst", "accum")  # and numbered dstN (host_call)


def is_written(operand: str) -> bool:
    """Whether an operand is written by its instruction (all others are read)."""
    return operand in WRITTEN_OPERANDS or (operand.startswith("dst") and operand[3:].isdigit())


_ANY_COMPUTE = ("dve", "pool", "act")
_VEC = ("dve", "pool")
_NUM = (int, float)

OPCODES: dict[str, OpSpec] = {
    # DMA ----------------------------------------------------------------------------------
    "dma_copy": OpSpec(DMA_ENGINES, ("dst", "src"), doc=(
        "dst[i] = cast(src[i]) for i in C-order of both shapes; element counts must match; any "
        "space to any space except psum as destination")),
    # PE -----------------------------------------------------------------------------------
    "matmul": OpSpec(("pe",), ("dst", "stat", "mov"), attrs={
        "start": (int, 1, (0, 1)),
    }, doc=("dst[M,N] (psum, f32 or i32) = (start ? 0 : dst) + stat[K,M]^T @ mov[K,N]; "
            "K = partitions <= pe rows, M <= pe cols, N <= pe max_n")),
    "transpose": OpSpec(("pe",), ("dst", "src"), doc=(
        "dst[M,K] (psum) = src[K,M]^T exactly (matmul with identity)")),
    # ACT ----------------------------------------------------------------------------------
    "activate": OpSpec(("act",), ("dst", "src"), ("scale_ap", "bias_ap", "accum"), attrs={
        "func": (str, "identity", ACT_FUNCS),
        "scale": (_NUM, 1.0, None),
        "bias": (_NUM, 0.0, None),
        "alpha": (_NUM, 0.01, None),
        "mode": (str, "table", ACT_MODES),
    }, doc=("dst = func(src*scale + bias) per partition; scale_ap/bias_ap [P,1] override the "
            "scalars; accum [P,1] receives the free-axis sum of the result")),
    # DVE / POOL elementwise ----------------------------------------------------------------
    "tensor_tensor": OpSpec(_VEC, ("dst", "a", "b"), attrs={"op": (str, "add", ALU_OPS)},
                            doc="dst = a <op> b elementwise (same shape)"),
    "tensor_scalar": OpSpec(_VEC, ("dst", "src"), ("s0_ap", "s1_ap"), attrs={
        "op0": (str, "mul", ALU_OPS), "s0": (_NUM, 1.0, None), "rev0": (int, 0, (0, 1)),
        "op1": (str, "bypass", ALU_OPS), "s1": (_NUM, 0.0, None), "rev1": (int, 0, (0, 1)),
    }, doc=("dst = (src op0 s0) op1 s1; sK_ap [P,1] gives a per-partition scalar; revK=1 swaps "
            "the operands of opK")),
    "select": OpSpec(_VEC, ("dst", "pred", "a", "b"), doc="dst = pred != 0 ? a : b"),
    "reduce": OpSpec(_VEC, ("dst", "src"), attrs={
        "op": (str, "sum", REDUCE_OPS), "axes": (int, 1, (1, 2, 3, 4)),
    }, doc="dst = reduce over the innermost `axes` free dims of src"),
    "copy": OpSpec(_VEC + ("act",), ("dst", "src"), doc="dst = cast(src)"),
    "memset": OpSpec(_VEC, ("dst",), attrs={"value": (_NUM, 0.0, None)}, doc="dst = value"),
    "iota": OpSpec(_VEC, ("dst",), attrs={
        "base": (_NUM, 0, None), "pstep": (_NUM, 0, None), "step": (_NUM, 1, None),
    }, doc="dst[p, i] = base + p*pstep + flat_free_index(i)*step"),
    "transpose32": OpSpec(("dve",), ("dst", "src"), doc=(
        "each 32x32 block of src[P,F] is transposed in place: dst[32a+r, 32b+c] = src[32a+c, 32b+r]")),
    "stats": OpSpec(_VEC, ("dst", "src"), doc=(
        "dst[P,2] = (mean, population variance) of src over all free elements, in f32")),
    # POOL only ----------------------------------------------------------------------------
    "preduce": OpSpec(("pool",), ("dst", "src"), attrs={"op": (str, "sum", REDUCE_OPS)},
                      doc="dst[1,F] = reduce over partitions of src[P,F]"),
    "pbroadcast": OpSpec(("pool",), ("dst", "src"), doc="dst[P,F] = src[1,F] on every partition"),
    "gather": OpSpec(("pool",), ("dst", "table", "idx"), doc=(
        "dst[p, f...] = table[idx[p], f...]; table's first axis (partitions or outermost hbm "
        "dim) is the row; idx[P,1] is integer; an index out of range is an error")),
    # host -----------------------------------------------------------------------------------
    "host_call": OpSpec((HOST_ENGINE,), (), attrs={"op": (int, 0, None)}, numbered=("src", "dst"), doc=(
        "run entry `op` of the program's host-op table on the host: read its input tensors from "
        "HBM, compute, write its outputs to HBM; srcN/dstN name the HBM ranges it reads and writes")),
    # any engine -------------------------------------------------------------------------------
    "nop": OpSpec(ENGINES, (), doc="does nothing; carries waits and signals (a barrier)"),
}


def engine_kind(engine: str) -> str:
    return "dma" if engine.startswith("dma") else engine


def validate_ap(ap: AP, where: str = "") -> None:
    pre = f"{where}: " if where else ""
    if ap.space not in SPACES:
        raise IsaError(f"{pre}unknown memory space {ap.space!r} (expected one of {', '.join(SPACES)})")
    if ap.dtype not in DTYPES:
        raise IsaError(f"{pre}unknown dtype {ap.dtype!r} (expected one of {', '.join(DTYPES)})")
    if not ap.dims or len(ap.dims) > MAX_FREE_DIMS:
        raise IsaError(f"{pre}access pattern needs 1..{MAX_FREE_DIMS} free dims, got {len(ap.dims)}")
    for s, c in ap.dims:
        if isinstance(s, bool) or isinstance(c, bool) or not isinstance(s, int) or not isinstance(c, int) \
                or s < 0 or c < 1:
            raise IsaError(f"{pre}bad dim [{s},{c}]: stride must be >= 0 and count >= 1")
        if s >= AP_LIMIT or c >= AP_LIMIT:
            raise IsaError(f"{pre}bad dim [{s},{c}]: stride and count must be below 2^40")
    if isinstance(ap.offset, bool) or not isinstance(ap.offset, int) or ap.offset < 0:
        raise IsaError(f"{pre}bad offset {ap.offset!r}: must be an integer >= 0")
    if ap.offset >= AP_LIMIT:
        raise IsaError(f"{pre}offset {ap.offset} must be below 2^40")
    if ap.num_elements >= AP_LIMIT:
        raise IsaError(f"{pre}access pattern of {ap.num_elements} elements: must be below 2^40")
    if ap.space == "hbm":
        if ap.pstart != 0 or ap.pcount != 1:
            raise IsaError(f"{pre}hbm access patterns have no partitions")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in (ap.pstart, ap.pcount)) \
            or ap.pstart < 0 or ap.pcount < 1 or ap.pstart + ap.pcount > AP_LIMIT:
        raise IsaError(f"{pre}bad partition range {ap.pstart}:+{ap.pcount}")


def validate_instr(ins: Instr) -> None:
    """Check an instruction against the schema (not against an arch's sizes: see machine)."""
    where = f"{ins.engine} {ins.op}"
    spec = OPCODES.get(ins.op)
    if spec is None:
        raise IsaError(f"unknown opcode {ins.op!r}")
    if ins.engine not in ENGINES:
        raise IsaError(f"unknown engine {ins.engine!r} (expected pe, act, dve, pool, dma0..dma15 or host)")
    if ins.engine not in spec.engines:
        raise IsaError(f"{where}: opcode {ins.op} cannot run on engine {ins.engine} "
                       f"(runs on {', '.join(sorted(set(engine_kind(e) for e in spec.engines)))})")
    for name in spec.required:
        if name not in ins.operands:
            raise IsaError(f"{where}: missing operand {name}")
    allowed = set(spec.required) | set(spec.optional) | {f"{p}N" for p in spec.numbered}
    for name, ap in ins.operands.items():
        if not spec.allows_operand(name):
            raise IsaError(f"{where}: unknown operand {name} (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(ap, AP):
            raise IsaError(f"{where}: operand {name} must be an access pattern")
        validate_ap(ap, f"{where} {name}")
    for name, value in ins.attrs.items():
        if name not in spec.attrs:
            raise IsaError(f"{where}: unknown attribute {name} "
                           f"(allowed: {', '.join(sorted(spec.attrs)) or 'none'})")
        types, _default, choices = spec.attrs[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise IsaError(f"{where}: attribute {name}={value!r} has the wrong type")
        if choices is not None and value not in choices:
            raise IsaError(f"{where}: attribute {name}={value!r} not one of {choices}")
    for sem, val in tuple(ins.waits) + tuple(ins.signals):
        if not isinstance(sem, int) or not isinstance(val, int) or sem < 0 or val < 0:
            raise IsaError(f"{where}: bad semaphore reference s{sem} {val}")
    dst = ins.operands.get("dst")
    if dst is not None and ins.op == "dma_copy" and dst.space == "psum":
        raise IsaError(f"{where}: DMA cannot write psum")
    if ins.op in ("matmul", "transpose") and dst is not None and dst.space != "psum":
        raise IsaError(f"{where}: PE writes psum only")


def operand_accesses(ins: Instr) -> list[tuple[str, str, AP]]:
    """(kind "r"/"w", operand name, AP) for every access the instruction makes, reads first. A
    matmul with start=0 accumulates: it reads its destination before writing it."""
    out = [("r", n, ap) for n, ap in ins.operands.items() if not is_written(n)]
    if ins.op == "matmul" and "dst" in ins.operands and attr(ins, "start") == 0:
        out.append(("r", "dst", ins.operands["dst"]))
    out += [("w", n, ap) for n, ap in ins.operands.items() if is_written(n)]
    return out


def attr(ins: Instr, name: str):
    """An attribute's value, or the schema's default."""
    if name in ins.attrs:
        return ins.attrs[name]
    return OPCODES[ins.op].attrs[name][1]


# --- the text spelling of APs and instructions (docs/assembly.md; `assembly` parses it back) ------
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
SEM_OP = {"wait": ">=", "signal": "+="}


def format_ap(ap: AP) -> str:
    """`SPACE[pstart:+pcount]@OFFSET{stride:count,...}:DTYPE` (HBM leaves out `[0:+1]`)."""
    dims = ",".join(f"{s}:{c}" for s, c in ap.dims)
    parts = "" if ap.space == "hbm" and (ap.pstart, ap.pcount) == (0, 1) else f"[{ap.pstart}:+{ap.pcount}]"
    return f"{ap.space}{parts}@{hex(ap.offset)}{{{dims}}}:{ap.dtype}"


def format_scalar(value) -> str:
    """An attribute value as assembly spells it (floats in the shortest text that reads back)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return float.__repr__(float(value))  # shortest text that reads back to the same float
    if isinstance(value, str):
        return value if IDENT_RE.match(value) else json.dumps(value)
    return repr(value)


def operand_order(ins: Instr) -> list[str]:
    """The instruction's operand names in the schema's order (unknown ones last, sorted)."""
    spec = OPCODES.get(ins.op)
    known = list(spec.required + spec.optional) if spec else []
    rest = [n for n in ins.operands if n not in known]
    return [n for n in known if n in ins.operands] + sorted(rest, key=_natural_key)


def _natural_key(name: str) -> tuple:
    """src2 before src10: numbered operands in numeric order."""
    m = re.fullmatch(r"(.*?)([0-9]+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def format_label(label: str) -> str:
    """A label bare when it is an identifier, else as a JSON string."""
    return label if LABEL_RE.match(label) else json.dumps(label)


def format_instr(ins: Instr) -> str:
    """`[label:] ENGINE OPCODE operand=AP ... attr=value ... [wait=..] [signal=..] [dbg=N]`."""
    body = format_instr_body(ins)
    return body if ins.label is None else f"{format_label(ins.label)}: {body}"


def format_instr_body(ins: Instr) -> str:
    """The instruction without its label."""
    parts = [f"{ins.engine:<4} {ins.op}"]
    parts += [f"{name}={format_ap(ins.operands[name])}" for name in operand_order(ins)]
    parts += [f"{name}={format_scalar(ins.attrs[name])}" for name in sorted(ins.attrs)]
    for key, sems in (("wait", ins.waits), ("signal", ins.signals)):
        if sems:
            parts.append(f"{key}=" + ",".join(f"s{s}{SEM_OP[key]}{v}" for s, v in sems))
    if ins.dbg != -1:
        parts.append(f"dbg={ins.dbg}")
    return " ".join(parts)
