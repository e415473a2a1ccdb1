"""Normalizations and pooled norms from reductions, pools and elementwise ops: LpNormalization,
InstanceNormalization, LRN, LpPool."""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .builder import REDUCE_AXES_INPUT_OPSET, Builder, Rewrite, dtype_of, norm_axis, shape_of

# ---- LpPool ------------------------------------------------------------------------------------------
POOL_ATTRS = ("auto_pad", "kernel_shape", "pads", "strides", "dilations")


def _lp_pool_problem(node: Node, g: Graph) -> str | None:
    dt = dtype_of(g, node.input(0))
    if dt.name != "float32":
        return f"LpPool of {dt.name}"
    if node.attrs.get("ceil_mode", 0):
        return "LpPool with ceil_mode (windows past the end would be scaled wrongly)"
    if len(shape_of(g, node.input(0))) - 2 not in (1, 2):
        return "LpPool on the device is 1-D or 2-D"
    return None


def _lp_pool(b: Builder, node: Node) -> None:
    """(window sum of |x|^p)^(1/p), the window sum as AveragePool counting pads (zeros) times the
    window size."""
    g = b.g
    x, out = node.input(0), node.outputs[0]
    shape, dt = shape_of(g, x), dtype_of(g, x)
    p = float(node.attrs.get("p", 2))
    powered = (b.op("Mul", [x, x], shape, dt, "squares") if p == 2 else
               b.op("Pow", [b.op("Abs", [x], shape, dt, "magnitude"), b.const("p", np.array(p, dt))], shape, dt,
                    "powers"))
    out_shape = shape_of(g, out)
    attrs = {k: v for k, v in node.attrs.items() if k in POOL_ATTRS}
    mean = b.op("AveragePool", [powered], out_shape, dt, "window_mean", count_include_pad=1, **attrs)
    count = int(np.prod(node.attrs["kernel_shape"]))
    total = b.op("Mul", [mean, b.const("window_size", np.array(count, dt))], out_shape, dt, "window_sum")
    b.op("Pow", [total, b.const("inverse_p", np.array(1.0 / p, dt))], (), None, out=out)

# ---- InstanceNormalization, LRN ------------------------------------------------------------------------
def _float32_problem(node: Node, g: Graph) -> str | None:
    dt = dtype_of(g, node.input(0))
    if dt.name != "float32" or len(shape_of(g, node.input(0))) < 3:
        return f"{node.op_type} on the device takes float32 with at least one spatial dim"
    return None


def _instance_norm(b: Builder, node: Node) -> None:
    """(x - mean) / sqrt(var + eps) * scale + bias over each (n, c) slice's spatial dims."""
    g = b.g
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axes = list(range(2, len(shape)))
    kept = shape[:2] + (1,) * len(axes)
    per_channel = (shape[1],) + (1,) * len(axes)
    axes_c = b.const("axes", np.array(axes, np.int64))
    if g.opset.get("", 13) >= REDUCE_AXES_INPUT_OPSET:
        mean = b.op("ReduceMean", [x, axes_c], kept, dt, "mean", keepdims=1)
    else:
        mean = b.op("ReduceMean", [x], kept, dt, "mean", axes=axes, keepdims=1)
    centred = b.op("Sub", [x, mean], shape, dt, "centred")
    square = b.op("Mul", [centred, centred], shape, dt, "square")
    if g.opset.get("", 13) >= REDUCE_AXES_INPUT_OPSET:
        var = b.op("ReduceMean", [square, axes_c], kept, dt, "variance", keepdims=1)
    else:
        var = b.op("ReduceMean", [square], kept, dt, "variance", axes=axes, keepdims=1)
    eps = b.const("epsilon", np.array(float(node.attrs.get("epsilon", 1e-5)), dt))
    std = b.op("Sqrt", [b.op("Add", [var, eps], kept, dt, "var_eps")], kept, dt, "std")
    normed = b.op("Div", [centred, std], shape, dt, "normalized")
    column = b.const("channel_shape", np.array(per_channel, np.int64))
    s = b.op("Reshape", [scale, column], per_channel, dt, "scale")
    c = b.op("Reshape", [bias, column], per_channel, dt, "bias")
    b.op("Add", [b.op("Mul", [normed, s], shape, dt, "scaled"), c], (), None, out=node.outputs[0])


def _lrn(b: Builder, node: Node) -> None:
    """x / (bias + alpha / size * window sum of x^2 over channels)^beta; the channel window sum is an
    AveragePool over a [N, 1, C, rest] view counting the zero pads, times size."""
    g = b.g
    x = node.input(0)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    size = int(node.attrs["size"])
    alpha, beta = float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    rest = int(np.prod(shape[2:]))
    view = (shape[0], 1, shape[1], rest)
    square = b.op("Mul", [x, x], shape, dt, "square")
    square = b.op("Reshape", [square, b.const("view", np.array(view, np.int64))], view, dt, "channel_view")
    before = (size - 1) // 2
    mean = b.op("AveragePool", [square], view, dt, "window_mean", kernel_shape=[size, 1], count_include_pad=1,
                pads=[before, 0, size - 1 - before, 0])
    mean = b.op("Reshape", [mean, b.const("shape", np.array(shape, np.int64))], shape, dt, "window_mean_back")
    base = b.op("Add", [b.op("Mul", [mean, b.const("alpha", np.array(alpha, dt))], shape, dt, "scaled_sum"),
                        b.const("bias", np.array(bias, dt))], shape, dt, "base")
    denom = b.op("Pow", [base, b.const("beta", np.array(beta, dt))], shape, dt, "denominator")
    b.op("Div", [x, denom], (), None, out=node.outputs[0])

def _lp_norm_problem(node: Node, g: Graph) -> str | None:
    if int(node.attrs.get("p", 2)) not in (1, 2):
        return "LpNormalization with p other than 1 or 2"
    dt = dtype_of(g, node.input(0))
    if not (dt.kind == "f" or dt.name == "bfloat16"):
        return f"LpNormalization of {dt.name}"
    if norm_axis(int(node.attrs.get("axis", -1)), len(shape_of(g, node.input(0)))) is None:
        return "LpNormalization: axis out of range"
    return None


def _lp_norm(b: Builder, node: Node) -> None:
    """x / ||x||_p along the axis (no epsilon; a zero norm gives 0, as ONNX's reference)."""
    g = b.g
    x = node.input(0)
    shape, dt = shape_of(g, x), dtype_of(g, x)
    axis = norm_axis(int(node.attrs.get("axis", -1)), len(shape))
    kept = shape[:axis] + (1,) + shape[axis + 1:]
    if int(node.attrs.get("p", 2)) == 2:
        norm = b.reduce("ReduceL2", x, axis, True, kept, dt, "norm")
    else:
        norm = b.reduce("ReduceSum", b.op("Abs", [x], shape, dt, "magnitude"), axis, True, kept, dt, "norm")
    zero = b.op("Equal", [norm, b.const("zero", np.zeros((), dt))], kept, np.bool_, "zero_norm")
    safe = b.op("Where", [zero, b.const("one", np.ones((), dt)), norm], kept, dt, "safe_norm")
    b.op("Div", [x, safe], (), None, out=node.outputs[0])  # an all-zero slice stays 0, not 0/0


REWRITES: dict[str, Rewrite] = {
    "LpNormalization": (_lp_norm_problem, _lp_norm), "LpPool": (_lp_pool_problem, _lp_pool),
    "InstanceNormalization": (_float32_problem, _instance_norm), "LRN": (_float32_problem, _lrn),
}
