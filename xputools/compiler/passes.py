"""Graph passes: remove no-ops, fold BatchNorm, fuse GELU, bias and activations.

Each pass is a function Graph -> Graph that returns an edited copy. `run_passes` applies them in
PASSES order; any of them can be disabled by name.

What a fused node looks like (the lowering reads these):
- producers that absorb a bias or an activation: Conv, ConvTranspose, Gemm, MatMul (FUSABLE);
- a bias is the node's input 2 (with ONNX's meaning for Conv/ConvTranspose/Gemm C). A bias the
  passes create is a 1-D constant with one value per output channel (axis 1 for Conv/ConvTranspose,
  the last axis for Gemm/MatMul) and `attrs["fused_bias"]` names it (MatMul has no bias in ONNX:
  this is the only way it gets one); a Gemm that received one has beta = 1;
- `attrs["fused_activation"]` = {"name": ONNX op type, **params} applied after the bias:
  Relu, Sigmoid, Tanh, Gelu {approximate}, LeakyRelu {alpha}, HardSigmoid {alpha, beta},
  HardSwish, Clip {min, max} (None = unbounded);
- `origin` gains the absorbed ONNX nodes and `fused` the ONNX tensors that are no longer computed
  (their Values stay in the graph, for taps); `Graph.aliases` records tensors removed as copies.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .decompose import decompose
from .errors import CompileError
from .graph import Graph, Node

FUSABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ACTIVATION_OPS = ("Relu", "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "HardSigmoid", "HardSwish", "Clip")
SHAPE_ONLY_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _absorb(graph: Graph, keeper: Node, gone: Node, via: str) -> None:
    """`keeper` takes over `gone`'s output; `via` (keeper's old output, gone's input) disappears."""
    out = gone.outputs[0]
    graph.remove_node(gone)
    graph.set_output(keeper, 0, out)
    keeper.origin += [o for o in gone.origin if o not in keeper.origin]
    keeper.fused += [via] + [f for f in gone.fused if f not in keeper.fused]


def _scalar_const(graph: Graph, name: str) -> float | None:
    c = graph.const(name)
    if c is None or c.size != 1 or not (_is_float(c.dtype) or c.dtype.kind in "iu"):
        return None
    return float(np.asarray(c, dtype=np.float64).reshape(-1)[0])


# ---- no-ops --------------------------------------------------------------------------------------
def _unused(graph: Graph, name: str) -> bool:
    return not name or (name not in graph.output_names and not graph.consumers(name))


def noop_source(node: Node, graph: Graph) -> str | None:
    """The input a node merely copies to its only output, or None."""
    if node.domain or not node.outputs or not node.input(0):
        return None
    src, out = node.input(0), node.outputs[0]
    if src not in graph.values or out not in graph.values:
        return None
    vin, vout = graph.values[src], graph.values[out]
    if node.op_type == "Identity":
        return src
    if node.op_type == "Dropout":
        training = node.input(2)
        if training and (not graph.is_const(training) or np.asarray(graph.const(training)).reshape(-1)[0]):
            return None
        return src if all(_unused(graph, o) for o in node.outputs[1:]) else None
    if node.op_type in ("Cast", "CastLike"):
        return src if vin.dtype == vout.dtype else None
    if node.op_type in SHAPE_ONLY_OPS:
        return src if vin.shape == vout.shape and vin.dtype == vout.dtype else None
    return None


def eliminate_noops(graph: Graph) -> Graph:
    """Drop Identity, inference Dropout, same-dtype Cast and shape-preserving Reshape-likes. Readers
    are rewired to the source; a dropped node that produces a graph output hands its name to the
    source's producer, or stays (as a copy) when the source is an input, a constant or an output."""
    g = graph.copy()
    for node in list(g.nodes):
        src = noop_source(node, g)
        if src is None:
            continue
        out = node.outputs[0]
        if out in g.output_names:
            producer = g.producer(src)
            if producer is None or src in g.output_names:
                continue
            g.remove_node(node)
            del g.values[out]
            g.rename_value(src, out)
            g.aliases[src] = out
        else:
            g.remove_node(node)
            g.replace_uses(out, src)
            del g.values[out]
            g.aliases[out] = src
        for dropped in node.outputs[1:]:
            g.values.pop(dropped, None)
    g.aliases = {k: _resolve_alias(g.aliases, v) for k, v in g.aliases.items()}
    return g


