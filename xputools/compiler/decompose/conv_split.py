"""A Conv or ConvTranspose whose weights do not fit on chip even one output channel at a time (a 1-D
kernel of tens of thousands of taps, a 128x128 2-D kernel), split over its kernel taps into partial
convolutions that do, summed in block order (a fixed order: deterministic):

    Conv:          y = sum over tap blocks B of Conv(Slice(Pad(x)), W[:, :, B])   (bias on the first only)
    ConvTranspose: y = sum over B of Pad(Slice(ConvTranspose(x, W[:, :, B])))    + bias

A Conv's input is padded once (explicit Pad); each block of kernel rows (or, when one row is too long,
of taps within a row) reads the window of the padded input its taps reach, with the node's strides,
dilations and groups and no pads, so every partial has the node's output shape. A ConvTranspose
partial (no pads, no output padding) covers the full output from its first tap's offset on: it is
cropped to the node's output (its pads) and zero-padded into place; the bias is added once at the end.

Only a node the planner refuses (`planning.plan_problem`) is rewritten: every conv that compiles as it
is stays untouched. The block size is the largest the same planner accepts, then evened out so the
blocks are about equal.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

import numpy as np

from ..graph import Graph, Node, Value
from ..kernels.lib.conv import auto_pad, conv_geometry, int_attrs
from ..planning import plan_problem
from .builder import Builder, Rewrite, dtype_of, shape_of

FLOAT = ("float32", "float16", "bfloat16")
SPLIT_MIN_OPSET = 11  # Pad and Slice take their bounds as inputs from here on
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
# The CompileOptions the planner is asked under (None: fp32 on the default arch). Set for one decompose
# call: the rewrite rules take (node, graph) only, like every other rule in this package.
_TARGET: ContextVar = ContextVar("conv_split_target", default=None)


@contextmanager
def planning_for(options) -> Iterator[None]:
    """Ask the conv planner under `options` inside the block. An int8 compile plans in fp32: its convs
    become int8 kernels only after this pass, and splitting what fp32 refuses is the safe side."""
    if options is not None and (options.precision == "int8" or options.calibration is not None):
        options = replace(options, precision="fp32", calibration=None)
    token = _TARGET.set(options)
    try:
        yield
    finally:
        _TARGET.reset(token)


def _plan_problem(node: Node, g: Graph) -> str | None:
    return plan_problem(node, g, _TARGET.get())


@dataclass
class Geometry:
    """Per spatial axis, in the node's own rank. `before`/`after`: a Conv's input padding; for a
    ConvTranspose `before` is how much of the full (unpadded) output its pads crop at the start."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    before: list[int]
    after: list[int]
    transposed: bool

    def window(self, out_sp, start: list[int], size: list[int]) -> list[tuple[int, int]]:
        """Conv: [begin, end) of the padded input that taps start..start+size reach, per axis."""
        return [(a * d, a * d + (b - 1) * d + (o - 1) * s + 1)
                for a, b, s, d, o in zip(start, size, self.strides, self.dilations, out_sp)]

    def full(self, in_sp, size: list[int]) -> list[int]:
        """ConvTranspose: the output length of a partial of `size` taps with no pads, per axis."""
        return [(n - 1) * s + (b - 1) * d + 1 for n, b, s, d in zip(in_sp, size, self.strides, self.dilations)]


def geometry(node: Node, g: Graph) -> Geometry | str:
    """The node's kernel, strides, dilations and pads, or why they are not understood."""
    auto = auto_pad(node)
    if auto not in AUTO_PADS:
        return f"unknown auto_pad {auto!r}"
    x_shape, w_shape = shape_of(g, node.input(0)), shape_of(g, node.input(1))
    sp = len(x_shape) - 2
    if node.op_type == "Conv":
        k, s, d, p = conv_geometry(node, x_shape, w_shape)
        if sp == 1:
            return Geometry(k[1:], s[1:], d[1:], [p[1]], [p[3]], False)
        return Geometry(k, s, d, p[:2], p[2:], False)
    k = list(w_shape[2:])
    s, d = int_attrs(node, "strides", [1] * sp), int_attrs(node, "dilations", [1] * sp)
    opad = int_attrs(node, "output_padding", [0] * sp)
    geo = Geometry(k, s, d, int_attrs(node, "pads", [0] * (2 * sp))[:sp], [0] * sp, True)
    if auto == "VALID":
        geo.before = [0] * sp
    elif "output_shape" in node.attrs or auto in ("SAME_UPPER", "SAME_LOWER"):  # as the kernel does
        out_sp = shape_of(g, node.outputs[0])[2:]
        totals = [f + p - o for f, p, o in zip(geo.full(x_shape[2:], k), opad, out_sp)]
        geo.before = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in totals]
    return geo


