"""Evaluate IR nodes on the host: for host fallback, constant folding and reference runs.

A node is evaluated by wrapping it into a small ONNX model (`host_node_model`: the node with its
fusions expanded back into plain ONNX nodes by `expand.expand_node`) and running
`onnx.reference.ReferenceEvaluator` on it (onnxruntime when the reference has no kernel, e.g. for
com.microsoft ops, or fails on the node). Evaluators are cached by the model's normalized form, so
nodes that differ only in tensor names share one.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from ..runtime.host_runner import ModelRunner
from .errors import CompileError, UnsupportedError
from .expand import expand_node
from .graph import Graph, Node

_CACHE_SIZE = 512
_evaluators: OrderedDict[bytes, ModelRunner] = OrderedDict()


def _elem_type(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype == np.dtype(object) or dtype.kind in "US":
        return onnx.TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(dtype)


def host_node_model(node: Node, graph: Graph, input_names: list[str] | None = None,
                    output_names: list[str] | None = None, name: str | None = None) -> onnx.ModelProto:
    """A self-contained ONNX model computing `node`, fusions included (the host-op payload).

    Its inputs are `node.all_inputs()` and its outputs the node's present outputs, typed from the
    graph; `input_names` / `output_names` rename them (one name per entry; not allowed for nodes
    with subgraphs, which refer to outer values by name)."""
    explicit = node.present_inputs()
    implicit = node.all_inputs()[len(explicit):]
    if implicit and (input_names is not None or output_names is not None):
        raise ValueError(f"node {node.name!r} has subgraphs reading outer values: "
                         "its tensors cannot be renamed")
    in_names = list(input_names) if input_names is not None else explicit + implicit
    rename = dict(zip(explicit, in_names))
    ins = [rename[i] if i else "" for i in node.inputs]
    present_outs = [o for o in node.outputs if o]
    out_names = list(output_names) if output_names is not None else present_outs
    out_map = dict(zip(present_outs, out_names))
    outs = [out_map[o] if o else "" for o in node.outputs]
    dtypes = [graph.values[o].dtype if o in graph.values else None for o in present_outs]
    first = dtypes[0] if dtypes and dtypes[0] is not None else np.dtype(np.float32)
    nodes, consts = expand_node(node, graph.opset, first, ins, outs, node.name if name is None else name)
    sources = dict(zip(in_names, explicit + implicit))
    g_inputs = []
    for n in dict.fromkeys(in_names):  # a node may read one tensor twice
        v = graph.values.get(sources[n])
        g_inputs.append(helper.make_tensor_value_info(n, _elem_type(v.dtype), None)
                        if v is not None and v.dtype is not None else helper.make_empty_tensor_value_info(n))
    g_outputs = [helper.make_tensor_value_info(o, _elem_type(dt), None) if dt is not None
                 else helper.make_empty_tensor_value_info(o) for o, dt in zip(out_names, dtypes)]
    g = helper.make_graph(nodes, "host_node", g_inputs, g_outputs, initializer=consts)
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items())]
    return helper.make_model(g, opset_imports=opsets, ir_version=min(onnx.IR_VERSION, 10))


def _evaluator(model: onnx.ModelProto, node: Node) -> ModelRunner:
    key = model.SerializeToString(deterministic=True)
    hit = _evaluators.get(key)
    if hit is not None:
        _evaluators.move_to_end(key)
        return hit
    try:
        run = ModelRunner(key, model)
    except Exception as exc:  # noqa: BLE001
        domain = f"{node.domain}." if node.domain else ""
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedError(f"node {node.name!r} ({domain}{node.op_type}) cannot be evaluated on the "
                               f"host: {reason}") from None
    _evaluators[key] = run
    if len(_evaluators) > _CACHE_SIZE:
        _evaluators.popitem(last=False)
    return run


def run_host_node(node: Node, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                  graph: Graph) -> list[np.ndarray | None]:
    """Evaluate `node` on the host.

    `inputs` is one array per name in `node.all_inputs()` (present inputs in order, then the
    outer-scope values its subgraphs read), or a mapping from those names to arrays. Returns one
    array per output name ("" outputs give None), cast to the dtypes the graph declares.
    """
    names = node.all_inputs()
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise CompileError(f"node {node.name!r}: no value given for input(s) {', '.join(missing)}")
        arrays = [np.asarray(inputs[n]) for n in names]
    else:
        arrays = [np.asarray(a) for a in inputs]
        if len(arrays) != len(names):
            raise CompileError(f"node {node.name!r} ({node.op_type}) takes {len(names)} input arrays "
                               f"({', '.join(names)}), got {len(arrays)}")
    explicit = node.present_inputs()
    present_outs = [o for o in node.outputs if o]
    if len(names) > len(explicit):  # subgraphs read outer names: keep the real ones
        model = host_node_model(node, graph)
        in_names = names
    else:  # normalized names let identical nodes share a cached evaluator
        in_names = [f"in{i}" for i in range(len(names))]
        out_names = [f"out{j}" for j in range(len(present_outs))]
        model = host_node_model(node, graph, in_names, out_names, name="n")
    feeds = dict(zip(in_names, arrays))
    for vi in model.graph.input:  # the arrays given decide the input types
        vi.type.tensor_type.elem_type = _elem_type(feeds[vi.name].dtype)
    run = _evaluator(model, node)
    try:
        outs = list(run(feeds))
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise CompileError(f"host evaluation of node {node.name!r} ({node.op_type}) failed: "
                           f"{type(exc).__name__}: {text}") from exc
    results: list[np.ndarray | None] = []
    it = iter(outs)
    for o in node.outputs:
        if not o:
            results.append(None)
            continue
        arr = np.asarray(next(it))
        dt = graph.values[o].dtype if o in graph.values else None
        if dt is not None and arr.dtype != dt and dt != np.dtype(object):
            arr = arr.astype(dt)
        results.append(arr)
    return results


def run_graph_reference(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the whole IR on the host. Returns every non-constant value plus the graph outputs."""
    missing = [n for n in graph.input_names if n not in feeds]
    unknown = sorted(set(feeds) - set(graph.input_names))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"]
                                                                          if unknown else [])
        raise CompileError(f"feeds do not match the graph inputs ({', '.join(graph.input_names)}): "
                           + "; ".join(parts))
    env: dict[str, np.ndarray] = {k: v.const for k, v in graph.values.items() if v.is_const}
    for name in graph.input_names:
        env[name] = np.asarray(feeds[name])
    for node in graph.nodes:
        outs = run_host_node(node, [env[n] for n in node.all_inputs()], graph)
        for o, a in zip(node.outputs, outs):
            if o:
                env[o] = a
    return {k: v for k, v in env.items() if not graph.is_const(k) or k in graph.output_names}
