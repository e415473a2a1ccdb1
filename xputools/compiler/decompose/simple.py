"""One-for-one rewrites: Clip with run-time bounds, Pad with a run-time value (and mode wrap, via
indexing), inference Dropout, EyeLike, Mean, CastLike, IsInf."""
from __future__ import annotations

import numpy as np
import onnx

from ..graph import Graph, Node
from .builder import Builder, Rewrite, always, dtype_of, shape_of
from .indexing import wrap_pad, wrap_pad_problem


# ---- Clip with run-time bounds, Pad with a run-time value ---------------------------------------------
def _clip_problem(node: Node, g: Graph) -> str | None:
    bounds = [node.input(i) for i in (1, 2) if node.input(i)]
    if all(g.is_const(n) for n in bounds):
        return "Clip with constant bounds runs as it is"
    return None


def _clip(b: Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = shape_of(g, out), dtype_of(g, out)
    lo, hi = node.input(1), node.input(2)
    y = b.op("Max", [x, lo], shape, dt, "above_min", "" if hi else out) if lo else x
    if hi:  # min > max gives max, as ONNX (numpy.clip) says
        b.op("Min", [y, hi], (), None, out=out)


def _pad_problem(node: Node, g: Graph) -> str | None:
    if node.attrs.get("mode", "constant") != "constant" or not node.input(2) or g.is_const(node.input(2)):
        return "only a constant Pad with a run-time value is rewritten"
    if not all(g.is_const(n) for n in (node.input(1), node.input(3)) if n):
        return "Pad pads/axes computed at run time"
    if np.asarray(g.const(node.input(1))).min(initial=0) < 0:
        return "Pad with negative pads and a run-time value"
    return None


def _any_pad_problem(node: Node, g: Graph) -> str | None:
    return (wrap_pad_problem if node.attrs.get("mode") == "wrap" else _pad_problem)(node, g)


def _any_pad(b: Builder, node: Node) -> None:
    (wrap_pad if node.attrs.get("mode") == "wrap" else _pad)(b, node)


def _pad(b: Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    rank = len(shape_of(g, x))
    pads = [int(p) for p in np.asarray(g.const(node.input(1))).reshape(-1)]
    axes = ([int(a) % rank for a in np.asarray(g.const(node.input(3))).reshape(-1)] if node.input(3)
            else list(range(rank)))
    width = [(0, 0)] * rank
    for j, a in enumerate(axes):
        width[a] = (pads[j], pads[j + len(axes)])
    inside = np.pad(np.ones(shape_of(g, x), np.bool_), width)
    zero_padded = b.op("Pad", [x, node.input(1), "", node.input(3)], shape_of(g, out), dtype_of(g, out), "zero_padded",
                       mode="constant")
    if not node.input(3):
        b.nodes[-1].inputs = b.nodes[-1].inputs[:2]
    b.op("Where", [b.const("inside", inside), zero_padded, node.input(2)], (), None, out=out)

# ---- Dropout, EyeLike, Mean -------------------------------------------------------------------------
def _dropout_problem(node: Node, g: Graph) -> str | None:
    training = node.input(2)
    if not training:
        return None
    t = g.const(training)
    if t is None:
        return "Dropout training_mode is computed at run time"
    if bool(np.asarray(t).reshape(-1)[0]):
        ratio = g.const(node.input(1)) if node.input(1) else np.array(0.5)
        if ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
            return "Dropout in training mode draws random numbers (host only)"
    return None


def _dropout(b: Builder, node: Node) -> None:
    g = b.g
    b.op("Identity", [node.input(0)], (), None, out=node.outputs[0])
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask:
        v = g.values[mask]
        v.const = np.ones(v.shape, v.dtype)


def _eyelike_problem(node: Node, g: Graph) -> str | None:
    return None if len(shape_of(g, node.input(0))) == 2 else "EyeLike needs a 2-D input"


def _eyelike(b: Builder, node: Node) -> None:
    v = b.g.values[node.outputs[0]]
    rows, cols = shape_of(b.g, node.input(0))
    v.const = np.eye(rows, cols, int(node.attrs.get("k", 0)), dtype=v.dtype)


def _mean(b: Builder, node: Node) -> None:
    g = b.g
    out = node.outputs[0]
    shape, dt = shape_of(g, out), dtype_of(g, out)
    total = b.op("Sum", node.present_inputs(), shape, dt, "sum")
    b.op("Div", [total, b.const("count", np.array(len(node.present_inputs()), dt))], (), None, out=out)


def _mean_problem(node: Node, g: Graph) -> str | None:
    dt = dtype_of(g, node.outputs[0])
    return None if dt.kind == "f" or dt.name == "bfloat16" else f"Mean of {dt.name}"


def _castlike(b: Builder, node: Node) -> None:
    attrs = {k: v for k, v in node.attrs.items() if k in ("saturate", "round_mode")}
    to = onnx.helper.np_dtype_to_tensor_dtype(dtype_of(b.g, node.input(1)))
    b.op("Cast", [node.input(0)], (), None, out=node.outputs[0], to=to, **attrs)

def _isinf_problem(node: Node, g: Graph) -> str | None:
    dt = dtype_of(g, node.input(0))
    return None if dt.kind == "f" or dt.name == "bfloat16" else f"IsInf of {dt.name}"


def _isinf(b: Builder, node: Node) -> None:
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = shape_of(g, x), dtype_of(g, x)
    positive, negative = int(node.attrs.get("detect_positive", 1)), int(node.attrs.get("detect_negative", 1))
    if positive and negative:
        x = b.op("Abs", [x], shape, dt, "magnitude")
    if not (positive or negative):  # nothing detected: all false
        b.op("Equal", [x, b.const("nan", np.array(np.nan, dt))], (), None, out=out)
        return
    b.op("Equal", [x, b.const("infinity", np.array(-np.inf if not positive else np.inf, dt))], (), None, out=out)


REWRITES: dict[str, Rewrite] = {
    "Clip": (_clip_problem, _clip), "Pad": (_any_pad_problem, _any_pad), "Dropout": (_dropout_problem, _dropout),
    "EyeLike": (_eyelike_problem, _eyelike), "Mean": (_mean_problem, _mean), "CastLike": (always, _castlike),
    "IsInf": (_isinf_problem, _isinf),
}
