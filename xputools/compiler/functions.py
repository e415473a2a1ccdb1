"""ONNX function expansion: a node the device cannot run becomes the primitive ops of its schema's
function body, when those all run on the device.

Why: ONNX defines many ops (Attention, RMSNormalization, Elu, ReduceL1, CastLike, ...) by a function
body made of simpler ops, which is what the `_expanded` cases of the node suite spell out. The device
lacks the composite op but runs the primitives, so spelling the body out moves the whole computation
from the host fallback onto the engines; nothing is written twice, the body is onnx's own.

How (after shape inference, so context-dependent bodies see their input types):
- a candidate is a node that `support.placement` sends to the host (not in SUPPORT_RULES, or its rule
  refuses it) and that the passes would not drop as a copy, whose schema at the model's opset has a
  static body (`get_function_with_opset_version`) or a context-dependent one (built from the node and
  its input types);
- the body is instantiated as onnx's inliner does: formal inputs/outputs bound to the node's (an
  omitted optional input stays omitted), attributes referenced by `ref_attr_name` bound to the node's
  value, else the function's or the schema's default, else left out; every inner value and node gets
  a fresh name under the node's name (`attn/QKAttnWeight`), the node's outputs keep their names, and
  every inner node keeps the node's `origin` (so `--keep`, the debugger and the accuracy tool name the
  ONNX node the user wrote) and records the op it was expanded from (`Node.expanded_from`);
- the body is settled on a small graph of its own (shape inference, constant folding: the body's
  Constant/Shape/CastLike arithmetic folds away), inner nodes that are themselves composite are
  expanded the same way, and the expansion is kept only if every node left runs on the device and
  the node's outputs keep their shapes and dtypes. Otherwise the node stays as it was (host fallback):
  a body holding subgraphs (Loop/If/Scan) or sequence ops, a body written for an opset whose ops mean
  something else at the model's opset, or one that fails to build is never used.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .graph import Graph, Node, Value, attr_to_python, onnx_node
from .passes import noop_source
from .support import placement

MAX_DEPTH = 4  # composite ops inside bodies inside bodies...
SEQUENCE_OPS = frozenset({
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement",
    "OptionalHasElement",
})
CONTROL_FLOW_OPS = frozenset({"Loop", "If", "Scan"})
VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic

Settle = Callable[[Graph], None]
OnDevice = Callable[[Node, Graph], bool]


class NotExpandable(Exception):
    """The node keeps its own op (the message says why); not an error for the user."""


@dataclass
class Expansion:
    """One ONNX node replaced by its function body."""

    name: str  # the node's name
    op_type: str
    nodes: list[str]  # the names of the nodes that replaced it (after folding)


class _Names:
    """Fresh value and node names, unique in the whole model (bodies inside bodies included)."""

    def __init__(self, graph: Graph):
        self.values = set(graph.values) | {o for n in graph.nodes for o in n.outputs if o}
        self.nodes = {n.name for n in graph.nodes}

    @staticmethod
    def _fresh(base: str, taken: set[str]) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def value(self, base: str) -> str:
        return self._fresh(base, self.values)

    def node(self, base: str) -> str:
        return self._fresh(base, self.nodes)


def expand_functions(graph: Graph, settle: Settle, on_device: OnDevice | None = None,
                     depth: int = 0, names: _Names | None = None) -> list[Expansion]:
    """Replace, in place, every node of `graph` that the device cannot run by its ONNX function body
    when the whole body runs on the device (module docstring). `settle(graph)` infers shapes and folds
    constants of a graph with new, unshaped values (the front end's own routine); `on_device(node,
    graph)` says whether a node runs on the device (default `runs_on_device`). Returns what was
    expanded, in graph order."""
    on_device = on_device or runs_on_device
    names = names or _Names(graph)
    done: list[Expansion] = []
    for node in list(graph.nodes):
        schema = _schema_with_body(node, graph)
        if schema is None or (on_device(node, graph) and not (depth and _folds_when_expanded(node, graph))):
            continue
        try:
            body = function_body(node, graph, schema)
            if body is None:
                continue
            sub = _expanded_subgraph(node, body, schema, graph, settle, on_device, depth, names)
        except NotExpandable as exc:
            node.body_problem = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - onnx's builders and inference raise many types; the node keeps its op
            graph.warnings.append(f"node {node.name!r} ({node.op_type}) stays on the host: its ONNX function body "
                                  f"could not be expanded ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
            continue
        _splice(graph, node, sub)
        done.append(Expansion(node.name, node.op_type, [n.name for n in sub.nodes]))
    return done


def _folds_when_expanded(node: Node, graph: Graph) -> bool:
    """A CastLike of a constant inside a body: its own body (a Cast) folds, and what reads it may then
    run on the device (a Pad's value, a Clip's bounds), where a copy dropped later would come too late."""
    return node.op_type == "CastLike" and not node.domain and graph.is_const(node.input(0))


def runs_on_device(node: Node, graph: Graph) -> bool:
    """Whether the device runs `node` as it is: `support.placement` says so, or the passes drop it as a
    copy (a same-dtype Cast/CastLike, an Identity...)."""
    return noop_source(node, graph) is not None or placement(node, graph)[0] == "device"


def _schema_with_body(node: Node, graph: Graph):
    """The op's schema at the model's opset when it defines a function body for that opset, else None."""
    version = graph.opset.get(node.domain)
    if version is None:
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except onnx.defs.SchemaError:
        return None
    versions = list(schema.function_opset_versions) + list(schema.context_dependent_function_opset_versions)
    return schema if any(v <= version for v in versions) else None


def function_body(node: Node, graph: Graph, schema=None) -> onnx.FunctionProto | None:
    """The schema's function body for `node` at the model's opset, or None. A context-dependent body is
    built for the node's attributes and input types (they must be known)."""
    schema = schema or _schema_with_body(node, graph)
    if schema is None:
        return None
    version = graph.opset[node.domain]
    static = [v for v in schema.function_opset_versions if v <= version]
    if static:
        data = schema.get_function_with_opset_version(max(static))
    else:
        dependent = [v for v in schema.context_dependent_function_opset_versions if v <= version]
        if not dependent or any(i and not _typed(graph, i) for i in node.inputs):
            return None
        proto = onnx_node(node, graph.opset)
        types = [_type_proto(graph.values[i]).SerializeToString() if i else b"" for i in node.inputs]
        data = schema.get_context_dependent_function_with_opset_version(max(dependent), proto.SerializeToString(),
                                                                        types)
    if not data:
        return None
    body = onnx.FunctionProto()
    body.ParseFromString(data)
    return body if body.node else None


def _typed(graph: Graph, name: str) -> bool:
    v = graph.values.get(name)
    return v is not None and v.dtype is not None and v.shape is not None


def _type_proto(v: Value) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype)), list(v.shape))


# ---- instantiating a body ------------------------------------------------------------------------
def _expanded_subgraph(node: Node, body: onnx.FunctionProto, schema, graph: Graph, settle: Settle,
                       on_device: OnDevice, depth: int, names: _Names) -> Graph:
    """The node's body as a settled graph of its own whose inputs and outputs are the node's."""
    _check_body(body, graph)
    inner = _instantiate(node, body, schema, graph, names)
    sub = _subgraph(node, graph, inner)
    settle(sub)
    if depth + 1 < MAX_DEPTH and expand_functions(sub, settle, on_device, depth + 1, names):
        settle(sub)  # what the inner bodies folded may fold further
    produced = {o for n in sub.nodes for o in n.outputs}
    for o in sub.output_names:
        if o not in produced and not sub.is_const(o):
            raise NotExpandable(f"its body passes {o!r} through without computing it")
        want, got = graph.values[o], sub.values[o]
        if want.shape != got.shape or np.dtype(want.dtype) != np.dtype(got.dtype):
            raise NotExpandable(f"the body gives {o!r} shape {got.shape} {got.dtype}, not {want.shape} {want.dtype}")
    host = [n for n in sub.nodes if not on_device(n, sub)]
    if host:
        raise NotExpandable(f"{host[0].op_type} in its body runs on the host")
    return sub


def _check_body(body: onnx.FunctionProto, graph: Graph) -> None:
    """Refuse bodies with control flow or sequences, and bodies whose ops mean something else at the
    model's opset than at the opset the body was written for."""
    body_opset = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in body.opset_import}
    for n in body.node:
        domain = n.domain if n.domain != "ai.onnx" else ""
        if n.op_type in CONTROL_FLOW_OPS or n.op_type in SEQUENCE_OPS or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise NotExpandable(f"its body holds {n.op_type}")
        if domain not in graph.opset:
            raise NotExpandable(f"its body uses domain {domain!r}, which the model does not import")
        # a builder that leaves a domain out of the body's imports writes for the model's opset
        written_for = body_opset.get(domain, graph.opset[domain])
        if not same_meaning(n, domain, written_for, graph.opset[domain]):
            raise NotExpandable(f"{n.op_type} at opset {written_for} differs from opset {graph.opset[domain]}")


# Ops whose meaning changed between versions although the new version only added optional parts.
CHANGED_MEANING = frozenset({("", "GroupNormalization"), ("", "Softmax"), ("", "LogSoftmax"), ("", "Hardmax")})


def same_meaning(node: onnx.NodeProto, domain: str, written_for: int, read_at: int) -> bool:
    """Whether `node`, written for opset `written_for`, computes the same at opset `read_at`: the same
    schema version, or versions that differ only by optional inputs and attributes this node does not
    use and by wider types (ONNX's usual way of growing an op), outside CHANGED_MEANING."""
    try:
        a = onnx.defs.get_schema(node.op_type, written_for, domain)
        b = onnx.defs.get_schema(node.op_type, read_at, domain)
    except onnx.defs.SchemaError:
        return False
    if a.since_version == b.since_version:
        return True
    if (domain, node.op_type) in CHANGED_MEANING:
        return False
    ins_a, ins_b = [p.name for p in a.inputs], [p.name for p in b.inputs]
    shorter = min(len(ins_a), len(ins_b))
    if ins_a[:shorter] != ins_b[:shorter] or [p.name for p in a.outputs] != [p.name for p in b.outputs]:
        return False
    variadic = shorter and all(s.inputs[shorter - 1].option == VARIADIC for s in (a, b))
    if not variadic and any(i >= shorter for i, name in enumerate(node.input) if name):
        return False
    extra = set(a.attributes).symmetric_difference(b.attributes)
    if any(name in extra for name in (x.name for x in node.attribute)):
        return False
    if any(schema.attributes[name].required for schema in (a, b) for name in extra if name in schema.attributes):
        return False
    return all(int(a.attributes[k].type) == int(b.attributes[k].type) for k in set(a.attributes) & set(b.attributes))


def _instantiate(node: Node, body: onnx.FunctionProto, schema, graph: Graph, names: _Names) -> list[Node]:
    """The body's nodes with the node's inputs, outputs and attributes bound and fresh inner names."""
    bind: dict[str, str] = {formal: node.input(i) for i, formal in enumerate(body.input)}
    for i, formal in enumerate(body.output):
        if i < len(node.outputs) and node.outputs[i]:
            bind[formal] = node.outputs[i]
    bound = _bound_attributes(node, body, schema, graph)
    out: list[Node] = []
    for n in body.node:
        undefined = [i for i in n.input if i and i not in bind]
        if undefined:
            raise NotExpandable(f"its body reads {undefined[0]!r}, which it does not define")
        for o in n.output:
            if o and o not in bind:
                bind[o] = names.value(f"{node.name}/{o}")
        attrs = {}
        for a in n.attribute:
            a = _resolve(a, bound)
            if a is not None:
                attrs[a.name] = attr_to_python(a)
        out.append(Node(names.node(f"{node.name}/{n.name or n.op_type}"), n.op_type,
                        [bind[i] if i else "" for i in n.input], [bind[o] if o else "" for o in n.output], attrs,
                        n.domain if n.domain != "ai.onnx" else "", origin=list(node.origin),
                        expanded_from=node.op_type))
    return out


def _bound_attributes(node: Node, body: onnx.FunctionProto, schema, graph: Graph) -> dict[str, onnx.AttributeProto]:
    """Attribute name -> its value for this call: the node's, else the function's default, else the
    schema's default (an attribute with none of these is absent, and so are its references)."""
    bound: dict[str, onnx.AttributeProto] = {}
    for name, attr in schema.attributes.items():
        if attr.default_value.type != onnx.AttributeProto.UNDEFINED:
            bound[name] = attr.default_value
    for a in body.attribute_proto:
        bound[a.name] = a
    for a in onnx_node(node, graph.opset).attribute:
        bound[a.name] = a
    return bound


def _resolve(a: onnx.AttributeProto, bound: dict[str, onnx.AttributeProto]) -> onnx.AttributeProto | None:
    if not a.ref_attr_name:
        return a
    value = bound.get(a.ref_attr_name)
    if value is None:
        return None
    out = copy.deepcopy(value)
    out.name = a.name
    return out


def _subgraph(node: Node, graph: Graph, inner: list[Node]) -> Graph:
    """A graph holding only the body: the node's inputs (constants stay constants) and its used outputs."""
    values: dict[str, Value] = {}
    for i in node.present_inputs():
        v = graph.values[i]
        values[i] = Value(v.name, v.shape, v.dtype, v.const)
    outputs = [o for o in node.outputs if o and (o in graph.output_names or graph.consumers(o))]
    for o in outputs:
        values[o] = Value(o, None, None)
    for n in inner:
        for o in n.outputs:
            if o and o not in values:
                values[o] = Value(o, None, None)
    inputs = [i for i in dict.fromkeys(node.present_inputs()) if not graph.is_const(i)]
    return Graph(node.name, inputs, outputs, inner, values, graph.opset)


def _splice(graph: Graph, node: Node, sub: Graph) -> None:
    """Put the settled body where `node` was; its outputs keep their Values (constant if folded)."""
    at = graph.nodes.index(node)
    graph.nodes[at:at + 1] = sub.nodes
    for name, v in sub.values.items():
        if name in node.present_inputs():
            continue
        if name in graph.values and name in node.outputs:
            graph.values[name].const = v.const
        else:
            graph.values[name] = v
    graph.warnings.extend(w for w in sub.warnings if w not in graph.warnings)
    graph.changed()
