"""The compiled-program model: instructions, HBM tensors, constants and debug info.

`Program` is plain data. Its text form is the assembly (`assembly.py`), its binary form the `.xpu`
container (`container.py`). Both go through `Program.validate()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arch import Arch
from .dtypes import np_dtype
from .isa import AP, AP_LIMIT, ENGINES, Instr, IsaError, validate_ap, validate_instr

TENSOR_KINDS = ("input", "output", "const", "scratch")


@dataclass
class Tensor:
    """A named tensor in HBM, stored row-major (C order) at `offset`."""

    name: str
    kind: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    data: bytes | None = None  # constants only

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * np_dtype(self.dtype).itemsize

    def array(self) -> np.ndarray:
        """A constant's value."""
        assert self.data is not None
        return np.frombuffer(self.data, dtype=np_dtype(self.dtype)).reshape(self.shape)


@dataclass
class Origin:
    """Where instructions come from: an ONNX node (name, op type) or a hand-written label."""

    name: str
    op_type: str = ""


@dataclass
class TapPiece:
    """Part of a tensor's value: the device elements `ap` hold the logical (row-major flat)
    elements `offset + Σ iₖ·stridesₖ` of the tensor, for i over ap.shape."""

    ap: AP
    offset: int
    strides: tuple[int, ...]


@dataclass
class Tap:
    """Where the value of a named (e.g. ONNX) tensor can be read, and when.

    The value is valid right after instruction `after_index` of engine `after_engine` completes.
    `dtype` / `shape` are the logical tensor's. A tap with no pieces and `fused_into` set names a
    tensor that fusion removed.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    pieces: list[TapPiece] = field(default_factory=list)
    after_engine: str = ""
    after_index: int = -1
    fused_into: str = ""


@dataclass
class HostOp:
    """Work the device cannot do, run on the host by `host_call op=N`: reads the HBM tensors
    `inputs`, writes `outputs`. `payload` is opaque to the device (the runtime's description of
    the computation, e.g. a serialized one-node ONNX model)."""

    name: str
    op_type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    payload: bytes = b""


@dataclass
class Program:
    """A compiled program and the full description of the arch it was built for, so it runs
    anywhere without the preset or TOML file it was compiled against."""

    arch: Arch
    instrs: list[Instr] = field(default_factory=list)  # program order; each engine's stream is its subsequence
    tensors: list[Tensor] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    taps: list[Tap] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    host_ops: list[HostOp] = field(default_factory=list)

    @property
    def arch_name(self) -> str:
        """The name of the arch the program was built for."""
        return self.arch.name

    @property
    def arch_hash(self) -> str:
        """The hash of the arch the program was built for (its identity)."""
        return self.arch.hash

    def arch_mismatch(self, arch: Arch) -> str | None:
        """Why this program cannot run on `arch`, or None when it was built for exactly that arch."""
        if self.arch_name != arch.name:
            return (f"built for arch {self.arch_name!r} (hash {self.arch_hash}), not {arch.name!r}: it needs "
                    f"arch {self.arch_name}; run it there or rebuild it for {arch.name}")
        if self.arch_hash != arch.hash:
            return (f"built for a different version of arch {arch.name!r} (hash {self.arch_hash}, this one is "
                    f"{arch.hash}): rebuild it for {arch.name}")
        return None

    def streams(self) -> dict[str, list[Instr]]:
        """Each engine's instruction stream, in program order."""
        out: dict[str, list[Instr]] = {e: [] for e in ENGINES}
        for ins in self.instrs:
            out[ins.engine].append(ins)
        return out

    def tensor(self, name: str) -> Tensor:
        """The HBM tensor called `name` (KeyError if none)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def inputs(self) -> list[Tensor]:
        """The tensors a run must be fed."""
        return [t for t in self.tensors if t.kind == "input"]

    def outputs(self) -> list[Tensor]:
        """The tensors a run produces."""
        return [t for t in self.tensors if t.kind == "output"]

    def hbm_extent(self) -> int:
        """Bytes of HBM the program's tensors and access patterns reach."""
        end = 0
        for t in self.tensors:
            end = max(end, t.offset + t.nbytes)
        for ins in self.instrs:
            for ap in ins.operands.values():
                if ap.space == "hbm":
                    end = max(end, ap.byte_extent()[1])
        return end

    def onchip_extents(self) -> tuple[int, int]:
        """Bytes per partition of SBUF and of PSUM that the program's access patterns reach."""
        ends = {"sbuf": 0, "psum": 0}
        for ins in self.instrs:
            for ap in ins.operands.values():
                if ap.space != "hbm":
                    ends[ap.space] = max(ends[ap.space], ap.byte_extent()[1])
        for tap in self.taps:
            for piece in tap.pieces:
                if piece.ap.space != "hbm":
                    ends[piece.ap.space] = max(ends[piece.ap.space], piece.ap.byte_extent()[1])
        return ends["sbuf"], ends["psum"]

    def validate(self) -> None:
        """Structural checks (raises IsaError): schema of every instruction, tensor sanity,
        debug-info references in range."""
        names = set()
        for t in self.tensors:
            _check_tensor(t)
            if t.name in names:
                raise IsaError(f"tensor {t.name}: declared twice")
            names.add(t.name)
        _check_disjoint(self.tensors)
        for i, ins in enumerate(self.instrs):
            try:
                validate_instr(ins)
            except IsaError as exc:
                raise IsaError(f"instruction {i}: {exc}") from None
            if ins.dbg < -1 or ins.dbg >= len(self.origins):
                raise IsaError(f"instruction {i}: debug index {ins.dbg} out of range")
        for op in self.host_ops:
            for name in list(op.inputs) + list(op.outputs):
                if name and name not in names:
                    raise IsaError(f"host op {op.name}: tensor {name} is not declared")
        for i, ins in enumerate(self.instrs):
            if ins.op == "host_call" and not 0 <= ins.attrs.get("op", 0) < len(self.host_ops):
                raise IsaError(f"instruction {i}: host_call op={ins.attrs.get('op', 0)} names no host op")
        counts = {e: 0 for e in ENGINES}
        for ins in self.instrs:
            counts[ins.engine] += 1
        for tap in self.taps:
            _check_tap(tap)
            if tap.pieces and not (0 <= tap.after_index < counts.get(tap.after_engine, 0)):
                raise IsaError(f"tap {tap.name}: after {tap.after_engine}:{tap.after_index} "
                               "names no instruction")

    def check_fits(self, arch) -> None:
        """Raise IsaError unless every tensor, instruction operand and tap lies inside `arch`'s
        memories and every semaphore exists (`validate` checks what holds on any arch)."""
        hbm = arch.hbm_bytes
        for t in self.tensors:
            if t.offset + t.nbytes > hbm:
                raise IsaError(f"tensor {t.name}: bytes {t.offset}..{t.offset + t.nbytes} lie outside the "
                               f"{hbm}-byte HBM of arch {arch.name}")
        for i, ins in enumerate(self.instrs):
            for name, ap in ins.operands.items():
                why = ap_outside(ap, arch)
                if why:
                    raise IsaError(f"instruction {i} ({ins.engine} {ins.op}) {name}: {why}")
            for sem, _ in tuple(ins.waits) + tuple(ins.signals):
                if sem >= arch.semaphores:
                    raise IsaError(f"instruction {i} ({ins.engine} {ins.op}): semaphore s{sem} does not "
                                   f"exist (arch {arch.name} has {arch.semaphores})")
        for tap in self.taps:
            for piece in tap.pieces:
                why = ap_outside(piece.ap, arch)
                if why:
                    raise IsaError(f"tap {tap.name}: {why}")


