"""Reference values of every ONNX tensor: ONNX Runtime in fp32 with every intermediate exposed
(the runtime's `ModelRunner`, the same code that runs host ops), or a saved device run (.npz).

Memory stays bounded: ORT is asked for the tensors in topological groups of at most `budget_bytes`,
and only the two most recently used groups are kept, so a big model never holds all of its
activations at once (a tensor asked for again after its group was dropped costs one more ORT run).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnx

from ..errors import UserError
from ..runtime.host_runner import ModelRunner, expose_values
from ..runtime.npz import read_npz

DEFAULT_BUDGET = 1 << 30
INPUT_PREFIX = "__input__/"


class OrtReference:
    """ONNX Runtime (optimisations off, CPU) values of the model's tensors for one sample at a time."""

    label = "onnxruntime"

    def __init__(self, model: onnx.ModelProto, names: list[str], nbytes: dict[str, int],
                 budget_bytes: int = DEFAULT_BUDGET):
        exposed = expose_values(model, names)
        try:
            self.runner = ModelRunner(exposed.SerializeToString(), exposed, engine="onnxruntime")
        except Exception as exc:  # noqa: BLE001 - onnxruntime rejects the model
            raise UserError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0]}") from None
        self.groups: list[list[str]] = []
        self.group_of: dict[str, int] = {}
        size = budget_bytes + 1
        for name in names:
            if size + nbytes.get(name, 0) > budget_bytes:
                self.groups.append([])
                size = 0
            self.groups[-1].append(name)
            self.group_of[name] = len(self.groups) - 1
            size += nbytes.get(name, 0)
        self.runs = 0
        self._feeds: dict[str, np.ndarray] = {}
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def start(self, feeds: dict[str, np.ndarray]) -> None:
        """Switch to an input sample (the cached values stay if it is the same sample)."""
        same = feeds.keys() == self._feeds.keys() and all(feeds[k] is self._feeds[k] for k in feeds)
        self._feeds = feeds
        if not same:
            self._cache.clear()

    def get(self, name: str) -> np.ndarray:
        g = self.group_of.get(name)
        if g is None:
            raise KeyError(name)
        hit = self._cache.get(g)
        if hit is None:
            names = self.groups[g]
            try:
                values = self.runner(self._feeds, names)
            except Exception as exc:  # noqa: BLE001 - inputs onnxruntime refuses
                raise UserError(f"onnxruntime cannot run the model on these inputs: "
                                f"{str(exc).splitlines()[0]}") from None
            self.runs += 1
            hit = self._cache[g] = dict(zip(names, (np.asarray(v) for v in values)))
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(g)
        return hit[name]

    def __contains__(self, name: str) -> bool:
        return name in self.group_of

    def prefetch(self) -> bool:
        """Compute every value of the current sample now, if they fit in memory at once."""
        if len(self.groups) > 1:
            return False
        if self.groups:
            self.get(self.groups[0][0])
        return True


class SavedRunReference:
    """Tensor values saved by `compare --save-run` (a device run compared with another one)."""

    def __init__(self, path):
        self.path = str(path)
        self.label = f"run:{path}"
        self.values = read_npz(path)
        self.runs = 0

    def inputs(self) -> dict[str, np.ndarray]:
        return {k[len(INPUT_PREFIX):]: v for k, v in self.values.items() if k.startswith(INPUT_PREFIX)}

    def start(self, feeds: dict[str, np.ndarray]) -> None:
        saved = self.inputs()
        for name, value in feeds.items():
            if name in saved and (saved[name].shape != np.shape(value) or not np.array_equal(saved[name], value)):
                raise UserError(f"{self.path}: was saved with other values of input {name}; "
                                "compare against it with the same inputs")

    def get(self, name: str) -> np.ndarray:
        return self.values[name]

    def prefetch(self) -> bool:
        return True

    def __contains__(self, name: str) -> bool:
        return name in self.values


class QdqDerivedReference:
    """A float model's reference extended to a QDQ model's quantized tensors: the value of
    `QuantizeLinear(x)` (or `DequantizeLinear` of one) computed from the float model's `x` with the
    node's constant scale and zero point, so a QDQ model on the device can be compared with the float
    model it was quantized from."""

    def __init__(self, base, qdq_model: onnx.ModelProto):
        from onnx import numpy_helper

        self.base, self.label = base, base.label
        consts = {i.name: numpy_helper.to_array(i) for i in qdq_model.graph.initializer}
        for node in qdq_model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.derived: dict[str, tuple[str, str, np.ndarray, np.ndarray]] = {}
        for node in qdq_model.graph.node:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
                continue
            scale = consts.get(node.input[1])
            zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if scale is None or scale.size != 1 or (zero is not None and zero.size != 1):
                continue  # per-channel: weights, which are constants anyway
            if zero is None:
                zero = np.zeros((), np.uint8 if node.op_type == "QuantizeLinear" else np.int8)
            self.derived[node.output[0]] = (node.op_type, node.input[0], scale, zero)

    @property
    def runs(self) -> int:
        return self.base.runs

    def start(self, feeds) -> None:
        self.base.start(feeds)

    def prefetch(self) -> bool:
        return self.base.prefetch()

    def __contains__(self, name: str) -> bool:
        if name in self.base:
            return True
        d = self.derived.get(name)
        return d is not None and d[1] in self

    def get(self, name: str) -> np.ndarray:
        if name in self.base:
            return self.base.get(name)
        op, src, scale, zero = self.derived[name]
        x = self.get(src)
        if op == "DequantizeLinear":
            return ((x.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)
        info = np.iinfo(zero.dtype)
        q = np.round(x.astype(np.float32) / scale.astype(np.float32)) + zero.astype(np.float32)
        return np.clip(q, info.min, info.max).astype(zero.dtype)
