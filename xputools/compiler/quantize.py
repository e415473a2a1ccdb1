"""int8 compilation: rewrite MatMul / Gemm / Conv into int8 x int8 -> int32 nodes for the PE.

`quantize_graph(graph, options)` runs after the graph passes when `--precision int8` or
`--calibration` is given. A node is turned to int8 only where its compute dtype (the precision,
or its `--keep` override) is int8, so `--keep name=fp32` keeps a layer in float. Two sources:

1. QDQ models: DequantizeLinear(activation, per-tensor) and DequantizeLinear(int8 constant weight,
   symmetric, per-tensor or per output channel) feeding a MatMul / Gemm / Conv. The node reads the
   quantized activation directly; a bias given as DequantizeLinear of an int32 constant (the QDQ
   convention) is folded to a float constant first, so the usual bias/activation fusions apply.
2. Calibration (`options.calibration`: input name -> array with a leading samples axis): the float
   graph runs on the host over every sample; each remaining MatMul / Gemm / Conv with a constant
   weight gets a symmetric int8 activation scale for its input (max |x|, or the 99.99th percentile
   of |x| with `calibration_method="percentile"`), a QuantizeLinear in front of it, and per output
   channel symmetric int8 weights (max |w[c]| / 127). Other ops stay float.

Afterwards a QuantizeLinear that is the only reader of an int8 node's output is fused into that
node (`fused_quantize`), so chains of int8 layers pass int8 tensors through HBM; a QuantizeLinear
that only int8 nodes read is done by each of them as they load their input
(`fused_quantize_input`), so that tensor does not go through HBM at all.

`--precision int8` without calibration data on a model without QDQ nodes is a CompileError that
says to pass --calibration (choosing scales blindly would give silently wrong results; bf16 is the
precision to pick when no calibration data exists).

The int8 node format (domain "xputools", lowered by kernels/qlinear.py):
    XpuQLinearMatMul(x_q, x_scale, x_zero_point, w_q, w_scale, bias) -> y
    XpuQLinearConv  (x_q, x_scale, x_zero_point, w_q, w_scale, bias) -> y
x_q: int8/uint8 activation; x_scale: f32 scalar; x_zero_point: scalar of x_q's dtype or "";
w_q: int8 constant, [K, N] for MatMul, ONNX's [Cout, Cin/group, *kernel] for Conv; w_scale: f32
constant, one value per output channel, shaped to broadcast against w_q ([N], or [Cout, 1, ...]);
bias: f32 constant [channels] or "". Attributes: Conv's own (kernel_shape, pads, strides,
dilations, group, auto_pad) and the compiler's `fused_activation` (as passes.py) and
`fused_quantize` = {"scale": float, "zero_point": int} (y is then int8/uint8) and
`fused_quantize_input` = 1 (x_q is then the float tensor, quantized with x_scale / x_zero_point as
QuantizeLinear does; x_zero_point's dtype, uint8 when absent, says to which type).
`expand.expand_qlinear` spells a node back in plain ONNX (DequantizeLinear, Cast, Mul, MatMul/Conv,
activation, QuantizeLinear) for host fallback and reference runs.
"""
from __future__ import annotations

import numpy as np

from .context import CompileOptions
from .errors import CompileError
from .graph import CONV_ATTRS, QLINEAR_CONV, QLINEAR_MATMUL, QLINEAR_OPS, XPU_DOMAIN, Graph, Node, Value
from .host import run_graph_reference, run_host_node
from .passes import fuse_activation, fuse_bias

PERCENTILE = 99.99
INT8_MAX = 127


