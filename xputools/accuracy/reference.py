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

    def __contains__(self, name: str) -> bool:
        return name in self.values