def _probe_graph(node: Node, g: Graph, x_shape, w_shape, out_shape, attrs: dict) -> tuple[Graph, Node]:
    """A one-node graph holding a partial of `node` (zero weights of `w_shape` when the node's are
    constant), for asking the planner whether it fits."""
    w = g.values[node.input(1)]
    values = {"x": Value("x", tuple(x_shape), dtype_of(g, node.input(0))),
              "y": Value("y", tuple(out_shape), dtype_of(g, node.outputs[0])),
              "w": Value("w", tuple(w_shape), w.dtype, np.zeros(w_shape, w.dtype) if w.is_const else None)}
    inputs = ["x", "w"]
    if node.input(2) and not node.op_type == "ConvTranspose":  # a ConvTranspose's bias is added after
        b = g.values[node.input(2)]
        values["b"] = Value("b", b.shape, b.dtype, b.const)
        inputs.append("b")
    probe = Node(node.name, node.op_type, inputs, ["y"], attrs)
    return Graph("probe", [n for n in ("x", "w") if not values[n].is_const], ["y"], [probe], values, g.opset), probe


def _partial_attrs(node: Node, kernel: list[int]) -> dict:
    sp = len(kernel)
    return {"strides": int_attrs(node, "strides", [1] * sp), "dilations": int_attrs(node, "dilations", [1] * sp),
            "group": int(node.attrs.get("group", 1)), "kernel_shape": list(kernel), "pads": [0] * (2 * sp)}


def _partial_shapes(node: Node, g: Graph, geo: Geometry, size: list[int]) -> tuple[tuple, tuple, tuple]:
    """(input, weight, output) shapes of a partial of `size` taps."""
    x_shape, out_shape = shape_of(g, node.input(0)), shape_of(g, node.outputs[0])
    w_shape = shape_of(g, node.input(1))[:2] + tuple(size)
    if geo.transposed:
        return x_shape, w_shape, out_shape[:2] + tuple(geo.full(x_shape[2:], size))
    spans = [e - b for b, e in geo.window(out_shape[2:], [0] * len(size), size)]
    return x_shape[:2] + tuple(spans), w_shape, out_shape


def _fits(node: Node, g: Graph, geo: Geometry, size: list[int]) -> bool:
    probe_g, probe = _probe_graph(node, g, *_partial_shapes(node, g, geo, size), _partial_attrs(node, size))
    return _plan_problem(probe, probe_g) is None