def quantize_graph(graph: Graph, options: CompileOptions) -> Graph:
    """The graph with int8 MatMul/Gemm/Conv nodes where QDQ patterns or calibration data allow
    (module docstring). The input graph is left unchanged."""
    g = graph.copy()
    int8 = lambda node: options.compute_dtype(node) == "i8"  # noqa: E731
    matched = {n.name for n in g.nodes if int8(n) and _match_qdq(g, n) is not None}
    _fold_dequantized_constants(g, matched)
    g = fuse_activation(fuse_bias(g))
    rewritten = []
    for node in list(g.nodes):
        if node.name in matched:
            match = _match_qdq(g, node)
            new = _qdq_rewrite(g, node, match) if match is not None else None
            if new is not None:
                rewritten.append((new, match["dequantized"]))
    if options.calibration is not None:
        calibrated = _calibrate(g, options, int8)
        if not calibrated and not rewritten:
            g.warnings.append("calibration data given, but no MatMul/Gemm/Conv with a constant weight "
                              "computes in int8 (use --precision int8, or --keep NODE=int8)")
        rewritten += calibrated
    else:
        left = _candidates(g, int8)
        has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.nodes)
        if left and not has_qdq:
            raise CompileError(
                "--precision int8 needs activation ranges: pass --calibration FILE.npz (each input name -> "
                "an array with a leading samples axis), or compile a QDQ model (QuantizeLinear/"
                "DequantizeLinear nodes), or use --precision bf16")
        if left:
            names = ", ".join(n.name for n in left[:5]) + (", ..." if len(left) > 5 else "")
            g.warnings.append(f"{len(left)} MatMul/Gemm/Conv node(s) have no quantized inputs and run in "
                              f"bf16 ({names}); pass --calibration to quantize them too")
    done: set[str] = set()
    for node, dequantized in rewritten:
        _mark_fused(g, node, dequantized, done)
    g.prune()  # drops the dequantizations nobody reads any more
    for node, _ in rewritten:
        _fuse_output_quantize(g, node)
    for node, _ in rewritten:
        _fuse_input_quantize(g, node)
    g.prune()
    g.validate()
    return g


# ---- QDQ patterns ------------------------------------------------------------------------------------

def _dq(g: Graph, name: str) -> Node | None:
    p = g.producer(name) if name else None
    if p is None or p.op_type != "DequantizeLinear" or p.domain not in ("", "ai.onnx"):
        return None
    if int(p.attrs.get("block_size", 0) or 0):
        return None
    return p


def _dtype_name(g: Graph, name: str) -> str:
    return np.dtype(g.values[name].dtype).name


def _weight_layout(g: Graph, node: Node) -> tuple[int, int] | None:
    """(weight rank, output-channel axis) when `node` can become an int8 node, else None."""
    w_shape = g.values[node.input(1)].shape
    x_rank = len(g.values[node.input(0)].shape)
    if node.op_type == "Conv":
        return (len(w_shape), 0) if x_rank in (3, 4) and len(w_shape) == x_rank else None
    if node.op_type == "MatMul":
        return (2, 1) if len(w_shape) == 2 and x_rank >= 2 else None
    if node.op_type == "Gemm":
        if node.attrs.get("transA", 0) or len(w_shape) != 2:
            return None
        return (2, 0 if node.attrs.get("transB", 0) else 1)
    return None


def _match_qdq(g: Graph, node: Node) -> dict | None:
    """The quantized activation and weight behind a float MatMul/Gemm/Conv, or None."""
    if node.domain or node.op_type not in ("MatMul", "Gemm", "Conv") or not node.outputs:
        return None
    if _dtype_name(g, node.outputs[0]) != "float32":
        return None
    layout = _weight_layout(g, node)
    dx, dw = _dq(g, node.input(0)), _dq(g, node.input(1))
    if layout is None or dx is None or dw is None:
        return None
    xs, xz = g.const(dx.input(1)), g.const(dx.input(2)) if dx.input(2) else None
    if xs is None or xs.size != 1 or (dx.input(2) and (xz is None or xz.size != 1)):
        return None
    if _dtype_name(g, dx.input(0)) not in ("int8", "uint8") or _dtype_name(g, dx.outputs[0]) != "float32":
        return None
    wq, ws = g.const(dw.input(0)), g.const(dw.input(1))
    wz = g.const(dw.input(2)) if dw.input(2) else None
    if wq is None or ws is None or wq.dtype != np.int8 or (dw.input(2) and wz is None):
        return None
    if wz is not None and np.any(wz != 0):
        return None  # asymmetric weights: the zero point would multiply run-time row sums
    rank, axis = layout
    if ws.size > 1:
        if ws.ndim != 1 or int(dw.attrs.get("axis", 1)) % rank != axis or ws.size != wq.shape[axis]:
            return None
    return {"x_q": dx.input(0), "x_scale": dx.input(1), "x_zero": dx.input(2), "w_q": wq,
            "w_scale": np.asarray(ws, np.float32), "axis": axis,
            "dequantized": [(dx.outputs[0], dx), (dw.outputs[0], dw)]}


