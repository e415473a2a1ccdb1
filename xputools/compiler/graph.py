"""The compiler's graph IR: values with static shapes, nodes in topological order.

Conventions the lowering relies on:
- every tensor is a `Value` in `Graph.values`; `const` holds the data of initializers and folded
  constants; after `import_model` every shape is a tuple of ints;
- a `Node`'s `inputs` use "" for an omitted optional input; attributes are plain Python values
  (int, float, str, lists, numpy arrays for tensor attributes, `onnx.GraphProto` for subgraphs);
  attributes whose name starts with `fused_` are the compiler's own (see passes.py), not ONNX's;
- `origin` lists the ONNX nodes a node stands for and `fused` the ONNX tensors that fusion removed
  inside it: their Values stay in `values` (shape and dtype, for taps) but no node produces them;
- `expanded_from` is the op type of the ONNX node (named in `origin`) whose function body (functions.py)
  or rewrite (decompose/) this node comes from, "" for a node the model spelled itself; `body_problem` says why a node
  that has a function body kept its own op instead;
- `Graph.aliases` maps an ONNX tensor that a pass removed because it was a copy (Identity, no-op
  Cast...) to the value that holds the same data.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

FUSED_ATTR_PREFIX = "fused_"
XPU_DOMAIN = "xputools"  # the compiler's own ops (int8 MatMul/Conv, see quantize.py)
# the compiler's int8 nodes (quantize.py documents their inputs and attributes)
QLINEAR_MATMUL = "XpuQLinearMatMul"
QLINEAR_CONV = "XpuQLinearConv"
QLINEAR_OPS = (QLINEAR_MATMUL, QLINEAR_CONV)
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@dataclass
class Value:
    """A tensor: `shape` and `dtype` are None only while importing; `const` holds constant data."""

    name: str
    shape: tuple[int, ...] | None
    dtype: np.dtype
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        """Whether the value is known at compile time."""
        return self.const is not None

    @property
    def is_static(self) -> bool:
        """Whether every dim is a known int."""
        return self.shape is not None and all(isinstance(d, int) and d >= 0 for d in self.shape)

    @property
    def size(self) -> int:
        """Number of elements (the shape must be known)."""
        assert self.shape is not None, f"value {self.name!r} has no known shape"
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the value in its numpy dtype."""
        return self.size * self.dtype.itemsize


@dataclass(eq=False)  # nodes compare by identity
class Node:
    """One operation: ONNX's (or the compiler's XPU_DOMAIN int8 ones), with the ONNX nodes it
    stands for (`origin`) and the tensors fusion removed inside it (`fused`)."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    origin: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    expanded_from: str = ""
    body_problem: str = ""

    def present_inputs(self) -> list[str]:
        """The inputs that are given (omitted optional ones left out)."""
        return [i for i in self.inputs if i]

    def input(self, i: int) -> str:
        """Name of input `i`, or "" when omitted."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def subgraphs(self) -> list[onnx.GraphProto]:
        """The subgraphs in its attributes (If branches, Loop/Scan bodies)."""
        out: list[onnx.GraphProto] = []
        for v in self.attrs.values():
            if isinstance(v, onnx.GraphProto):
                out.append(v)
            elif isinstance(v, list):
                out.extend(g for g in v if isinstance(g, onnx.GraphProto))
        return out

    def implicit_inputs(self) -> list[str]:
        """Outer-scope names the node's subgraphs (If/Loop/Scan bodies) read."""
        seen: list[str] = []
        for g in self.subgraphs():
            for name in outer_references(g):
                if name not in seen:
                    seen.append(name)
        return seen

    def all_inputs(self) -> list[str]:
        """Explicit (present) inputs followed by implicit subgraph inputs."""
        explicit = self.present_inputs()
        return explicit + [n for n in self.implicit_inputs() if n not in explicit]


def outer_references(g: onnx.GraphProto, outer_defined: frozenset[str] = frozenset()) -> list[str]:
    """Names used inside `g` (recursively) that `g` does not define."""
    defined = set(outer_defined)
    defined.update(i.name for i in g.input)
    defined.update(t.name for t in g.initializer)
    defined.update(t.values.name for t in g.sparse_initializer)
    refs: list[str] = []

    def use(name: str) -> None:
        if name and name not in defined and name not in refs:
            refs.append(name)

    for n in g.node:
        for i in n.input:
            use(i)
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for sub in subs:
                for name in outer_references(sub, frozenset(defined)):
                    use(name)
        defined.update(o for o in n.output if o)
    for o in g.output:
        use(o.name)
    return refs


