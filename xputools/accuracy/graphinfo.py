"""What the accuracy tool compares: every ONNX tensor of the model in topological order, the ONNX
node that produces it, and how the compiled program exposes it (a device or host tap, fused into a
consumer's tap, or not computed at all because it was folded into a constant)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from device_model.program import Program, Tap


@dataclass
class TensorInfo:
    name: str
    node: str  # the ONNX node producing it
    op: str
    shape: tuple[int, ...] | None  # None: not known (a tensor folded away)
    engine: str  # "device" | "host" | "fused" | "const"
    group: str = ""  # the compiled node that computes it (what --keep names)
    group_op: str = ""  # its op type (e.g. Conv for a fused Conv+BatchNorm+Relu)
    nodes: list[str] = field(default_factory=list)  # every ONNX node that compiled node stands for
    fused_into: str = ""
    tap: Tap | None = None
    # int8 compilation stores some float tensors only quantized (the compiler's `fused_quantize`):
    # the tap then holds round(x / scale) + zero_point
    quant: tuple[float, int] | None = None
    # a QDQ model's QuantizeLinear output: device and reference both hold integer codes, compared
    # dequantized (a zero point would otherwise count as signal)
    codes: bool = False

    def as_reference(self, raw: np.ndarray) -> np.ndarray:
        """A tap's device value as ONNX Runtime would give this tensor (what --save-run stores)."""
        return raw if self.codes else self.from_device(raw)

    def comparable(self, ref: np.ndarray) -> np.ndarray:
        """A reference value in the space `from_device` returns (dequantized codes)."""
        return self.from_device(np.asarray(ref)) if self.codes else ref

    def from_device(self, value: np.ndarray) -> np.ndarray:
        """The tensor's value from its tap's device value (dequantized if stored int8)."""
        if self.quant is None:
            return value
        return (value.astype(np.float32) - np.float32(self.quant[1])) * np.float32(self.quant[0])

    def to_device(self, ref: np.ndarray) -> np.ndarray:
        """A reference value as the tap stores it (quantized as the device does if stored int8)."""
        if self.quant is None or self.codes:
            return ref
        scale, zero = self.quant
        q = np.round(np.asarray(ref, np.float32) / np.float32(scale)) + zero
        lo, hi = (0, 255) if self.tap.dtype == "u8" else (-128, 127)
        return np.clip(q, lo, hi)

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
    consts = _scalar_constants(model)
    out: list[TensorInfo] = []
    for i, node in enumerate(model.graph.node):
        node_name = node.name or f"{node.op_type}_{i}"
        for name in node.output:
            if not name:
                continue
            v = graph.values.get(name)
            shape = tuple(v.shape) if v is not None and v.shape is not None else None
            info = TensorInfo(name, node_name, node.op_type, shape, "const")
            compiled = owner.get(name)
            if compiled is not None:
                info.group, info.group_op = compiled.name, compiled.op_type
                info.nodes = list(getattr(compiled, "origin", None) or [compiled.name])
            tap = taps.get(name)
            if tap is not None and tap.fused_into:
                info.engine, info.fused_into = "fused", tap.fused_into
            elif tap is not None and tap.pieces:
                info.tap = tap
                info.engine = "host" if info.group in host else "device"
            if info.engine == "fused":
                _stored_quantized(info, taps, owner)
            elif info.compared and node.op_type == "QuantizeLinear":
                _quantize_linear_codes(info, node, consts)
            out.append(info)
    return out


def _scalar_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if int(np.prod(i.dims)) == 1}


def _quantize_linear_codes(info: TensorInfo, node, consts: dict[str, np.ndarray]) -> None:
    """A per-tensor QuantizeLinear output with constant scale (and zero point) is compared dequantized."""
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    if scale is None or zero is None:
        return
    info.quant, info.codes = (float(scale.reshape(())), int(zero.reshape(()))), True


def _stored_quantized(info: TensorInfo, taps: dict[str, Tap], owner: dict) -> None:
    """A float tensor fused into its own int8 form (`NAME/int8`, made by the node's fused
    QuantizeLinear) is compared through that tap, dequantized."""
    target = taps.get(info.fused_into)
    node = owner.get(info.fused_into)
    spec = getattr(node, "attrs", {}).get("fused_quantize") if node is not None else None
    if info.fused_into != f"{info.name}/int8" or target is None or not target.pieces or not spec:
        return
    info.tap, info.engine, info.fused_into = target, "device", ""
    info.quant = (float(spec["scale"]), int(spec.get("zero_point", 0)))
