"""The compiler's graph spelled back in plain ONNX: a node with its fusions (`expand_node`), an int8
node as the QDQ computation it stands for (`expand_qlinear`), a whole graph (`graph_to_onnx`). The
host runs nodes and checks passes through this."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import (
    CONV_ATTRS,
    FUSED_ATTR_PREFIX,
    QLINEAR_CONV,
    XPU_DOMAIN,
    Graph,
    Node,
    onnx_node,
    value_info,
)

GELU_OPSET = 20  # ONNX's own Gelu op


def expand_node(node: Node, opset: dict[str, int], dtype: np.dtype, inputs: list[str] | None = None,
                outputs: list[str] | None = None, name: str | None = None
                ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Plain ONNX nodes (and the constants they need) computing what `node` computes, fusions
    included: a MatMul's `fused_bias` becomes an Add, `fused_activation` its ONNX op, a Gelu in
    a model older than opset 20 its erf/tanh formula, and the compiler's int8 nodes (XPU_DOMAIN)
    their QDQ form. `dtype` is the dtype of output 0."""
    ins = list(node.inputs if inputs is None else inputs)
    outs = list(node.outputs if outputs is None else outputs)
    name = node.name if name is None else name
    if node.domain == XPU_DOMAIN:
        return expand_qlinear(node, opset, dtype, ins, outs, name)
    spec = node.attrs.get(FUSED_ATTR_PREFIX + "activation")
    matmul_bias = node.op_type == "MatMul" and FUSED_ATTR_PREFIX + "bias" in node.attrs
    if node.op_type == "Gelu" and not node.domain and opset.get("", 1) < GELU_OPSET and not spec:
        b = _Builder(name, dtype)
        b.activation({"name": "Gelu", "approximate": node.attrs.get("approximate", "none")}, ins[0], outs[0])
        return b.nodes, b.consts
    if not spec and not matmul_bias:
        return [onnx_node(node, opset, ins, outs, name)], []
    b = _Builder(name, dtype)
    final = outs[0]
    base_out = f"{name}/pre_bias" if matmul_bias else f"{name}/pre_act"
    base_ins = ins[:2] if matmul_bias else ins
    b.nodes.append(onnx_node(node, opset, base_ins, [base_out] + outs[1:], name))
    if matmul_bias:
        b.add("Add", [base_out, ins[2]], f"{name}/pre_act" if spec else final)
    if spec:
        b.activation(spec, f"{name}/pre_act", final, opset.get("", 1))
    return b.nodes, b.consts