def _fold_dequantized_constants(g: Graph, matched: set[str]) -> None:
    """DequantizeLinear of a constant becomes that float constant, except the weights of the nodes
    that will become int8 (their int8 values are what the PE multiplies)."""
    keep = set()
    for node in g.nodes:
        if node.name in matched:
            keep.add(node.input(1))
    for dq in [n for n in g.nodes if n.op_type == "DequantizeLinear" and not n.domain]:
        out = dq.outputs[0]
        if out in keep or out in g.output_names or not all(g.is_const(i) for i in dq.present_inputs()):
            continue
        value = run_host_node(dq, [g.const(i) for i in dq.present_inputs()], g)[0]
        g.remove_node(dq)
        g.values[out].const = np.asarray(value)


def _qdq_rewrite(g: Graph, node: Node, m: dict) -> Node | None:
    w_q, w_scale, axis = m["w_q"], m["w_scale"], m["axis"]
    w_float_scale = np.broadcast_to(w_scale.reshape(-1), (w_q.shape[axis],)).astype(np.float32)
    if node.op_type == "Gemm" and axis == 0:  # transB: the int8 node takes [K, N]
        w_q = np.ascontiguousarray(w_q.T)
    return _replace(g, node, m["x_q"], m["x_scale"], m["x_zero"], w_q, w_float_scale)


def _bias(g: Graph, node: Node, channels: int) -> np.ndarray | None | bool:
    """The float bias [channels] of a MatMul/Gemm/Conv, None without one, False when it cannot be
    a per-channel constant (the node then stays float)."""
    if node.op_type == "MatMul":
        name = node.attrs.get("fused_bias") or node.input(2)
        scale = 1.0
    elif node.op_type == "Gemm":
        name = node.input(2) if float(node.attrs.get("beta", 1.0)) != 0.0 else ""
        scale = float(node.attrs.get("beta", 1.0))
    else:
        name, scale = node.input(2), 1.0
    if not name:
        return None
    c = g.const(name)
    if c is None:
        return False
    c = np.asarray(c, np.float64)
    if node.op_type == "Gemm":
        if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, channels):
            return False
    elif c.size != channels:
        return False
    return (np.broadcast_to(c.reshape(-1), (channels,)) * scale).astype(np.float32)


def _replace(g: Graph, node: Node, x_q: str, x_scale: str, x_zero: str, w_q: np.ndarray,
             w_scale: np.ndarray) -> Node | None:
    """Put the int8 node in place of `node`. `w_q` is int8 in the int8 node's layout ([K, N] or
    the Conv weight), `w_scale` one f32 per output channel."""
    conv = node.op_type == "Conv"
    channels = w_q.shape[0] if conv else w_q.shape[1]
    bias = _bias(g, node, channels)
    if bias is False:
        return None
    scale = w_scale.astype(np.float32)
    if node.op_type == "Gemm":
        scale = (scale.astype(np.float64) * float(node.attrs.get("alpha", 1.0))).astype(np.float32)
    scale_shape = (channels,) + (1,) * (w_q.ndim - 1) if conv else (channels,)
    inputs = [x_q, x_scale, x_zero, g.add_const(f"{node.name}.weight_int8", w_q.astype(np.int8)),
              g.add_const(f"{node.name}.weight_scale", scale.reshape(scale_shape)),
              g.add_const(f"{node.name}.bias_float", bias) if bias is not None else ""]
    attrs = {k: v for k, v in node.attrs.items() if conv and k in CONV_ATTRS}
    if "fused_activation" in node.attrs:
        attrs["fused_activation"] = node.attrs["fused_activation"]
    new = Node(node.name, QLINEAR_CONV if conv else QLINEAR_MATMUL, inputs, list(node.outputs), attrs,
               XPU_DOMAIN, list(node.origin), list(node.fused))
    g.replace_node(node, new)
    return new


def _mark_fused(g: Graph, node: Node, dequantized, done: set[str]) -> None:
    """Float tensors the int8 node no longer needs (dequantized activations and weights) are fused
    into it when nothing else reads them (into the first such node only)."""
    for name, dq in dequantized:
        if name in g.output_names or g.consumers(name) or name in done:
            continue
        done.add(name)
        node.fused.append(name)
        node.origin += [o for o in (dq.origin or [dq.name]) if o not in node.origin]