# ---- attributes --------------------------------------------------------------------------------
def attr_to_python(a: onnx.AttributeProto) -> Any:
    """An ONNX attribute as a plain Python value (str, numbers, lists, arrays, GraphProto)."""
    A = onnx.AttributeProto
    if a.type == A.STRING:
        return _decode(a.s)
    if a.type == A.STRINGS:
        return [_decode(s) for s in a.strings]
    if a.type == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == A.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    return helper.get_attribute_value(a)  # INT, FLOAT, GRAPH(S), SPARSE_TENSOR(S), TYPE_PROTO(S)


def _decode(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _schema_attr_type(op_type: str, domain: str, opset: dict[str, int], name: str) -> int | None:
    try:
        schema = onnx.defs.get_schema(op_type, opset.get(domain, opset.get("", 1)), domain)
    except onnx.defs.SchemaError:
        return None
    attr = schema.attributes.get(name)
    return int(attr.type) if attr is not None else None


def attr_to_onnx(name: str, value: Any, attr_type: int | None) -> onnx.AttributeProto:
    """A plain attribute value back as ONNX (`attr_type` from the op schema, when known)."""
    A = onnx.AttributeProto
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
        return helper.make_attribute(name, [numpy_helper.from_array(v) for v in value])
    if attr_type == A.FLOAT:
        return helper.make_attribute(name, float(value))
    if attr_type == A.FLOATS:
        return helper.make_attribute(name, [float(v) for v in value], attr_type=A.FLOATS)
    if attr_type == A.INT:
        return helper.make_attribute(name, int(value))
    if attr_type is not None and isinstance(value, list) and not value:
        return helper.make_attribute(name, [], attr_type=attr_type)
    return helper.make_attribute(name, value)


def onnx_node(node: Node, opset: dict[str, int], inputs: list[str] | None = None,
              outputs: list[str] | None = None, name: str | None = None) -> onnx.NodeProto:
    """The ONNX NodeProto for `node` as ONNX knows it: without the compiler's `fused_*`
    attributes (see `expand.expand_node` for a node with its fusions)."""
    proto = helper.make_node(node.op_type, list(node.inputs if inputs is None else inputs),
                             list(node.outputs if outputs is None else outputs),
                             name=node.name if name is None else name, domain=node.domain or None)
    for key in sorted(node.attrs):
        if key.startswith(FUSED_ATTR_PREFIX):
            continue
        proto.attribute.append(attr_to_onnx(key, node.attrs[key],
                                            _schema_attr_type(node.op_type, node.domain, opset, key)))
    return proto


# ---- the graph ---------------------------------------------------------------------------------
class Graph:
    """A model as the compiler sees it. `inputs`/`outputs` are views of `values` by name, so a
    pass that replaces a Value never leaves them stale."""

    def __init__(self, name: str, input_names: list[str], output_names: list[str], nodes: list[Node],
                 values: dict[str, Value], opset: dict[str, int], aliases: dict[str, str] | None = None,
                 warnings: list[str] | None = None):
        self.name = name
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.nodes = nodes
        self.values = values
        self.opset = dict(opset)
        self.aliases = dict(aliases or {})
        self.warnings = list(warnings or [])
        self._index: tuple | None = None

    @property
    def inputs(self) -> list[Value]:
        """The graph inputs' Values."""
        return [self.values[n] for n in self.input_names]

    @property
    def outputs(self) -> list[Value]:
        """The graph outputs' Values."""
        return [self.values[n] for n in self.output_names]

    # -- queries
    def value(self, name: str) -> Value:
        """The Value called `name` (KeyError naming the graph if none)."""
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"no value named {name!r} in graph {self.name!r}") from None

    def const(self, name: str) -> np.ndarray | None:
        """The constant data of `name`, or None when it is computed at run time."""
        v = self.values.get(name) if name else None
        return None if v is None else v.const

    def is_const(self, name: str) -> bool:
        """Whether `name` is a constant."""
        return self.const(name) is not None

    def changed(self) -> None:
        """Forget the producer/consumer index. Needed only after editing a node's inputs or
        outputs by hand: the edit methods below keep it current, and a `nodes` list that was
        replaced or changed length is noticed on its own."""
        self._index = None

    def _uses(self) -> tuple[dict[str, Node], dict[str, list[Node]]]:
        key = (id(self.nodes), len(self.nodes))
        if self._index is None or self._index[0] != key:
            producers: dict[str, Node] = {}
            users: dict[str, list[Node]] = {}
            for n in self.nodes:
                for o in n.outputs:
                    if o:
                        producers.setdefault(o, n)
                for i in dict.fromkeys(n.all_inputs()):
                    users.setdefault(i, []).append(n)
            self._index = (key, producers, users)
        return self._index[1], self._index[2]

    def producer(self, name: str) -> Node | None:
        """The node that computes `name` (None for inputs and constants)."""
        return self._uses()[0].get(name)

    def consumers(self, name: str) -> list[Node]:
        """Nodes reading `name`, explicitly or from inside a subgraph."""
        return list(self._uses()[1].get(name, ()))

    def node(self, name: str) -> Node:
        """The node called `name`."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def used_once_internally(self, name: str) -> Node | None:
        """The single consumer of `name` if it has exactly one (read once) and is not a graph output."""
        if name in self.output_names:
            return None
        users = self.consumers(name)
        if len(users) != 1 or users[0].inputs.count(name) != 1:
            return None
        return users[0]

    # -- edits
    def unique_name(self, base: str) -> str:
        """A tensor name not used yet: `base`, else `base_1`, `base_2`..."""
        producers = self._uses()[0]
        taken = lambda n: n in self.values or n in producers
        if not taken(base):
            return base
        i = 1
        while taken(f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    def unique_node_name(self, base: str) -> str:
        """`base`, or `base` with a suffix, that no node is called yet."""
        names = {n.name for n in self.nodes}
        i, name = 1, base
        while name in names:
            name, i = f"{base}_{i}", i + 1
        return name

    def add_const(self, base: str, array: np.ndarray) -> str:
        """A new constant Value holding `array`; returns its (unique) name."""
        name = self.unique_name(base)
        arr = np.asarray(array, order="C")
        self.values[name] = Value(name, tuple(int(d) for d in arr.shape), arr.dtype, arr)
        return name

    # Edits that keep the producer/consumer index up to date (O(readers), not O(graph)).
    def _drop_uses(self, node: Node) -> None:
        users = self._uses()[1]
        for i in dict.fromkeys(node.all_inputs()):
            lst = users.get(i)
            if lst is not None and node in lst:
                lst.remove(node)

    def _add_uses(self, node: Node) -> None:
        users = self._uses()[1]
        for i in dict.fromkeys(node.all_inputs()):
            lst = users.setdefault(i, [])
            if node not in lst:
                lst.append(node)

    def _rekey(self) -> None:
        if self._index is not None:
            self._index = ((id(self.nodes), len(self.nodes)),) + self._index[1:]

    def remove_node(self, node: Node) -> None:
        """Take `node` out of the graph (its output Values stay)."""
        producers = self._uses()[0]
        self._drop_uses(node)
        for o in node.outputs:
            if producers.get(o) is node:
                del producers[o]
        self.nodes.remove(node)
        self._rekey()

    def replace_node(self, old: Node, new: Node) -> None:
        """Put `new` where `old` was in the node order."""
        producers = self._uses()[0]
        self._drop_uses(old)
        for o in old.outputs:
            if producers.get(o) is old:
                del producers[o]
        self.nodes[self.nodes.index(old)] = new
        self._add_uses(new)
        for o in new.outputs:
            if o:
                producers[o] = new

    def set_inputs(self, node: Node, inputs: list[str]) -> None:
        """Rewire `node`'s inputs, keeping the use index current."""
        self._drop_uses(node)
        node.inputs = list(inputs)
        self._add_uses(node)

    def set_output(self, node: Node, index: int, name: str) -> None:
        """Rename `node`'s output `index`, keeping the use index current."""
        producers = self._uses()[0]
        old = node.outputs[index]
        if producers.get(old) is node:
            del producers[old]
        node.outputs[index] = name
        if name:
            producers[name] = node

    def replace_uses(self, old: str, new: str) -> None:
        """Every node reading `old` reads `new` instead (graph outputs are not touched)."""
        for n in self.consumers(old):
            self._drop_uses(n)
            n.inputs = [new if i == old else i for i in n.inputs]
            for key, v in list(n.attrs.items()):
                if isinstance(v, onnx.GraphProto):
                    n.attrs[key] = rename_outer_references(v, {old: new})
                elif isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto):
                    n.attrs[key] = [rename_outer_references(g, {old: new}) for g in v]
            self._add_uses(n)
        for k, target in self.aliases.items():
            if target == old:
                self.aliases[k] = new

    def rename_value(self, old: str, new: str) -> None:
        """Rename a tensor everywhere: its Value, its producer's output and its readers."""
        v = self.values.pop(old)
        v.name = new
        self.values[new] = v
        p = self.producer(old)
        if p is not None:
            self.set_output(p, p.outputs.index(old), new)
        self.replace_uses(old, new)
        self.input_names = [new if i == old else i for i in self.input_names]
        self.output_names = [new if o == old else o for o in self.output_names]

    def prune(self) -> None:
        """Drop nodes whose outputs nobody reads, then values nothing refers to."""
        live = set(self.output_names)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs if o):
                kept.append(n)
                live.update(n.all_inputs())
        self.nodes = kept[::-1]
        self.changed()
        referenced = (live | set(self.input_names) | {o for n in self.nodes for o in n.outputs if o}
                      | {f for n in self.nodes for f in n.fused})
        self.values = {k: v for k, v in self.values.items() if k in referenced}
        self.aliases = {k: t for k, t in self.aliases.items() if t in self.values}

    def copy(self) -> Graph:
        """A copy whose nodes and values can be edited freely (constant arrays are shared: passes
        never modify an array in place, they add a new constant)."""
        values = {k: Value(v.name, v.shape, v.dtype, v.const) for k, v in self.values.items()}
        nodes = [Node(n.name, n.op_type, list(n.inputs), list(n.outputs), copy.copy(n.attrs), n.domain,
                      list(n.origin), list(n.fused), n.expanded_from, n.body_problem) for n in self.nodes]
        return Graph(self.name, self.input_names, self.output_names, nodes, values, self.opset,
                     self.aliases, self.warnings)

    # -- checks
    def validate(self) -> None:
        """Assert the invariants the lowering relies on (for tests and after passes)."""
        defined = set(self.input_names) | {k for k, v in self.values.items() if v.is_const}
        names = set()
        for n in self.nodes:
            assert n.name not in names, f"duplicate node name {n.name!r}"
            names.add(n.name)
            for i in n.all_inputs():
                assert i in defined, f"node {n.name!r} reads {i!r} before it is defined"
                assert i in self.values, f"node {n.name!r} reads unknown value {i!r}"
            for o in n.outputs:
                if o:
                    assert o in self.values, f"node {n.name!r} output {o!r} has no Value"
                    defined.add(o)
        for o in self.output_names:
            assert o in defined, f"graph output {o!r} is never produced"
        for v in self.values.values():
            assert v.is_static, f"value {v.name!r} has no static shape: {v.shape}"

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={self.input_names}, "
                f"outputs={self.output_names})")

    def dump(self) -> str:
        """A readable listing, one node per line."""
        lines = [repr(self)]
        for n in self.nodes:
            ins = ", ".join(i or "-" for i in n.inputs)
            outs = ", ".join(f"{o}{list(self.values[o].shape) if o in self.values else ''}"
                             for o in n.outputs)
            extra = {k: v for k, v in n.attrs.items() if k.startswith(FUSED_ATTR_PREFIX)}
            lines.append(f"  {n.name}: {n.op_type}({ins}) -> {outs}" + (f" {extra}" if extra else ""))
        return "\n".join(lines)