def ap_outside(ap: AP, arch) -> str | None:
    """Why `ap` reaches outside `arch`'s memories, or None."""
    first, end = ap.byte_extent()
    if ap.space == "hbm":
        return f"{ap} reaches byte {end - 1} of a {arch.hbm_bytes}-byte HBM" if end > arch.hbm_bytes else None
    parts = arch.raw[ap.space]["partitions"]
    row = arch.raw[ap.space]["bytes_per_partition"]
    if ap.pstart + ap.pcount > parts:
        return f"{ap} uses partitions {ap.pstart}..{ap.pstart + ap.pcount - 1} of {parts}"
    if end > row:
        return f"{ap} reaches byte {end - 1} of a {row}-byte {ap.space} partition"
    return None


def _check_tensor(t: Tensor) -> None:
    if t.kind not in TENSOR_KINDS:
        raise IsaError(f"tensor {t.name}: unknown kind {t.kind!r}")
    try:
        np_dtype(t.dtype)
    except ValueError as exc:
        raise IsaError(f"tensor {t.name}: {exc}") from None
    if not _is_int(t.offset) or t.offset < 0 or any(not _is_int(d) or d < 0 for d in t.shape):
        raise IsaError(f"tensor {t.name}: bad offset or shape")
    if t.offset >= AP_LIMIT or t.nbytes >= AP_LIMIT:
        raise IsaError(f"tensor {t.name}: offset {t.offset} and size {t.nbytes} bytes must be below 2^40")
    if t.kind == "const":
        if t.data is None or len(t.data) != t.nbytes:
            raise IsaError(f"constant {t.name}: data has {0 if t.data is None else len(t.data)} "
                           f"bytes, shape/dtype need {t.nbytes}")
    elif t.data is not None:
        raise IsaError(f"tensor {t.name}: only constants carry data")


def _check_disjoint(tensors: list[Tensor]) -> None:
    """Two tensors sharing HBM bytes would silently corrupt each other (an input overwritten by a
    scratch value, an output read back as a constant)."""
    placed = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, end, name), (start, _, other) in zip(placed, placed[1:]):
        if start < end:
            raise IsaError(f"tensors {name} and {other} overlap in HBM (byte {start} is in both)")


def _check_tap(tap: Tap) -> None:
    """A tap's pieces must name elements of its own tensor: logical indices in range."""
    try:
        np_dtype(tap.dtype)
    except ValueError as exc:
        raise IsaError(f"tap {tap.name}: {exc}") from None
    if any(not _is_int(d) or d < 0 for d in tap.shape):
        raise IsaError(f"tap {tap.name}: bad shape {tap.shape}")
    size = 1
    for d in tap.shape:
        size *= d
    for j, piece in enumerate(tap.pieces):
        where = f"tap {tap.name} piece {j}"
        validate_ap(piece.ap, where)
        shape = piece.ap.shape
        if len(piece.strides) != len(shape) or not all(_is_int(s) for s in piece.strides) \
                or not _is_int(piece.offset):
            raise IsaError(f"{where}: needs an integer offset and one stride per axis of {shape}")
        low = piece.offset + sum(min(0, (n - 1) * s) for n, s in zip(shape, piece.strides))
        high = piece.offset + sum(max(0, (n - 1) * s) for n, s in zip(shape, piece.strides))
        if low < 0 or high >= size or piece.ap.num_elements > size:
            raise IsaError(f"{where}: names elements {low}..{high} ({piece.ap.num_elements} in all) of a "
                           f"tensor of {size}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