def _resolve_alias(aliases: dict[str, str], name: str) -> str:
    seen = set()
    while name in aliases and name not in seen:
        seen.add(name)
        name = aliases[name]
    return name


# ---- BatchNormalization --------------------------------------------------------------------------
def fold_batchnorm(graph: Graph) -> Graph:
    """Fold BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul (constant weight) that feeds
    it when nothing else reads the pre-BN tensor. New weights and bias are computed in float64 and
    cast back. Other BNs stay (lowered as a per-channel scale and bias)."""
    g = graph.copy()
    for bn in [n for n in g.nodes if n.op_type == "BatchNormalization" and not n.domain]:
        x = bn.input(0)
        p = g.producer(x)
        if p is None or p.op_type not in FUSABLE or p.domain or "fused_activation" in p.attrs:
            continue
        if bn.attrs.get("training_mode", 0) or not all(_unused(g, o) for o in bn.outputs[1:]):
            continue
        if g.used_once_internally(x) is not bn:
            continue
        params = [g.const(bn.input(i)) for i in range(1, 5)]
        if any(a is None for a in params):
            continue
        gamma, beta, mean, var = (np.asarray(a, dtype=np.float64).reshape(-1) for a in params)
        scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        shift = beta - mean * scale
        try:
            folded = _fold_scale_into(g, p, scale, shift)
        except _Skip:
            continue
        if folded:
            _absorb(g, p, bn, x)
    return g


