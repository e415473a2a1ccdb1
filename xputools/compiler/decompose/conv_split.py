"""A Conv whose weights do not fit on chip even one output channel at a time (a 1-D kernel of tens of
thousands of taps, a 128x128 2-D kernel), split over its kernel taps into partial convolutions that do:

    y = sum over tap blocks B of Conv(Slice(Pad(x)), W[:, :, B])     (bias added by the first only)

The input is padded once (explicit Pad); each block of kernel rows (or, when one row is too long, of
taps within a row) reads the window of the padded input its taps reach, with the node's strides,
dilations and groups and no pads, so every partial has the node's output shape. Partials are added
in block order (a fixed order: deterministic).

Only a Conv the planner refuses (`support.plan_problem`) is rewritten: every conv that compiles as it
is stays untouched. The block size is the largest the same planner accepts, then evened out so the
blocks are about equal.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, Value
from ..kernels.lib.conv import auto_pad, conv_geometry, int_attrs
from .builder import Builder, Rewrite, dtype_of, shape_of

FLOAT = ("float32", "float16", "bfloat16")
SPLIT_MIN_OPSET = 11  # Pad and Slice take their bounds as inputs from here on


def _geometry(node: Node, g: Graph) -> tuple[list[int], list[int], list[int], list[int], list[int]] | str:
    """(kernel, strides, dilations, pads before, pads after) per spatial axis, in the node's own rank."""
    x_shape, w_shape = shape_of(g, node.input(0)), shape_of(g, node.input(1))
    sp = len(x_shape) - 2
    if auto_pad(node) not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        return f"unknown auto_pad {auto_pad(node)!r}"
    k, s, d, p = conv_geometry(node, x_shape, w_shape)
    if sp == 1:
        return k[1:], s[1:], d[1:], [p[1]], [p[3]]
    return k, s, d, p[:2], p[2:]


def _probe_graph(node: Node, g: Graph, x_shape, w_shape, attrs: dict) -> tuple[Graph, Node]:
    """A one-node graph holding a partial Conv of `node` (zero weights of `w_shape` when the node's
    are constant), for asking the planner whether it fits."""
    out = node.outputs[0]
    values = {"x": Value("x", tuple(x_shape), dtype_of(g, node.input(0))),
              out: Value(out, shape_of(g, out), dtype_of(g, out))}
    w = g.values[node.input(1)]
    values["w"] = Value("w", tuple(w_shape), w.dtype,
                        np.zeros(w_shape, w.dtype) if w.is_const else None)
    inputs = ["x", "w"]
    if node.input(2):
        b = g.values[node.input(2)]
        values["b"] = Value("b", b.shape, b.dtype, b.const)
        inputs.append("b")
    probe = Node(node.name, "Conv", inputs, [out], attrs)
    return Graph("probe", [n for n in ("x", "w") if not values[n].is_const], [out], [probe], values, g.opset), probe


def _partial_attrs(node: Node, kernel: list[int]) -> dict:
    sp = len(kernel)
    return {"strides": int_attrs(node, "strides", [1] * sp), "dilations": int_attrs(node, "dilations", [1] * sp),
            "group": int(node.attrs.get("group", 1)), "kernel_shape": list(kernel), "pads": [0] * (2 * sp)}


def _window(geo, out_sp, start: list[int], size: list[int]) -> list[tuple[int, int]]:
    """[begin, end) of the padded input that the taps start..start+size reach, per spatial axis."""
    _, s, d, _, _ = geo
    return [(a * di, a * di + (b - 1) * di + (o - 1) * si + 1) for a, b, si, di, o in zip(start, size, s, d, out_sp)]


def _fits(node: Node, g: Graph, geo, size: list[int]) -> bool:
    from ..support import plan_problem  # support imports this package

    x_shape = shape_of(g, node.input(0))
    out_sp = shape_of(g, node.outputs[0])[2:]
    spans = [e - b for b, e in _window(geo, out_sp, [0] * len(size), size)]
    w_shape = shape_of(g, node.input(1))[:2] + tuple(size)
    probe_g, probe = _probe_graph(node, g, x_shape[:2] + tuple(spans), w_shape, _partial_attrs(node, size))
    return plan_problem(probe, probe_g) is None


