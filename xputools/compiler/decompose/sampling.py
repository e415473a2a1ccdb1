"""GridSample (nearest and linear) as coordinate arithmetic and one channel-row Gather per corner."""
from __future__ import annotations

import numpy as np
import onnx

from ..graph import Graph, Node
from .builder import INDEX, Builder, Rewrite, dtype_of, shape_of

# ---- GridSample --------------------------------------------------------------------------------------
GRID_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest"}
GRID_PADDING = ("zeros", "border", "reflection")


def _grid_problem(node: Node, g: Graph) -> str | None:
    mode = node.attrs.get("mode", "linear" if g.opset.get("", 16) >= 20 else "bilinear")
    if mode not in GRID_MODES:
        return f"GridSample mode {mode!r} is not supported on the device (nearest, linear)"
    if node.attrs.get("padding_mode", "zeros") not in GRID_PADDING:
        return f"GridSample padding_mode {node.attrs.get('padding_mode')!r} is not supported"
    xs, gs = shape_of(g, node.input(0)), shape_of(g, node.input(1))
    if len(xs) < 3 or len(gs) != len(xs) or gs[-1] != len(xs) - 2 or gs[0] != xs[0]:
        return "GridSample: grid does not match the input"
    dt = dtype_of(g, node.input(0))
    if dt.name != "float32" or dtype_of(g, node.input(1)).name != "float32":
        return "GridSample on the device is float32 only"
    return None


class _Coords:
    """Float32 coordinate arithmetic on one grid component, spelled in the reference's operation order."""

    def __init__(self, b: Builder, shape: tuple[int, ...], tag: str):
        self.b, self.shape, self.tag = b, shape, tag

    def c(self, value: float) -> str:
        return self.b.const(f"{self.tag}_c", np.array(value, np.float32))

    def op(self, op_type: str, a: str, other, what: str, dtype=np.float32) -> str:
        other = self.c(other) if isinstance(other, (int, float)) else other
        return self.b.op(op_type, [a, other], self.shape, dtype, f"{self.tag}_{what}")

    def unary(self, op_type: str, a: str, what: str, dtype=np.float32) -> str:
        return self.b.op(op_type, [a], self.shape, dtype, f"{self.tag}_{what}")

    def outside(self, x: str, lo: float, hi: float) -> str:
        below, above = self.op("Less", x, lo, "below", np.bool_), self.op("Greater", x, hi, "above", np.bool_)
        return self.b.op("Or", [below, above], self.shape, np.bool_, f"{self.tag}_outside")

    def clamp(self, x: str, lo: float, hi: float) -> str:
        return self.op("Min", self.op("Max", x, lo, "at_least"), hi, "clamped")

    def reflect(self, x: str, lo: float, hi: float) -> str:
        """Fold x back into [lo, hi] by reflecting at the borders (the reference's _gs_reflect)."""
        below = self.op("Less", x, lo, "reflect_below", np.bool_)
        dist = self.b.op("Where", [below, self.op("Sub", self.c(lo), x, "under"), self.op("Sub", x, hi, "over")],
                         self.shape, np.float32, f"{self.tag}_distance")
        span = hi - lo
        flips = self.unary("Floor", self.op("Div", dist, span, "spans"), "flips")
        rest = self.op("Sub", dist, self.op("Mul", flips, span, "folded"), "rest")
        half = self.unary("Floor", self.op("Div", flips, 2.0, "half_flips"), "whole_pairs")
        even = self.op("Equal", self.op("Sub", flips, self.op("Mul", half, 2.0, "paired"), "parity"), 0.0, "even",
                       np.bool_)
        from_lo = self.b.op("Equal", [below, even], self.shape, np.bool_, f"{self.tag}_from_low")
        return self.b.op("Where", [from_lo, self.op("Add", self.c(lo), rest, "low_side"),
                                   self.op("Sub", self.c(hi), rest, "high_side")], self.shape, np.float32,
                         f"{self.tag}_reflected")

    def pad(self, x: str, mode: str, lo: float, hi: float, size: int) -> str:
        """The reference's coordinate fix-up: only a coordinate outside [lo, hi] moves."""
        if mode == "zeros":
            return x
        moved = self.clamp(x, 0.0, float(size - 1)) if mode == "border" else self.reflect(x, lo, hi)
        return self.b.op("Where", [self.outside(x, lo, hi), moved, x], self.shape, np.float32, f"{self.tag}_padded")