def _fuse_output_quantize(g: Graph, node: Node) -> None:
    y = node.outputs[0]
    q = g.used_once_internally(y)
    if q is None or q.op_type != "QuantizeLinear" or q.domain or "fused_quantize" in node.attrs:
        return
    if int(q.attrs.get("block_size", 0) or 0) or _dtype_name(g, q.outputs[0]) not in ("int8", "uint8"):
        return
    s = g.const(q.input(1))
    z = g.const(q.input(2)) if q.input(2) else np.zeros((), np.uint8)
    if s is None or z is None or s.size != 1 or z.size != 1 or not float(s.reshape(-1)[0]) > 0:
        return
    node.attrs["fused_quantize"] = {"scale": float(np.float32(s.reshape(-1)[0])),
                                    "zero_point": int(z.reshape(-1)[0])}
    out = q.outputs[0]
    g.remove_node(q)
    g.set_output(node, 0, out)
    node.origin += [o for o in (q.origin or [q.name]) if o not in node.origin]
    node.fused.append(y)


def _same_const(g: Graph, a: str, b: str) -> bool:
    if a == b:
        return True
    ca, cb = g.const(a) if a else None, g.const(b) if b else None
    return ca is not None and cb is not None and ca.dtype == cb.dtype and np.array_equal(ca, cb)


def _fuse_input_quantize(g: Graph, node: Node) -> None:
    """A QuantizeLinear whose output only int8 nodes read is done by each of them on load
    (`fused_quantize_input`): the int8 tensor never goes through HBM."""
    x_q = node.input(0)
    q = g.producer(x_q)
    if q is None or q.op_type != "QuantizeLinear" or q.domain or x_q in g.output_names:
        return
    if int(q.attrs.get("block_size", 0) or 0) or _dtype_name(g, q.input(0)) != "float32":
        return
    readers = g.consumers(x_q)
    for r in readers:
        if (r.domain != XPU_DOMAIN or r.op_type not in QLINEAR_OPS or r.input(0) != x_q or x_q in r.inputs[1:]
                or not _same_const(g, r.input(1), q.input(1)) or not _same_const(g, r.input(2), q.input(2))):
            return
    for r in readers:
        g.set_inputs(r, [q.input(0), q.input(1), q.input(2)] + r.inputs[3:])
        r.attrs["fused_quantize_input"] = 1
        r.origin += [o for o in (q.origin or [q.name]) if o not in r.origin]
    readers[0].fused.append(x_q)
    g.remove_node(q)


# ---- calibration --------------------------------------------------------------------------------------

def _candidates(g: Graph, int8) -> list[Node]:
    """Float MatMul/Gemm/Conv nodes with a constant weight that calibration would turn to int8."""
    out = []
    for n in g.nodes:
        if n.domain or n.op_type not in ("MatMul", "Gemm", "Conv") or not int8(n):
            continue
        if not g.is_const(n.input(1)) or _dtype_name(g, n.outputs[0]) != "float32":
            continue
        if _dtype_name(g, n.input(0)) != "float32" or _weight_layout(g, n) is None:
            continue
        out.append(n)
    return out


def calibration_feeds(g: Graph, calibration: dict) -> list[dict[str, np.ndarray]]:
    """One feed dict per calibration sample; a CompileError names what does not match."""
    expected = ", ".join(f"{v.name} [samples, {', '.join(map(str, v.shape))}]" for v in g.inputs)
    missing = [n for n in g.input_names if n not in calibration]
    if missing:
        raise CompileError(f"calibration data has no array for input {', '.join(missing)} "
                           f"(expected: {expected})")
    counts = set()
    arrays = {}
    for v in g.inputs:
        a = np.asarray(calibration[v.name])
        if a.ndim != len(v.shape) + 1 or tuple(a.shape[1:]) != tuple(v.shape):
            raise CompileError(f"calibration array {v.name} has shape {list(a.shape)}; expected a leading "
                               f"samples axis: {expected}")
        counts.add(a.shape[0])
        arrays[v.name] = a.astype(v.dtype, copy=False)
    if len(counts) != 1 or 0 in counts:
        raise CompileError(f"calibration arrays must hold the same number (>= 1) of samples, "
                           f"got {sorted(counts)}")
    return [{k: a[i] for k, a in arrays.items()} for i in range(counts.pop())]