class _Builder:
    """Accumulates the ONNX nodes and constants of one expanded node."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.consts: list[onnx.TensorProto] = []

    def const(self, value: float) -> str:
        cname = f"{self.name}/c{len(self.consts)}"
        self.consts.append(numpy_helper.from_array(np.array(value, dtype=self.dtype), cname))
        return cname

    def add(self, op: str, ins: list[str], out: str | None = None, **attrs) -> str:
        out = out or f"{self.name}/t{len(self.nodes)}"
        node_name = f"{self.name}/{op}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, ins, [out], name=node_name, **attrs))
        return out

    def activation(self, spec: dict, x: str, out: str, opset_version: int = 1) -> None:
        op = spec["name"]
        if op == "Gelu":
            approximate = spec.get("approximate", "none")
            if opset_version >= GELU_OPSET:
                self.add("Gelu", [x], out, approximate=approximate)
                return
            if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                cube = self.add("Mul", [self.add("Mul", [x, x]), x])
                inner = self.add("Add", [x, self.add("Mul", [cube, self.const(0.044715)])])
                core = self.add("Tanh", [self.add("Mul", [inner, self.const(math.sqrt(2 / math.pi))])])
            else:  # 0.5 x (1 + erf(x / sqrt 2))
                core = self.add("Erf", [self.add("Div", [x, self.const(math.sqrt(2))])])
            x_times = self.add("Mul", [x, self.add("Add", [core, self.const(1.0)])])
            self.add("Mul", [x_times, self.const(0.5)], out)
        elif op == "Clip":
            lo = "" if spec.get("min") is None else self.const(spec["min"])
            hi = "" if spec.get("max") is None else self.const(spec["max"])
            self.add("Clip", [x, lo, hi], out)
        elif op in ("LeakyRelu",):
            self.add(op, [x], out, alpha=float(spec.get("alpha", 0.01)))
        elif op == "HardSigmoid":
            self.add(op, [x], out, alpha=float(spec.get("alpha", 0.2)), beta=float(spec.get("beta", 0.5)))
        elif op in ("Relu", "Sigmoid", "Tanh", "HardSwish"):
            self.add(op, [x], out)
        else:
            raise ValueError(f"unknown fused activation {op!r}")


def expand_qlinear(node: Node, opset: dict[str, int], dtype, inputs: list[str], outputs: list[str],
                   name: str):
    """Plain ONNX nodes computing an int8 node (see the module docstring): the float computation it
    stands for, with every rounding the QDQ model specifies."""
    x_q, x_scale, x_zero, w_q, w_scale, bias = (list(inputs) + [""] * 6)[:6]
    nodes = []
    if node.attrs.get("fused_quantize_input"):
        nodes.append(helper.make_node("QuantizeLinear", [x_q, x_scale] + ([x_zero] if x_zero else []),
                                      [f"{name}/xpu_x_q"], name=f"{name}/xpu_quantize_x"))
        x_q = f"{name}/xpu_x_q"
    x, w_int, w = f"{name}/xpu_x", f"{name}/xpu_w_int", f"{name}/xpu_w"
    nodes += [helper.make_node("DequantizeLinear", [x_q, x_scale] + ([x_zero] if x_zero else []), [x],
                               name=f"{name}/xpu_dequantize_x"),
              helper.make_node("Cast", [w_q], [w_int], name=f"{name}/xpu_cast_w", to=TensorProto.FLOAT),
              helper.make_node("Mul", [w_int, w_scale], [w], name=f"{name}/xpu_scale_w")]
    fq = node.attrs.get("fused_quantize")
    y = f"{name}/xpu_y" if fq else outputs[0]
    conv = node.op_type == QLINEAR_CONV
    attrs = {k: v for k, v in node.attrs.items() if conv and k in CONV_ATTRS}
    if "fused_activation" in node.attrs:
        attrs["fused_activation"] = node.attrs["fused_activation"]
    if bias and not conv:
        attrs["fused_bias"] = bias
    base = Node(name, "Conv" if conv else "MatMul", [x, w] + ([bias] if bias else []), [y], attrs)
    more, consts = expand_node(base, opset, np.dtype(np.float32))
    nodes += more
    if fq:
        s = numpy_helper.from_array(np.array(fq["scale"], np.float32), f"{name}/xpu_out_scale")
        zero = np.array(fq.get("zero_point", 0), np.dtype(dtype))
        z = numpy_helper.from_array(zero, f"{name}/xpu_out_zero")
        consts += [s, z]
        nodes.append(helper.make_node("QuantizeLinear", [y, s.name, z.name], [outputs[0]],
                                      name=f"{name}/xpu_quantize"))
    return nodes, consts


def graph_to_onnx(graph: Graph, keep_value_info: bool = True) -> onnx.ModelProto:
    """An ONNX model of this graph: constants become initializers, fused nodes are expanded
    back into plain ONNX nodes (`expand_node`)."""
    produced = {o for n in graph.nodes for o in n.outputs}
    used = {i for n in graph.nodes for i in n.all_inputs()} | set(graph.output_names)
    inits = [numpy_helper.from_array(np.asarray(v.const), name=k) for k, v in graph.values.items()
             if v.is_const and k not in produced and k in used and k not in graph.input_names]
    nodes: list[onnx.NodeProto] = []
    for n in graph.nodes:
        out = graph.values.get(n.outputs[0]) if n.outputs and n.outputs[0] else None
        dtype = out.dtype if out is not None and out.dtype is not None else np.dtype(np.float32)
        expanded, consts = expand_node(n, graph.opset, dtype)
        nodes += expanded
        inits += consts
    inputs = [value_info(graph.values[n]) for n in graph.input_names]
    outputs = [value_info(graph.values[n]) for n in graph.output_names]
    vi = []
    if keep_value_info:
        io = set(graph.input_names) | set(graph.output_names)
        vi = [value_info(graph.values[o]) for o in produced if o and o not in io and o in graph.values]
    g = helper.make_graph(nodes, graph.name or "graph", inputs, outputs, initializer=inits, value_info=vi)
    opset = dict(graph.opset)
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()],
                             ir_version=min(onnx.IR_VERSION, 10))