def _grid_sample(b: Builder, node: Node) -> None:
    """Per spatial dim: the grid coordinate in pixels, its padding fix-up, the corner(s) and weights;
    then each corner a Gather of channel rows from the input (channels last), combined dim by dim
    from the last, as the reference nests its 1-D interpolations."""
    g = b.g
    x, grid, out = node.input(0), node.input(1), node.outputs[0]
    xs, gs = shape_of(g, x), shape_of(g, grid)
    batch, channels, spatial = xs[0], xs[1], xs[2:]
    k, o = len(spatial), gs[1:-1]
    mode = GRID_MODES[node.attrs.get("mode", "linear" if g.opset.get("", 16) >= 20 else "bilinear")]
    padding, align = node.attrs.get("padding_mode", "zeros"), bool(node.attrs.get("align_corners", 0))
    cshape = (batch,) + o
    pixels = int(np.prod(spatial))
    rows = b.op("Transpose", [x], (batch,) + spatial + (channels,), np.float32, "channels_last",
                perm=[0] + list(range(2, 2 + k)) + [1])
    rows = b.op("Reshape", [rows, b.const("rows", np.array([batch * pixels, channels], np.int64))],
                (batch * pixels, channels), np.float32, "pixel_rows")
    row_base = b.const("batch_rows", (np.arange(batch, dtype=np.int64) * pixels).reshape((batch,) + (1,) * len(o)))
    corners: list[list[tuple[str, str, str]]] = []  # per dim: (index, weight, valid) of each corner
    for i, size in enumerate(spatial):
        cc = _Coords(b, cshape, f"d{i}")
        comp = b.op("Gather", [grid, b.const(f"d{i}_component", np.array(k - 1 - i, np.int64))], cshape, np.float32,
                    f"d{i}_grid", axis=-1)
        if align:
            pos = cc.op("Mul", cc.op("Div", cc.op("Add", comp, 1.0, "shifted"), 2.0, "unit"), float(size - 1), "pos")
        else:
            pos = cc.op("Div", cc.op("Sub", cc.op("Mul", cc.op("Add", comp, 1.0, "shifted"), float(size), "scaled"),
                                     1.0, "centred"), 2.0, "pos")
        if mode == "nearest":
            pos = cc.unary("Round", pos, "nearest")
        lo, hi = (0.0, float(size - 1)) if align else (-0.5, size - 0.5)
        pos = cc.pad(pos, padding, lo, hi, size)
        if mode == "nearest":
            starts, weights = [pos], [""]
        else:
            first = cc.unary("Floor", pos, "floor")
            w1 = cc.op("Sub", pos, first, "w1")
            starts, weights = [first, cc.op("Add", first, 1.0, "next")], [cc.op("Sub", cc.c(1.0), w1, "w0"), w1]
        dim = []
        for j, (start, weight) in enumerate(zip(starts, weights)):
            if padding == "reflection" and mode != "nearest":
                start = cc.pad(start, padding, lo, hi, size)
            valid = ""
            if padding == "zeros":
                valid = b.op("And", [cc.op("GreaterOrEqual", start, 0.0, f"from0_{j}", np.bool_),
                                     cc.op("LessOrEqual", start, float(size - 1), f"to_end_{j}", np.bool_)],
                             cshape, np.bool_, f"d{i}_valid{j}")
            start = cc.clamp(start, 0.0, float(size - 1))  # a zeros-padded corner reads any row, then 0
            index = b.op("Cast", [start], cshape, INDEX, f"d{i}_index{j}", to=onnx.TensorProto.INT64)
            dim.append((index, weight, valid))
        corners.append(dim)
    strides = [int(np.prod(spatial[i + 1:], dtype=np.int64)) for i in range(k)]
    values: dict[tuple[int, ...], str] = {}
    vshape = cshape + (channels,)
    for combo in np.ndindex(*(len(d) for d in corners)):
        tag = "".join(map(str, combo))
        row = row_base
        valid = ""
        for i, j in enumerate(combo):
            index, _, ok = corners[i][j]
            term = b.op("Mul", [index, b.const("stride", np.array(strides[i], np.int64))], cshape, INDEX,
                        f"c{tag}_term{i}") if strides[i] != 1 else index
            row = b.op("Add", [row, term], cshape, INDEX, f"c{tag}_row{i}")
            if ok:
                valid = b.op("And", [valid, ok], cshape, np.bool_, f"c{tag}_valid{i}") if valid else ok
        v = b.op("Gather", [rows, row], vshape, np.float32, f"c{tag}_value", axis=0)
        if valid:
            mask = b.op("Reshape", [valid, b.const("mask_shape", np.array(cshape + (1,), np.int64))], cshape + (1,),
                        np.bool_, f"c{tag}_mask")
            zero = b.const("zero", np.zeros((), np.float32))
            v = b.op("Where", [mask, v, zero], vshape, np.float32, f"c{tag}_padded")
        values[combo] = v
    for i in reversed(range(k)):  # combine the last dim first, as the reference's nesting does
        if len(corners[i]) == 1:
            values = {c[:i]: v for c, v in values.items()}
            continue
        w = [b.op("Reshape", [corners[i][j][1], b.const("weight_shape", np.array(cshape + (1,), np.int64))],
                  cshape + (1,), np.float32, f"d{i}_weight{j}") for j in (0, 1)]
        merged = {}
        for c in sorted({c[:i] for c in values}):
            t0 = b.op("Mul", [w[0], values[c + (0,)]], vshape, np.float32, "weighted")
            t1 = b.op("Mul", [w[1], values[c + (1,)]], vshape, np.float32, "weighted")
            merged[c] = b.op("Add", [t0, t1], vshape, np.float32, "blend")
        values = merged
    b.op("Transpose", [values[()]], (), None, out=out, perm=[0, len(o) + 1] + list(range(1, len(o) + 1)))


REWRITES: dict[str, Rewrite] = {
    "GridSample": (_grid_problem, _grid_sample),
}