def activation_scale(values: list[np.ndarray], method: str) -> float:
    """Symmetric int8 scale for the |x| of all samples (max, or the PERCENTILE-th percentile)."""
    flat = np.concatenate([np.abs(np.asarray(v, np.float64)).reshape(-1) for v in values])
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 1.0
    if method == "minmax":
        amax = float(flat.max())
    elif method == "percentile":
        amax = float(np.percentile(flat, PERCENTILE))
    else:
        raise CompileError(f"unknown calibration method {method!r} (choose minmax or percentile)")
    return amax / INT8_MAX if amax > 0 else 1.0


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (w_q, scale[channels]) with w ~ w_q * scale."""
    w64 = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    amax = np.abs(w64.reshape(w64.shape[0], -1)).max(axis=1) if w64.size else np.zeros(w64.shape[0])
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w64 / scale.astype(np.float64).reshape((-1,) + (1,) * (w64.ndim - 1))),
                -INT8_MAX, INT8_MAX).astype(np.int8)
    return np.ascontiguousarray(np.moveaxis(q, 0, axis)), scale


def _calibrate(g: Graph, options: CompileOptions, int8) -> list:
    cands = _candidates(g, int8)
    if not cands:
        return []
    feeds = calibration_feeds(g, options.calibration)
    tensors = list(dict.fromkeys(n.input(0) for n in cands))
    seen: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for sample in feeds:
        env = run_graph_reference(g, sample)
        for t in tensors:
            seen[t].append(env[t] if t in env else g.const(t))
    quantized = {}
    for t in tensors:
        scale = activation_scale(seen[t], options.calibration_method)
        first = min(g.nodes.index(n) for n in cands if n.input(0) == t)
        q_out = g.unique_name(f"{t}/int8")
        g.values[q_out] = Value(q_out, tuple(g.values[t].shape), np.dtype(np.int8))
        s_name = g.add_const(f"{t}/int8_scale", np.array(scale, np.float32))
        z_name = g.add_const(f"{t}/int8_zero_point", np.array(0, np.int8))
        q = Node(g.unique_node_name(f"{t}/quantize"), "QuantizeLinear", [t, s_name, z_name], [q_out])
        g.nodes.insert(first, q)
        g.changed()
        quantized[t] = (q_out, s_name, z_name)
    out = []
    for n in cands:
        _, axis = _weight_layout(g, n)
        w = np.asarray(g.const(n.input(1)), np.float32)
        if n.op_type == "Gemm" and axis == 0:
            w, axis = w.T, 1
        w_q, w_scale = quantize_weight(w, axis)
        new = _replace(g, n, *quantized[n.input(0)], w_q, w_scale)
        if new is not None:
            out.append((new, []))
    return out


# ---- support and host form ---------------------------------------------------------------------------

def qlinear_problem(node: Node, g: Graph) -> str | None:
    """Why the device cannot run this int8 node, or None (support rule)."""
    want = ("float32",) if node.attrs.get("fused_quantize_input") else ("int8", "uint8")
    if _dtype_name(g, node.input(0)) not in want:
        return f"{node.op_type} input must be {' or '.join(want)}"
    for i, what in ((1, "activation scale"), (2, "activation zero point"), (3, "weight"), (4, "weight scale"),
                    (5, "bias")):
        if node.input(i) and not g.is_const(node.input(i)):
            return f"{node.op_type} {what} must be a constant"
    w = g.values[node.input(3)].shape
    x = g.values[node.input(0)].shape
    if node.op_type == QLINEAR_CONV and (len(x) not in (3, 4) or len(w) != len(x)):
        return f"{node.op_type} on rank {len(x)} is not supported (1-D and 2-D convolutions)"
    if node.op_type == QLINEAR_MATMUL and len(w) != 2:
        return f"{node.op_type} weight must be 2-D"
    return None


__all__ = ["QLINEAR_CONV", "QLINEAR_MATMUL", "QLINEAR_OPS", "qlinear_problem",
           "quantize_graph"]
