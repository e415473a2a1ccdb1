"""What a kernel sees while lowering one node: the graph, where each value lives in HBM, the
precision to compute in, and the emitter."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_model.arch import Arch, load_arch
from device_model.dtypes import dtype_name, np_dtype
from device_model.isa import AP
from device_model.program import Tensor

from .emitter import Emitter
from .errors import CompileError
from .precision import DTYPE_ALIASES, PRECISIONS, node_compute_dtype


@dataclass
class CompileOptions:
    """Everything a compile depends on. `arch` (an Arch, a preset name or a TOML path; None: the
    default preset) is the one place the target arch is given; the program embeds it. Loading a
    compiled program with options whose `arch` is set checks that the program is for that arch."""

    precision: str = "fp32"
    keep: list[tuple[str, str]] = field(default_factory=list)  # (node name or glob, precision)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    const_inputs: dict[str, np.ndarray] = field(default_factory=dict)  # inputs frozen into constants
    calibration: dict[str, np.ndarray] | None = None
    calibration_method: str = "minmax"  # or "percentile"
    arch: Arch | str | None = None

    def __post_init__(self):
        if self.arch is not None:
            self.arch = load_arch(self.arch)
        if self.precision not in PRECISIONS:
            raise CompileError(f"unknown precision {self.precision!r} (choose {', '.join(PRECISIONS)})")
        for pattern, dt in self.keep:
            if dt not in DTYPE_ALIASES:
                raise CompileError(f"--keep {pattern}={dt}: unknown precision "
                                   f"(choose {', '.join(sorted(set(DTYPE_ALIASES)))})")

    def compute_dtype(self, node) -> str:
        """The device dtype `node` computes in under these options (`precision.node_compute_dtype`)."""
        return node_compute_dtype(node, self.precision, self.keep)


@dataclass
class DeviceValue:
    """A graph value stored row-major in HBM."""

    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str  # device dtype name

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes in its device dtype."""
        return self.size * np_dtype(self.dtype).itemsize

    def flat(self, dtype: str | None = None) -> AP:
        """The whole value as a 1-D access pattern."""
        return AP("hbm", self.offset, ((1, self.size),), dtype or self.dtype)

    def strides(self) -> tuple[int, ...]:
        """Row-major element strides."""
        out, acc = [], 1
        for d in reversed(self.shape):
            out.append(acc)
            acc *= d
        return tuple(reversed(out))


def storage_dtype(np_dt) -> str:
    """How a graph value of this numpy dtype is stored in HBM."""
    try:
        return dtype_name(np.dtype(np_dt))
    except ValueError as exc:
        raise CompileError(f"tensors of dtype {np.dtype(np_dt)} cannot be stored on the device") from exc


class LoweringContext:
    """What a kernel sees while lowering a node: the graph, where every value lives in HBM, the
    options (precision, arch) and the emitter it appends instructions to."""

    def __init__(self, graph, options: CompileOptions, emitter: Emitter):
        self.graph = graph
        self.options = options
        self.em = emitter
        self.arch = emitter.arch
        self.values: dict[str, DeviceValue] = {}
        self.node = None

    # ---- precision ------------------------------------------------------------------------
    def compute_dtype(self, node=None) -> str:
        """Device dtype for the matmul/conv inputs of `node` (its --keep override, else the
        global precision)."""
        return self.options.compute_dtype(node or self.node)

    def act_mode(self, node=None) -> str:
        """fp32 evaluates activation functions exactly; lower precisions use the device's tables."""
        return "exact" if self.compute_dtype(node) == "f32" else "table"

    # ---- values ---------------------------------------------------------------------------
    def value(self, name: str) -> DeviceValue:
        """Where a graph value lives; constants are placed in HBM on first use."""
        if name in self.values:
            return self.values[name]
        v = self.graph.values[name]
        if v.const is None:
            raise CompileError(f"value {name} is used before it is computed")
        return self.place_const(name, v.const)

    def const(self, name: str) -> np.ndarray | None:
        """The constant data of graph value `name`, or None."""
        v = self.graph.values.get(name)
        return None if v is None else v.const

    def place_const(self, name: str, array: np.ndarray) -> DeviceValue:
        """Put `array` in HBM as a program constant named after `name`."""
        arr = np.array(array, order="C")  # not ascontiguousarray: it turns a 0-d constant into shape (1,)
        dt = storage_dtype(arr.dtype)
        arr = arr.astype(np_dtype(dt)) if arr.dtype != np_dtype(dt) else arr
        dv = self._alloc(name, tuple(arr.shape), dt)
        # a graph output that folded to a constant is declared as an output later: leave it the name
        reserved = {v.name for v in self.graph.outputs}
        self.em.hbm.declare(Tensor(free_tensor_name(name, self.em, reserved), "const", dv.offset, dv.shape, dt,
                                   arr.tobytes()))
        return dv

    def new_const(self, hint: str, array: np.ndarray) -> DeviceValue:
        """A constant the kernel derives (e.g. folded weights), placed in HBM."""
        name = f"{self.node.name if self.node else 'const'}/{hint}"
        while name in self.values:
            name += "'"
        return self.place_const(name, array)

    def output(self, name: str, dtype: str | None = None) -> DeviceValue:
        """Allocate HBM for a node output (shape from the graph)."""
        v = self.graph.values[name]
        return self._alloc(name, tuple(v.shape), dtype or storage_dtype(v.dtype))

    def scratch(self, name: str, shape, dtype: str) -> DeviceValue:
        """HBM scratch private to a kernel."""
        key = f"{self.node.name if self.node else ''}/{name}"
        while key in self.values:
            key += "'"
        return self._alloc(key, tuple(shape), dtype)

    def alias(self, name: str, source: str, shape=None) -> DeviceValue:
        """`name` is `source`'s bytes seen with another shape (Reshape, Flatten, Squeeze, ...)."""
        src = self.value(source)
        shape = tuple(self.graph.values[name].shape if shape is None else shape)
        dv = DeviceValue(name, src.offset, shape, src.dtype)
        if dv.size != src.size:
            raise CompileError(f"{name}: cannot alias {source} ({src.size} elements) as {shape}")
        self.values[name] = dv
        return dv

    def _alloc(self, name: str, shape: tuple[int, ...], dtype: str) -> DeviceValue:
        size = int(np.prod(shape)) if shape else 1
        offset = self.em.hbm.alloc(size * np_dtype(dtype).itemsize)
        dv = DeviceValue(name, offset, shape, dtype)
        self.values[name] = dv
        return dv


def free_tensor_name(name: str, em: Emitter, reserved: set[str] | frozenset[str] = frozenset()) -> str:
    """`name`, primed until no declared tensor (and no `reserved` name) has it."""
    taken = {t.name for t in em.hbm.tensors} | set(reserved)
    out = name
    while out in taken:
        out += "'"
    return out