def value_info(v: Value) -> onnx.ValueInfoProto:
    """The ONNX ValueInfo (name, element type, shape) of a value."""
    if v.dtype is None:
        return helper.make_empty_tensor_value_info(v.name)
    is_str = v.dtype == np.dtype(object)
    elem = onnx.TensorProto.STRING if is_str else helper.np_dtype_to_tensor_dtype(v.dtype)
    return helper.make_tensor_value_info(v.name, elem, None if v.shape is None else list(v.shape))


def rename_outer_references(g: onnx.GraphProto, mapping: dict[str, str]) -> onnx.GraphProto:
    """A copy of subgraph `g` where outer-scope names in `mapping` are renamed (names that `g`
    defines itself shadow the outer ones and are left alone)."""
    g = copy.deepcopy(g)
    _rename_in_place(g, mapping)
    return g


def _rename_in_place(g: onnx.GraphProto, mapping: dict[str, str]) -> None:
    local = ({i.name for i in g.input} | {t.name for t in g.initializer}
             | {o for n in g.node for o in n.output})
    live = {k: v for k, v in mapping.items() if k not in local}
    if not live:
        return
    for n in g.node:
        for j, i in enumerate(n.input):
            if i in live:
                n.input[j] = live[i]
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _rename_in_place(sub, live)
    for o in g.output:
        if o.name in live:  # the subgraph returns an outer value directly; outputs are positional
            o.name = live[o.name]
