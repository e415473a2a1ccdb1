"""What the accuracy tool compares: every ONNX tensor of the model in topological order, the ONNX
node that produces it, and how the compiled program exposes it (a device or host tap, fused into a
consumer's tap, or not computed at all because it was folded into a constant)."""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from device_model.program import Program, Tap


@dataclass
class TensorInfo:
    name: str
    node: str  # the ONNX node producing it
    op: str
    shape: tuple[int, ...]
    engine: str  # "device" | "host" | "fused" | "const"
    group: str = ""  # the compiled node that computes it (what --keep names)
    nodes: list[str] = field(default_factory=list)  # every ONNX node that compiled node stands for
    fused_into: str = ""
    tap: Tap | None = None

    @property
    def compared(self) -> bool:
        return self.tap is not None


def graph_tensors(model: onnx.ModelProto, graph, program: Program) -> list[TensorInfo]:
    """One TensorInfo per output of every ONNX node (topological order, as ONNX stores nodes).

    `graph` is the compiled graph (`Compiled.graph`): its nodes name the ONNX nodes they stand for
    (`origin`) and the tensors fusion removed (`fused`)."""
    taps = {t.name: t for t in program.taps}
    host = {h.name for h in program.host_ops}
    owner = {}
    for n in graph.nodes:
        for name in list(n.outputs) + list(n.fused):
            if name:
                owner[name] = n
    for alias, target in getattr(graph, "aliases", {}).items():
        if target in owner:
            owner.setdefault(alias, owner[target])
    out: list[TensorInfo] = []
    for i, node in enumerate(model.graph.node):
        node_name = node.name or f"{node.op_type}_{i}"
        for name in node.output:
            if not name:
                continue
            v = graph.values.get(name)
            shape = tuple(v.shape) if v is not None and v.shape is not None else ()
            info = TensorInfo(name, node_name, node.op_type, shape, "const")
            compiled = owner.get(name)
            if compiled is not None:
                info.group = compiled.name
                info.nodes = list(getattr(compiled, "origin", None) or [compiled.name])
            tap = taps.get(name)
            if tap is not None and tap.fused_into:
                info.engine, info.fused_into = "fused", tap.fused_into
            elif tap is not None and tap.pieces:
                info.tap = tap
                info.engine = "host" if info.group in host else "device"
            out.append(info)
    return out
