"""Which nodes the device runs, and the `xpu check` report.

All support rules live in SUPPORT_RULES (op type -> checker). A checker returns None when the
device can run the node, or the reason it cannot (then the node falls back to the host). Helpers
implementing a lowering refine the checker of their op here, nowhere else.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from .decompose import PARTLY_SUPPORTED, REWRITES, planning_for, rewrite_problem
from .graph import XPU_DOMAIN, Graph, Node
from .planning import plan_problem

DEVICE_DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")

Rule = Callable[[Node, Graph], "str | None"]


# ---- helpers used by the rules -------------------------------------------------------------------
def _rank(g: Graph, name: str) -> int:
    return len(g.values[name].shape)


def _dtype(g: Graph, name: str) -> str:
    return np.dtype(g.values[name].dtype).name


def _is_const(g: Graph, name: str) -> bool:
    return bool(name) and g.is_const(name)


def _used(g: Graph, name: str) -> bool:
    return bool(name) and (name in g.output_names or bool(g.consumers(name)))


def _needs_const(*positions: int, what: str = "") -> Rule:
    def rule(node: Node, g: Graph) -> str | None:
        for i in positions:
            name = node.input(i)
            if name and not g.is_const(name):
                return f"input {i} ({what or name}) is computed at run time; the device needs it constant"
        return None
    return rule


def _all(*rules: Rule) -> Rule:
    def rule(node: Node, g: Graph) -> str | None:
        for r in rules:
            why = r(node, g)
            if why:
                return why
        return None
    return rule


def _ok(node: Node, g: Graph) -> None:
    return None


def _float_only(node: Node, g: Graph) -> str | None:
    dt = _dtype(g, node.input(0))
    return None if dt in FLOAT_DTYPES else f"{node.op_type} on {dt} is not supported (float only)"


def _spatial(kinds: tuple[int, ...], what: str) -> Rule:
    def rule(node: Node, g: Graph) -> str | None:
        dims = _rank(g, node.input(0)) - 2
        if dims not in kinds:
            done = " and ".join(f"{k}-D" for k in kinds)
            return f"{what} {dims}-D is not supported (the device does {done})"
        return None
    return rule


def _const_or_dequantized(position: int, what: str) -> Rule:
    """Input `position` (if present) is a constant or DequantizeLinear of one (QDQ weights/bias)."""
    def rule(node: Node, g: Graph) -> str | None:
        name = node.input(position)
        if not name or g.is_const(name):
            return None
        p = g.producer(name)
        if p is not None and p.op_type == "DequantizeLinear" and g.is_const(p.input(0)):
            return None
        return f"{what} computed at run time (the device needs a constant or a dequantized constant)"
    return rule


def _no_extra_outputs(node: Node, g: Graph) -> str | None:
    extra = [o for o in node.outputs[1:] if _used(g, o)]
    return f"optional output {extra[0]!r} is used (the device computes only output 0)" if extra else None


# ---- per-op rules --------------------------------------------------------------------------------
def _conv(node: Node, g: Graph) -> str | None:
    # weights and bias may be computed at run time (loaded element by element, once per node)
    return _all(_spatial((1, 2), "Conv"), _float_only)(node, g)


def _conv_transpose(node: Node, g: Graph) -> str | None:
    return _all(_spatial((1, 2), "ConvTranspose"), _float_only)(node, g)


def _pow(node: Node, g: Graph) -> str | None:
    e = g.const(node.input(1))
    if e is None and _dtype(g, node.outputs[0]) in FLOAT_DTYPES:  # a float base: f32 pow, any exponent
        return None
    if e is None or e.size != 1:
        return "Pow needs a float base, or a constant scalar exponent, on the device"
    return _float_only(node, g)


def _cast(node: Node, g: Graph) -> None:
    return None  # both sides' dtypes are checked with every node's


def _batchnorm(node: Node, g: Graph) -> str | None:
    if node.attrs.get("training_mode", 0):
        return "BatchNormalization in training mode is not supported"
    return _all(_no_extra_outputs, _float_only)(node, g)


def _layernorm(node: Node, g: Graph) -> str | None:
    from .kernels.normalize import layernorm_problem

    return _all(layernorm_problem, _float_only)(node, g)


def _reduce(float_only: bool) -> Rule:
    def rule(node: Node, g: Graph) -> str | None:
        axes_in = node.input(1)
        if axes_in and not g.is_const(axes_in):
            return "reduction axes computed at run time are not supported"
        if g.values[node.input(0)].size == 0:
            return "reduction of an empty tensor"
        if float_only:
            return _float_only(node, g)
        return None
    return rule


def _softmax(node: Node, g: Graph) -> str | None:
    if g.opset.get("", 13) < 13:
        return f"{node.op_type} before opset 13 (2-D coercion semantics) is not supported"
    from .kernels.normalize import softmax_problem

    return _all(softmax_problem, _float_only)(node, g)


def _pool(node: Node, g: Graph) -> str | None:
    dims = _rank(g, node.input(0)) - 2
    if dims not in (1, 2):
        return f"{node.op_type} {dims}-D is not supported (the device does 1-D and 2-D)"
    if node.op_type == "MaxPool" and _no_extra_outputs(node, g):
        return "MaxPool with the Indices output is not supported"
    from .kernels.pool import pool_problem

    if node.op_type == "MaxPool" and _dtype(g, node.input(0)) in ("int8", "uint8"):  # exact in f32
        return pool_problem(node, g)
    return _all(pool_problem, _float_only)(node, g)


def _global_pool(node: Node, g: Graph) -> str | None:
    if _rank(g, node.input(0)) not in (3, 4):
        return f"{node.op_type} on rank {_rank(g, node.input(0))} is not supported (rank 3 or 4)"
    return _float_only(node, g)


PAD_MODES = ("constant", "edge", "reflect")


def _pad(node: Node, g: Graph) -> str | None:
    mode = node.attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        return f"Pad mode {mode!r} is not supported (supported: {', '.join(PAD_MODES)})"
    return _needs_const(1, 2, 3, what="pads/value/axes")(node, g)


RESIZE_MODES = ("nearest", "linear")
LINEAR_RESIZE_MAX_WIDTH = 6144  # partial results of 128-column chunks must fit a quarter of SBUF
RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners")
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize(node: Node, g: Graph) -> str | None:
    mode = node.attrs.get("mode", "nearest")
    if mode not in RESIZE_MODES:
        return f"Resize mode {mode!r} is not supported (supported: {', '.join(RESIZE_MODES)})"
    coord = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if coord not in RESIZE_COORDS:
        return (f"Resize coordinate_transformation_mode {coord!r} is not supported "
                f"(supported: {', '.join(RESIZE_COORDS)})")
    if mode == "nearest" and node.attrs.get("nearest_mode", "round_prefer_floor") not in RESIZE_NEAREST:
        return f"Resize nearest_mode {node.attrs['nearest_mode']!r} is not supported"
    if node.attrs.get("antialias", 0):
        return "Resize with antialias=1 is not supported"
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize with keep_aspect_ratio_policy other than stretch is not supported"
    if mode == "nearest":  # strided copies: any rank, any dtype, any axes
        return _needs_const(2, 3, what="scales/sizes")(node, g)
    x, y = g.values[node.input(0)].shape, g.values[node.outputs[0]].shape
    if len(x) != 4:
        return f"linear Resize of a rank-{len(x)} tensor is not supported (NCHW only)"
    if x[:2] != y[:2]:
        return "linear Resize that scales the batch or channel dims is not supported (H and W only)"
    if x[3] > LINEAR_RESIZE_MAX_WIDTH:
        return f"linear Resize of width {x[3]} is not supported (at most {LINEAR_RESIZE_MAX_WIDTH})"
    return _all(_needs_const(2, 3, what="scales/sizes"), _float_only)(node, g)


def _lstm(node: Node, g: Graph) -> str | None:
    from .kernels.lstm import lstm_problem

    return _all(lstm_problem, _float_only)(node, g)


QUANT_DTYPES = ("int8", "uint8")


def _quant(node: Node, g: Graph) -> str | None:
    if node.attrs.get("block_size", 0):
        return f"{node.op_type} with block quantization is not supported (per-tensor or per-axis only)"
    q = node.outputs[0] if node.op_type == "QuantizeLinear" else node.input(0)
    dt = _dtype(g, q)
    # DequantizeLinear also takes int32 (the usual QDQ bias: scale = input scale x weight scale)
    int32_dq = node.op_type == "DequantizeLinear" and dt == "int32"
    if dt not in QUANT_DTYPES and not int32_dq:
        return f"{node.op_type} to/from {dt} is not supported (int8/uint8, and int32 for DequantizeLinear)"
    return _needs_const(1, 2, what="scale/zero point")(node, g)


def _qlinear(node: Node, g: Graph) -> str | None:
    from .quantize import qlinear_problem

    return qlinear_problem(node, g)


def _clip(node: Node, g: Graph) -> str | None:
    return _needs_const(1, 2, what="min/max")(node, g)


SUPPORT_RULES: dict[str, Rule] = {
    "MatMul": _float_only, "Gemm": _float_only,
    "Conv": _conv, "ConvTranspose": _conv_transpose,
    "Add": _ok, "Sub": _ok, "Mul": _ok, "Div": _ok, "Pow": _pow,
    "Sqrt": _float_only, "Reciprocal": _float_only, "Neg": _ok, "Abs": _ok, "Exp": _float_only,
    "Log": _float_only, "Erf": _float_only, "Tanh": _float_only, "Sigmoid": _float_only, "Relu": _ok,
    "LeakyRelu": _float_only, "Clip": _clip, "HardSigmoid": _float_only, "HardSwish": _float_only,
    "Gelu": _float_only, "Softplus": _float_only,
    "Floor": _float_only, "Ceil": _float_only, "Round": _float_only, "Sign": _float_only,
    "Max": _ok, "Min": _ok, "Sum": _ok, "Where": _ok,
    "Equal": _ok, "Greater": _ok, "Less": _ok, "GreaterOrEqual": _ok, "LessOrEqual": _ok,
    "Not": _ok, "And": _ok, "Or": _ok, "Xor": _ok, "IsNaN": _float_only, "Cast": _cast,
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "ReduceMean": _reduce(True), "ReduceSum": _reduce(False), "ReduceMax": _reduce(False),
    "ReduceMin": _reduce(False), "ReduceL2": _reduce(True),
    "Softmax": _softmax, "LogSoftmax": _softmax,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    # static output shapes fully determine Reshape/Squeeze/Unsqueeze/Split/Expand; Slice needs its bounds
    "Reshape": _ok, "Flatten": _ok, "Squeeze": _ok, "Unsqueeze": _ok, "Identity": _ok,
    "Transpose": _ok, "Concat": _ok, "Split": _ok,
    "Slice": _needs_const(1, 2, 3, 4, what="starts/ends/axes/steps"),
    "Gather": _ok, "Expand": _ok, "Pad": _pad, "Resize": _resize,
    "LSTM": _lstm, "QuantizeLinear": _quant, "DequantizeLinear": _quant,
    "XpuQLinearMatMul": _qlinear, "XpuQLinearConv": _qlinear,  # int8 forms made by quantize.py
    # rewritten into the ops above by decompose.py (the rule says when the rewrite cannot apply)
    **{op: rewrite_problem for op in REWRITES if op not in PARTLY_SUPPORTED},
}
DEVICE_OPS: tuple[str, ...] = tuple(SUPPORT_RULES)


def placement(node: Node, graph: Graph, options=None) -> tuple[str, str]:
    """("device", "supported") or ("host", why the device cannot run this node). A Conv the planner
    cannot fit on chip (`plan_problem`, under `options`) runs on the host."""
    if node.domain not in ("", "ai.onnx", XPU_DOMAIN):
        return "host", f"custom op {node.domain}.{node.op_type} (only standard ONNX ops run on the device)"
    rule = SUPPORT_RULES.get(node.op_type)
    if rule is None:
        return "host", f"op {node.op_type} is not implemented on the device"
    for name in node.present_inputs() + [o for o in node.outputs if o]:
        v = graph.values.get(name)
        if v is None or v.dtype is None:
            continue
        dt = np.dtype(v.dtype).name
        if dt not in DEVICE_DTYPES:
            return "host", (f"dtype {dt} not supported (tensor {name!r}; "
                            f"device dtypes: {', '.join(DEVICE_DTYPES)})")
    if any(not graph.values[o].is_static for o in node.outputs if o in graph.values):
        return "host", "output shape is not static"
    why = rule(node, graph)
    if not why:
        why = plan_problem(node, graph, options)
        if why and node.op_type in REWRITES:  # a conv too large: say why decompose did not split it
            with planning_for(options):
                why += f"; not split over its kernel taps: {rewrite_problem(node, graph)}"
    return ("host", why) if why else ("device", "supported")


# ---- cost estimates ------------------------------------------------------------------------------
def _size(g: Graph, name: str) -> int:
    return g.values[name].size if name and name in g.values else 0


ELEMENTWISE_COST = {"Softmax": 5, "LogSoftmax": 5, "LayerNormalization": 8, "BatchNormalization": 2,
                    "Gelu": 8, "Erf": 4, "HardSwish": 3, "HardSigmoid": 2, "Softplus": 3, "Exp": 1, "Log": 1}
DATA_MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
                 "Gather", "Expand", "Pad", "Identity", "Cast", "Shape", "Dropout"}


def estimate_flops(node: Node, g: Graph) -> int:
    """Floating-point operations (a multiply-add is 2), roughly, for ranking nodes."""
    op = node.op_type
    out = _size(g, node.outputs[0]) if node.outputs and node.outputs[0] else 0
    extra = out if (node.input(2) and op in ("Conv", "ConvTranspose", "Gemm", "MatMul")) else 0
    extra += out if "fused_activation" in node.attrs else 0
    if op == "MatMul":
        k = g.values[node.input(0)].shape[-1]
        return 2 * out * k + extra
    if op == "Gemm":
        a = g.values[node.input(0)].shape
        k = a[0] if node.attrs.get("transA", 0) else a[1]
        return 2 * out * k + extra
    if op == "Conv":
        w = g.values[node.input(1)].shape
        return 2 * out * int(np.prod(w[1:])) + extra
    if op == "ConvTranspose":
        w = g.values[node.input(1)].shape
        return 2 * _size(g, node.input(0)) * int(np.prod(w[1:])) + extra
    if op in ("XpuQLinearMatMul", "XpuQLinearConv"):  # int8 forms (quantize.py): weight is input 3
        w = g.values[node.input(3)].shape
        return 2 * out * (int(np.prod(w[1:])) if op == "XpuQLinearConv" else w[0]) + extra
    if op == "LSTM":
        x = g.values[node.input(0)].shape
        w = g.values[node.input(1)].shape  # [dirs, 4H, I]
        hidden = w[1] // 4
        steps_batch = x[0] * x[1]
        return w[0] * steps_batch * (2 * w[1] * (w[2] + hidden) + 10 * hidden)
    if op in ("MaxPool", "AveragePool"):
        return out * int(np.prod(node.attrs.get("kernel_shape", [1])))
    if op.startswith(("Reduce", "Global")):
        return _size(g, node.input(0))
    if op in DATA_MOVEMENT or op in ("QuantizeLinear", "DequantizeLinear"):
        return 0 if op in DATA_MOVEMENT else 2 * out
    return ELEMENTWISE_COST.get(op, 1) * out + extra


def _working_set(node: Node, g: Graph) -> int:
    names = set(node.present_inputs()) | {o for o in node.outputs if o}
    return sum(g.values[n].nbytes for n in names if n in g.values and g.values[n].is_static)


def _describe(v) -> dict:
    return {"name": v.name, "shape": list(v.shape), "dtype": np.dtype(v.dtype).name}


def _expanded_nodes(rows: list[dict]) -> list[dict]:
    """The ONNX nodes replaced by their function bodies (functions.py): name, op type, how many
    compiled nodes they became."""
    found: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["expanded_from"]:
            key = (r["origin"][0] if r["origin"] else r["name"], r["expanded_from"])
            found[key] = found.get(key, 0) + 1
    return [{"name": name, "op_type": op, "nodes": count} for (name, op), count in found.items()]


def check_report(graph: Graph, arch=None) -> dict:
    """What `xpu check` prints: placement and cost per node, op counts, weights and SBUF needs, and
    the nodes that were replaced by their ONNX function bodies (`expanded`).

    `arch` is an Arch or a preset name/path (default xpu1). The SBUF estimate is the largest
    untiled working set of one device node (all its inputs and outputs) against the SBUF size:
    a node above it is not an error, it will be tiled.
    """
    from device_model.arch import load_arch

    from .context import CompileOptions

    arch = load_arch(arch)
    options = CompileOptions(arch=arch)
    rows = []
    counts: dict[str, Counter] = {"device": Counter(), "host": Counter()}
    weights: dict[str, int] = {}
    largest = ("", 0)
    for node in graph.nodes:
        where, why = placement(node, graph, options)
        if where == "host" and node.body_problem:
            why += f"; its ONNX function body was not used: {node.body_problem}"
        consts = [i for i in dict.fromkeys(node.present_inputs()) if graph.is_const(i)]
        weight_bytes = sum(graph.values[i].nbytes for i in consts)
        for i in consts:
            weights[i] = graph.values[i].nbytes
        ws = _working_set(node, graph)
        if where == "device" and ws > largest[1]:
            largest = (node.name, ws)
        counts[where][node.op_type] += 1
        outs = [o for o in node.outputs if o]
        rows.append({
            "name": node.name, "op_type": node.op_type, "where": where, "why": why,
            "output_shape": list(graph.values[outs[0]].shape) if outs else [],
            "output_shapes": {o: list(graph.values[o].shape) for o in outs},
            "flops": estimate_flops(node, graph), "weight_bytes": weight_bytes, "working_set_bytes": ws,
            "origin": list(node.origin), "fused": list(node.fused),
            "fused_activation": (node.attrs.get("fused_activation") or {}).get("name", ""),
            "expanded_from": node.expanded_from,
        })
    sbuf_bytes = arch.partitions * arch.sbuf_bytes
    host_rows = [r for r in rows if r["where"] == "host"]
    return {
        "model": graph.name,
        "arch": arch.name,
        "inputs": [_describe(v) for v in graph.inputs],
        "outputs": [_describe(v) for v in graph.outputs],
        "nodes": rows,
        "counts": {"device": dict(sorted(counts["device"].items())),
                   "host": dict(sorted(counts["host"].items())),
                   "total": {"device": sum(counts["device"].values()), "host": sum(counts["host"].values())}},
        "total_flops": sum(r["flops"] for r in rows),
        "total_weight_bytes": sum(weights.values()),
        "sbuf": {"capacity_bytes": sbuf_bytes, "largest_node": largest[0],
                 "largest_working_set_bytes": largest[1], "fits_untiled": largest[1] <= sbuf_bytes},
        "all_on_device": not host_rows,
        "host_nodes": [{"name": r["name"], "op_type": r["op_type"], "why": r["why"]} for r in host_rows],
        "expanded": _expanded_nodes(rows),
        "warnings": list(graph.warnings),
    }