def _fold_scale_into(g: Graph, p: Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    """Rewrite p so that it computes scale[c] * p(x)[c] + shift[c] per output channel c."""
    w = g.const(p.input(1))
    if w is None or not _is_float(w.dtype):
        return False
    out = g.values[p.outputs[0]]
    channels = scale.size
    w64 = np.asarray(w, dtype=np.float64)
    if p.op_type == "Conv":
        if w.shape[0] != channels:
            return False
        new_w = w64 * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        old_bias = _bias64(g, p.input(2), channels)
    elif p.op_type == "ConvTranspose":
        group = int(p.attrs.get("group", 1))
        per_group = w.shape[1]
        if per_group * group != channels:
            return False
        grouped = w64.reshape((group, w.shape[0] // group, per_group) + w.shape[2:])
        new_w = (grouped * scale.reshape((group, 1, per_group) + (1,) * (w.ndim - 2))).reshape(w.shape)
        old_bias = _bias64(g, p.input(2), channels)
    elif p.op_type == "Gemm":
        trans_b = int(p.attrs.get("transB", 0))
        if w.ndim != 2 or w.shape[0 if trans_b else 1] != channels:
            return False
        new_w = w64 * (scale[:, None] if trans_b else scale[None, :])
        old_bias = None
        if p.input(2):
            c = g.const(p.input(2))
            if c is None:
                return False
            old_bias = np.asarray(c, dtype=np.float64) * float(p.attrs.get("beta", 1.0))
        p.attrs["beta"] = 1.0
    else:  # MatMul: the BN channel axis (1) is the output's last axis only for a 2-D output
        if w.ndim != 2 or len(out.shape) != 2 or w.shape[1] != channels or "fused_bias" in p.attrs:
            return False
        new_w = w64 * scale[None, :]
        old_bias = None
    bias = shift if old_bias is None else old_bias * scale + shift
    g.set_inputs(p, [p.input(0), g.add_const(f"{p.input(1)}_bn", new_w.astype(w.dtype)),
                     g.add_const(f"{p.name}_bias", bias.astype(out.dtype))])
    if p.op_type == "MatMul":
        p.attrs["fused_bias"] = p.inputs[2]
    return True


def _bias64(g: Graph, name: str, channels: int) -> np.ndarray | None:
    if not name:
        return None
    c = g.const(name)
    if c is None:
        raise _Skip
    return np.asarray(c, dtype=np.float64).reshape(channels)


class _Skip(Exception):
    """The producer's bias is not a constant: BN cannot be folded into it."""


# ---- GELU pattern --------------------------------------------------------------------------------
def _single_consumer(g: Graph, name: str, op_type: str) -> Node | None:
    n = g.used_once_internally(name)
    return n if n is not None and n.op_type == op_type and not n.domain else None


def _other_input(node: Node, name: str) -> str:
    a, b = node.input(0), node.input(1)
    return b if a == name else a


def _near(value: float | None, target: float, rtol: float = 1e-3) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=rtol)


def _match_erf_gelu(g: Graph, erf: Node) -> tuple[str, list[Node], str] | None:
    """For the Erf of x*0.5*(1+erf(x/sqrt2)) in any of its exported orders: (x, the pattern's nodes
    in graph order, the output)."""
    scaled = erf.input(0)
    pre = g.producer(scaled)
    if pre is None or pre.domain or g.used_once_internally(scaled) is not erf:
        return None
    inv_sqrt2 = 1 / math.sqrt(2)
    divides = pre.op_type == "Div" and _near(_scalar_const(g, pre.input(1)), math.sqrt(2))
    if divides or (pre.op_type == "Mul" and _near(_scalar_const(g, pre.input(1)), inv_sqrt2)):
        x = pre.input(0)
    elif pre.op_type == "Mul" and _near(_scalar_const(g, pre.input(0)), inv_sqrt2):
        x = pre.input(1)
    else:
        return None
    add = _single_consumer(g, erf.outputs[0], "Add")
    if add is None or not _near(_scalar_const(g, _other_input(add, erf.outputs[0])), 1.0, 1e-6):
        return None
    t = add.outputs[0]
    m1 = _single_consumer(g, t, "Mul")
    if m1 is None:
        return None
    other = _other_input(m1, t)
    if other == x:  # (x * t) * 0.5
        m2 = _single_consumer(g, m1.outputs[0], "Mul")
        if m2 is None or not _near(_scalar_const(g, _other_input(m2, m1.outputs[0])), 0.5, 1e-6):
            return None
        return x, [pre, erf, add, m1, m2], m2.outputs[0]
    if _near(_scalar_const(g, other), 0.5, 1e-6):  # (t * 0.5) * x
        m2 = _single_consumer(g, m1.outputs[0], "Mul")
        if m2 is None or _other_input(m2, m1.outputs[0]) != x:
            return None
        return x, [pre, erf, add, m1, m2], m2.outputs[0]
    half = g.producer(other)  # (x * 0.5) * t
    if (half is not None and half.op_type == "Mul" and not half.domain and g.used_once_internally(other) is m1
            and x in half.inputs and _near(_scalar_const(g, _other_input(half, x)), 0.5, 1e-6)):
        return x, [pre, half, erf, add, m1], m1.outputs[0]
    return None


def fuse_gelu(graph: Graph) -> Graph:
    """Replace the erf form of GELU by one Gelu node (ONNX's Gelu, approximate='none')."""
    g = graph.copy()
    for erf in [n for n in g.nodes if n.op_type == "Erf" and not n.domain]:
        if erf not in g.nodes:
            continue
        found = _match_erf_gelu(g, erf)
        if found is None:
            continue
        x, parts, out = found
        parts.sort(key=g.nodes.index)
        last = parts[-1]
        gelu = Node(g.unique_node_name(f"{last.name}_gelu"), "Gelu", [x], [out], {},
                    origin=[o for p in parts for o in p.origin],
                    fused=[p.outputs[0] for p in parts if p.outputs[0] != out]
                    + [f for p in parts for f in p.fused])
        g.replace_node(last, gelu)
        for p in parts[:-1]:
            g.remove_node(p)
    return g


# ---- bias ----------------------------------------------------------------------------------------
def _has_bias(p: Node) -> bool:
    return bool(p.input(2)) or "fused_bias" in p.attrs


def _channel_bias(c: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """`c` as a 1-D per-channel vector if adding it to a tensor of `out_shape` only varies along
    `axis` and does not broadcast the tensor itself."""
    rank = len(out_shape)
    if c.ndim > rank or rank == 0:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    axis %= rank
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, out_shape[axis]):
        return None
    return np.broadcast_to(c.reshape(shape[axis]), (out_shape[axis],)).copy()


def fuse_bias(graph: Graph) -> Graph:
    """Fuse `y + c` / `c + y` / `y - c` (c a per-output-channel constant) into the bias of the
    Conv/ConvTranspose/Gemm/MatMul producing y, when that node has no bias yet and nothing else
    reads y."""
    g = graph.copy()
    for add in [n for n in g.nodes if n.op_type in ("Add", "Sub") and not n.domain]:
        for pos in (0, 1):
            y, c_name = add.input(pos), add.input(1 - pos)
            if add.op_type == "Sub" and pos == 1:
                continue
            p = g.producer(y)
            c = g.const(c_name)
            if p is None or c is None or p.op_type not in FUSABLE or p.domain or _has_bias(p):
                continue
            if "fused_activation" in p.attrs or g.used_once_internally(y) is not add:
                continue
            out = g.values[add.outputs[0]]
            if out.shape != g.values[y].shape or out.dtype != g.values[y].dtype:
                continue
            axis = 1 if p.op_type in ("Conv", "ConvTranspose") else -1
            bias = _channel_bias(np.asarray(c), out.shape, axis)
            if bias is None:
                continue
            if add.op_type == "Sub":
                bias = -bias
            bias_name = g.add_const(f"{p.name}_bias", bias.astype(out.dtype))
            g.set_inputs(p, [p.input(0), p.input(1), bias_name])
            p.attrs["fused_bias"] = bias_name
            if p.op_type == "Gemm":
                p.attrs["beta"] = 1.0
            _absorb(g, p, add, y)
            break
    return g


# ---- activations ---------------------------------------------------------------------------------
def activation_spec(node: Node, graph: Graph) -> dict | None:
    """The fused-activation spec equivalent to `node`, or None if it cannot be fused."""
    if node.domain or node.op_type not in ACTIVATION_OPS:
        return None
    op = node.op_type
    if op == "LeakyRelu":
        return {"name": op, "alpha": float(node.attrs.get("alpha", 0.01))}
    if op == "HardSigmoid":
        return {"name": op, "alpha": float(node.attrs.get("alpha", 0.2)),
                "beta": float(node.attrs.get("beta", 0.5))}
    if op == "Gelu":
        return {"name": op, "approximate": str(node.attrs.get("approximate", "none"))}
    if op == "Clip":
        if "min" in node.attrs or "max" in node.attrs:  # opset < 11
            return {"name": op, "min": float(node.attrs.get("min", -3.4028234663852886e38)),
                    "max": float(node.attrs.get("max", 3.4028234663852886e38))}
        bounds = []
        for i in (1, 2):
            if not node.input(i):
                bounds.append(None)
                continue
            v = _scalar_const(graph, node.input(i))
            if v is None:
                return None
            bounds.append(v)
        return {"name": op, "min": bounds[0], "max": bounds[1]}
    return {"name": op}


def fuse_activation(graph: Graph) -> Graph:
    """Fuse an activation into the Conv/ConvTranspose/Gemm/MatMul producing its input when nothing
    else reads that input."""
    g = graph.copy()
    for act in [n for n in g.nodes if n.op_type in ACTIVATION_OPS and not n.domain]:
        x = act.input(0)
        p = g.producer(x)
        if p is None or p.op_type not in FUSABLE or p.domain or "fused_activation" in p.attrs:
            continue
        if g.used_once_internally(x) is not act:
            continue
        spec = activation_spec(act, g)
        if spec is None or g.values[act.outputs[0]].dtype != g.values[x].dtype:
            continue
        p.attrs["fused_activation"] = spec
        _absorb(g, p, act, x)
    return g


# ---- driver --------------------------------------------------------------------------------------
PASSES: dict[str, Callable[[Graph], Graph]] = {
    "decompose": decompose,  # first: the no-op pass then removes the Identity nodes it leaves
    "eliminate_noops": eliminate_noops,
    "fold_batchnorm": fold_batchnorm,
    "fuse_gelu": fuse_gelu,
    "fuse_bias": fuse_bias,
    "fuse_activation": fuse_activation,
}


@dataclass(frozen=True)
class PassOptions:
    disable: frozenset[str] = field(default_factory=frozenset)
    target: object = None  # the CompileOptions compiled for: decompose splits only convs its planner refuses


def run_passes(graph: Graph, options: PassOptions | Mapping | None = None) -> Graph:
    """Apply PASSES in order except the disabled ones (`options.disable` or {"disable": {...}});
    the input graph is left unchanged."""
    target = None
    if options is None:
        disable: frozenset[str] = frozenset()
    elif isinstance(options, PassOptions):
        disable, target = frozenset(options.disable), options.target
    else:
        unknown_keys = set(options) - {"disable"}
        if unknown_keys:
            raise CompileError(f"unknown pass option(s) {', '.join(sorted(unknown_keys))}; known: disable")
        disable = frozenset(options.get("disable", ()))
    unknown = sorted(disable - set(PASSES))
    if unknown:
        raise CompileError(f"unknown pass name(s) {', '.join(unknown)}; passes are: {', '.join(PASSES)}")
    g = graph.copy()
    for name, fn in PASSES.items():
        if name not in disable:
            g = decompose(g, target) if fn is decompose else fn(g)
    g.prune()
    g.validate()
    return g