def tap_blocks(node: Node, g: Graph) -> list[int] | None:
    """The block size per kernel axis for which each partial fits (all axes but one whole, the split
    axis as large as fits, then evened out), or None when not even one tap fits."""
    geo = geometry(node, g)
    assert isinstance(geo, Geometry), geo
    kernel = list(geo.kernel)
    for axis in range(len(kernel)):  # outer axis first: whole kernel rows keep windows contiguous
        size = [1] * axis + kernel[axis:]

        def fits(n: int, axis=axis, size=size) -> bool:
            return _fits(node, g, geo, size[:axis] + [n] + size[axis + 1:])

        if not fits(1):
            continue
        lo, hi = 1, kernel[axis]  # fits(lo) holds; the whole axis is taken not to (the node is refused)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        blocks = -(-kernel[axis] // lo)
        even = -(-kernel[axis] // blocks)
        size[axis] = even if even == lo or fits(even) else lo
        return size
    return None


def _blocks(geo: Geometry, size: list[int]) -> list[tuple[list[int], list[int]]]:
    """(first tap, taps) per block, row-major."""
    grid = np.meshgrid(*[np.arange(0, k, n) for k, n in zip(geo.kernel, size)], indexing="ij")
    starts = np.stack(grid, -1).reshape(-1, len(size)).tolist()
    return [(a, [min(n, k - s) for s, n, k in zip(a, size, geo.kernel)]) for a in starts]


def _placement(geo: Geometry, in_sp, out_sp, start, block) -> list[tuple[int, int, int]] | None:
    """ConvTranspose: per axis (first element of the partial kept, output position it lands on, length),
    or None when the block's partial lies wholly in what the pads crop."""
    kept = []
    for a, d, before, full, o in zip(start, geo.dilations, geo.before, geo.full(in_sp, block), out_sp):
        at = a * d - before  # output position of the partial's first element
        lo, hi = max(0, at), min(o, at + full)
        if hi <= lo:
            return None
        kept.append((lo - at, lo, hi - lo))
    return kept


def _problem(node: Node, g: Graph) -> str | None:
    x, w = node.input(0), node.input(1)
    if len(shape_of(g, x)) not in (3, 4) or dtype_of(g, x).name not in FLOAT:
        return f"only a 1-D or 2-D float {node.op_type} is split over its taps"
    geo = geometry(node, g)
    if isinstance(geo, str):
        return geo
    if _plan_problem(node, g) is None:
        return f"the {node.op_type} fits on chip as it is"
    if g.opset.get("", 13) < SPLIT_MIN_OPSET:
        return f"splitting a {node.op_type} over its taps needs opset >= {SPLIT_MIN_OPSET}"
    if not g.is_const(w):
        return f"a {node.op_type} with run-time weights is not split over its taps"
    size = tap_blocks(node, g)
    if size is None:
        return f"not even one kernel tap of this {node.op_type} fits on chip"
    if geo.transposed:
        in_sp, out_sp = shape_of(g, x)[2:], shape_of(g, node.outputs[0])[2:]
        if all(_placement(geo, in_sp, out_sp, a, n) is None for a, n in _blocks(geo, size)):
            return "the pads crop every tap's contribution (the output is the bias alone)"
    return None


def _named(b: Builder, what: str) -> None:
    """Name the node just added `<node>/<what>` (Builder's default, `<node>/<Op>_`, repeats for every block)."""
    taken = {n.name for n in b.nodes[:-1]}
    name = b.g.unique_node_name(f"{b.node.name}/{what}")
    while name in taken:
        name += "_"
    b.nodes[-1].name = name


def _slice(b: Builder, x: str, bounds: list[tuple[int, int]], shape, dt, tag: str) -> str:
    """x[:, :, lo:hi per spatial axis]."""
    names = [b.const(f"taps{tag}/{what}", np.array(v, np.int64)) for what, v in (
        ("starts", [lo for lo, _ in bounds]), ("ends", [hi for _, hi in bounds]),
        ("axes", list(range(2, 2 + len(bounds)))))]
    out = b.op("Slice", [x] + names, tuple(shape[:2]) + tuple(hi - lo for lo, hi in bounds), dt, f"taps{tag}/window")
    _named(b, f"taps{tag}/Slice")
    return out


def _sum(b: Builder, parts: list[str], shape, dt, out: str = "") -> str:
    """parts[0] + parts[1] + ... in that order, into `out` (or a new value)."""
    total = parts[0]
    for i, part in enumerate(parts[1:], 1):
        total = b.op("Add", [total, part], shape, dt, f"sum{i}", out if i == len(parts) - 1 else "")
        _named(b, f"sum{i}")
    return total


def _weight_block(b: Builder, weight: np.ndarray, start, block, tag: str) -> str:
    taps = tuple(slice(a, a + n) for a, n in zip(start, block))
    return b.const(f"taps{tag}/weight", weight[(slice(None), slice(None)) + taps])


def _split(b: Builder, node: Node) -> None:
    g = b.g
    x, bias, y = node.input(0), node.input(2), node.outputs[0]
    geo = geometry(node, g)
    assert isinstance(geo, Geometry)
    x_shape, dt = shape_of(g, x), dtype_of(g, x)
    out_shape, out_dt = shape_of(g, y), dtype_of(g, y)
    weight = np.asarray(g.const(node.input(1)))
    if not geo.transposed and (any(geo.before) or any(geo.after)):
        pads = np.array([0, 0, *geo.before, 0, 0, *geo.after], np.int64)
        padded = x_shape[:2] + tuple(n + p + q for n, p, q in zip(x_shape[2:], geo.before, geo.after))
        x = b.op("Pad", [x, b.const("pads", pads)], padded, dt, "padded", mode="constant")
        _named(b, "Pad")
    blocks = _blocks(geo, tap_blocks(node, g))
    emit = _transposed_partial if geo.transposed else _partial
    parts = [p for p in (emit(b, node, geo, x, weight, start, block, i == 0, len(blocks) == 1)
                         for i, (start, block) in enumerate(blocks)) if p]
    if not geo.transposed:
        if len(parts) > 1:
            _sum(b, parts, out_shape, out_dt, y)
    elif bias:
        total = _sum(b, parts, out_shape, out_dt) if len(parts) > 1 else parts[0]
        b.op("Add", [total, _channel_bias(b, bias, len(out_shape))], out_shape, out_dt, out=y)
        _named(b, "bias")
    elif len(parts) > 1:
        _sum(b, parts, out_shape, out_dt, y)
    else:
        b.op("Identity", [parts[0]], out_shape, out_dt, out=y)


def _partial(b: Builder, node: Node, geo: Geometry, x: str, weight: np.ndarray, start, block, first: bool,
             only: bool) -> str:
    """One Conv partial: the window of the padded input its taps read, convolved with their weights."""
    g, tag = b.g, "_".join(map(str, start))
    out_shape = shape_of(g, node.outputs[0])
    window = _slice(b, x, geo.window(out_shape[2:], start, block), shape_of(g, x), dtype_of(g, x), tag)
    inputs = [window, _weight_block(b, weight, start, block, tag)]
    if node.input(2) and first:  # the bias once
        inputs.append(node.input(2))
    part = b.op("Conv", inputs, out_shape, dtype_of(g, node.outputs[0]), f"taps{tag}",
                node.outputs[0] if only else "", **_partial_attrs(node, block))
    _named(b, f"taps{tag}/Conv")
    return part


def _transposed_partial(b: Builder, node: Node, geo: Geometry, x: str, weight: np.ndarray, start, block,
                        first: bool, only: bool) -> str:  # `first`, `only`: the Conv partial's signature
    """One ConvTranspose partial, cropped to the output and zero-padded into place ("" when the pads
    crop it all)."""
    g, tag = b.g, "_".join(map(str, start))
    x_shape, out_shape, dt = shape_of(g, x), shape_of(g, node.outputs[0]), dtype_of(g, node.outputs[0])
    kept = _placement(geo, x_shape[2:], out_shape[2:], start, block)
    if kept is None:
        return ""
    full = out_shape[:2] + tuple(geo.full(x_shape[2:], block))
    w_part = _weight_block(b, weight, start, block, tag)
    part = b.op("ConvTranspose", [x, w_part], full, dt, f"taps{tag}", **_partial_attrs(node, block))
    _named(b, f"taps{tag}/ConvTranspose")
    if any(k0 or n != f for (k0, _, n), f in zip(kept, full[2:])):
        part = _slice(b, part, [(k0, k0 + n) for k0, _, n in kept], full, dt, tag)
    pads = [(lo, o - lo - n) for (_, lo, n), o in zip(kept, out_shape[2:])]
    if any(p or q for p, q in pads):
        width = np.array([0, 0, *[p for p, _ in pads], 0, 0, *[q for _, q in pads]], np.int64)
        part = b.op("Pad", [part, b.const(f"taps{tag}/pads", width)], out_shape, dt, f"taps{tag}/placed",
                    mode="constant")
        _named(b, f"taps{tag}/Pad")
    return part


def _channel_bias(b: Builder, bias: str, rank: int) -> str:
    """The bias [C] as [C, 1, ...] so it broadcasts over an output [N, C, ...]."""
    shape = (shape_of(b.g, bias)[0],) + (1,) * (rank - 2)
    c = b.g.const(bias)
    if c is not None:
        return b.const("bias", np.asarray(c).reshape(shape))
    out = b.op("Reshape", [bias, b.const("bias_shape", np.array(shape, np.int64))], shape, dtype_of(b.g, bias),
               "bias")
    _named(b, "bias_Reshape")
    return out


REWRITES: dict[str, Rewrite] = {"Conv": (_problem, _split), "ConvTranspose": (_problem, _split)}
