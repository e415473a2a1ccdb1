"""What every rewrite in this package shares: the Builder that makes a node's replacement nodes and
values, and small helpers on shapes, dtypes, axes and constant inputs."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..graph import Graph, Node, Value

STORED_DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")
REDUCE_AXES_INPUT_OPSET = 18  # ReduceMax/ReduceMin take axes as an input from this opset on
INDEX = np.dtype(np.int64)


class Builder:
    """Nodes and values replacing one node: names derived from it, its origin kept."""

    def __init__(self, g: Graph, node: Node):
        self.g, self.node = g, node
        self.nodes: list[Node] = []

    def const(self, what: str, array) -> str:
        return self.g.add_const(f"{self.node.name}/{what}", np.asarray(array))

    def op(self, op_type: str, inputs: list[str], shape, dtype, what: str = "", out: str = "", **attrs) -> str:
        """Append `op_type(inputs)`; its output is `out` (an existing value) or a new value `<node>/<what>`."""
        if not out:
            out = self.g.unique_name(f"{self.node.name}/{what or op_type.lower()}")
            self.g.values[out] = Value(out, tuple(int(d) for d in shape), np.dtype(dtype))
        name = self.g.unique_node_name(f"{self.node.name}/{op_type}")
        while any(n.name == name for n in self.nodes):
            name += "_"
        self.nodes.append(Node(name, op_type, list(inputs), [out], attrs, origin=list(self.node.origin),
                               expanded_from=self.node.expanded_from or self.node.op_type))
        return out

    def reduce(self, op_type: str, x: str, axis: int, keepdims: bool, shape, dtype, what: str = "",
               out: str = "") -> str:
        """ReduceMax/ReduceMin/ReduceSum over one axis, spelled for the graph's opset."""
        axes_input = 13 if op_type == "ReduceSum" else REDUCE_AXES_INPUT_OPSET
        if self.g.opset.get("", 13) >= axes_input:
            axes = self.const("axes", np.array([axis], np.int64))
            return self.op(op_type, [x, axes], shape, dtype, what, out, keepdims=int(keepdims))
        return self.op(op_type, [x], shape, dtype, what, out, axes=[axis], keepdims=int(keepdims))


def shape_of(g: Graph, name: str) -> tuple[int, ...]:
    return tuple(g.values[name].shape)


def dtype_of(g: Graph, name: str) -> np.dtype:
    return np.dtype(g.values[name].dtype)


def norm_axis(value: int, rank: int) -> int | None:
    return value + rank if -rank <= value < 0 else (value if 0 <= value < rank else None)


def unstored(g: Graph, names: list[str]) -> str | None:
    for name in names:
        if name and np.dtype(g.values[name].dtype).name not in STORED_DTYPES:
            return f"dtype {np.dtype(g.values[name].dtype).name} of {name!r} is not stored on the device"
    return None


def scalar_input(g: Graph, node: Node, i: int, what: str) -> tuple[int | None, str | None]:
    """The constant integer input `i` (None if omitted), or the reason it cannot be used."""
    name = node.input(i)
    if not name:
        return None, None
    c = g.const(name)
    if c is None:
        return None, (f"{what} {name!r} is computed at run time; freeze it with --const-inputs to run "
                      f"{node.op_type} on the device")
    return int(np.asarray(c).reshape(-1)[0]), None

def wrap_negative(b: Builder, idx: str, dims, shape) -> str:
    """idx + dims where idx < 0 (ONNX counts negative indices from the end of each axis)."""
    g = b.g
    dt = dtype_of(g, idx)
    dims_c = b.const("dims", np.asarray(dims, dt))
    neg = b.op("Less", [idx, b.const("zero", np.zeros((), dt))], shape, np.bool_, "negative")
    moved = b.op("Add", [idx, dims_c], shape, dt, "from_end")
    return b.op("Where", [neg, moved, idx], shape, dt, "wrapped")

def position(b: Builder, shape: tuple[int, ...], axis: int) -> str:
    """A constant holding each element's position along `axis`, broadcastable to `shape`."""
    iota = np.arange(shape[axis], dtype=np.int64).reshape((shape[axis],) + (1,) * (len(shape) - axis - 1))
    return b.const("position", iota)

def lowest(dt: np.dtype, largest: bool):
    """The value no element beats when looking for the largest (or smallest) one."""
    if dt.kind == "f" or dt.name == "bfloat16":
        return -np.inf if largest else np.inf
    info = np.iinfo(dt) if dt.kind in "iu" else None
    return (info.min if largest else info.max) if info is not None else (0 if largest else 1)

def slice_axis(b: Builder, y: str, axis: int, start: int, end: int, what: str) -> str:
    """y[start:end] along `axis`."""
    shape = shape_of(b.g, y)
    bounds = [b.const(w, np.array([v], np.int64)) for w, v in (("starts", start), ("ends", end), ("axes", axis))]
    return b.op("Slice", [y] + bounds, shape[:axis] + (end - start,) + shape[axis + 1:], dtype_of(b.g, y), what)

def reduce_axes(node: Node, g: Graph) -> list[int] | str:
    rank = len(shape_of(g, node.input(0)))
    if node.input(1):
        c = g.const(node.input(1))
        if c is None:
            return "reduction axes computed at run time are not supported"
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    if any(norm_axis(a, rank) is None for a in axes):
        return "reduction axis out of range"
    return sorted({norm_axis(a, rank) for a in axes})

def always(node: Node, g: Graph) -> None:
    return None


Problem = Callable[[Node, Graph], "str | None"]  # why a node cannot be rewritten, None when it can
Rewrite = tuple[Problem, Callable[[Builder, Node], None]]