def tap_blocks(node: Node, g: Graph) -> list[int] | None:
    """The block size per kernel axis for which each partial conv fits (all axes but one whole, the
    split axis as large as fits, then evened out), or None when not even one tap fits."""
    geo = _geometry(node, g)
    kernel = list(geo[0])
    for axis in range(len(kernel)):  # outer axis first: whole kernel rows keep windows contiguous
        size = [1] * axis + kernel[axis:]

        def fits(n: int, axis=axis, size=size) -> bool:
            return _fits(node, g, geo, size[:axis] + [n] + size[axis + 1:])

        if not fits(1):
            continue
        lo, hi = 1, kernel[axis]  # fits(lo) holds; the whole axis does not (the node itself is refused)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        blocks = -(-kernel[axis] // lo)
        even = -(-kernel[axis] // blocks)
        size[axis] = even if even == lo or fits(even) else lo
        return size
    return None


def _problem(node: Node, g: Graph) -> str | None:
    from ..support import plan_problem

    x, w = node.input(0), node.input(1)
    if len(shape_of(g, x)) not in (3, 4) or dtype_of(g, x).name not in FLOAT:
        return "only a 1-D or 2-D float Conv is split over its taps"
    if isinstance(_geometry(node, g), str):
        return _geometry(node, g)
    if plan_problem(node, g) is None:
        return "the Conv fits on chip as it is"
    if g.opset.get("", 13) < SPLIT_MIN_OPSET:
        return f"splitting a Conv over its taps needs opset >= {SPLIT_MIN_OPSET}"
    if not g.is_const(w):
        return "a Conv with run-time weights is not split over its taps"
    if tap_blocks(node, g) is None:
        return "not even one kernel tap of this Conv fits on chip"
    return None


def _named(b: Builder, what: str) -> None:
    """Name the node just added `<node>/<what>` (Builder's default, `<node>/<Op>_`, repeats for every block)."""
    taken = {n.name for n in b.nodes[:-1]}
    name = b.g.unique_node_name(f"{b.node.name}/{what}")
    while name in taken:
        name += "_"
    b.nodes[-1].name = name


def _split(b: Builder, node: Node) -> None:
    g = b.g
    x, w, bias, y = node.input(0), node.input(1), node.input(2), node.outputs[0]
    geo = _geometry(node, g)
    kernel, _, _, before, after = geo
    x_shape, dt = shape_of(g, x), dtype_of(g, x)
    out_shape, out_dt = shape_of(g, y), dtype_of(g, y)
    sp = len(kernel)
    if any(before) or any(after):
        pads = np.array([0, 0, *before, 0, 0, *after], np.int64)
        padded_shape = x_shape[:2] + tuple(n + p + q for n, p, q in zip(x_shape[2:], before, after))
        x = b.op("Pad", [x, b.const("pads", pads)], padded_shape, dt, "padded", mode="constant")
    size = tap_blocks(node, g)
    grid = np.meshgrid(*[np.arange(0, k, n) for k, n in zip(kernel, size)], indexing="ij")
    starts = np.stack(grid, -1).reshape(-1, sp).tolist()
    weight = np.asarray(g.const(w))
    total = ""
    for i, start in enumerate(starts):
        block = [min(n, k - a) for a, n, k in zip(start, size, kernel)]
        window = _window(geo, out_shape[2:], start, block)
        tag = "_".join(map(str, start))
        bounds = [b.const(f"taps{tag}/{what}", np.array(v, np.int64)) for what, v in (
            ("starts", [lo for lo, _ in window]), ("ends", [hi for _, hi in window]),
            ("axes", list(range(2, 2 + sp))))]
        part_in = b.op("Slice", [x] + bounds, x_shape[:2] + tuple(hi - lo for lo, hi in window), dt,
                       f"taps{tag}/input")
        _named(b, f"taps{tag}/Slice")
        w_part = b.const(f"taps{tag}/weight", weight[(slice(None), slice(None)) + tuple(
            slice(a, a + n) for a, n in zip(start, block))])
        inputs = [part_in, w_part] + ([bias] if bias and i == 0 else [])  # the bias once
        last = i == len(starts) - 1
        part = b.op("Conv", inputs, out_shape, out_dt, f"taps{tag}", y if last and i == 0 else "",
                    **_partial_attrs(node, block))
        _named(b, f"taps{tag}/Conv")
        if i:
            total = b.op("Add", [total, part], out_shape, out_dt, f"sum{tag}", y if last else "")
            _named(b, f"sum{tag}")
        else:
            total = part


REWRITES: dict[str, Rewrite] = {"Conv": (_problem, _split)}
