"""Running a program's host ops (`host_call`): each payload is a small ONNX model evaluated with
onnx's reference evaluator or onnxruntime. The accuracy tool's ORT reference uses the same runner."""
from __future__ import annotations

import numpy as np
import onnx

from device_model.dtypes import np_dtype
from device_model.machine import Machine

from ..errors import UserError

# Ops whose onnx.reference kernel gives wrong results, so onnxruntime runs them first (measured
# against the ONNX formulas): BatchNormalization before opset 14 uses batch statistics (it takes
# the default momentum for training), grouped ConvTranspose fails to reshape, LRN is off by ~10 %,
# LSTM/GRU/RNN ignore direction, sequence_lens, activations and clip.
PREFER_ONNXRUNTIME = {"BatchNormalization", "ConvTranspose", "LRN", "LSTM", "GRU", "RNN"}


class ModelRunner:
    """Runs one small model: the ONNX reference first; onnxruntime if the reference has no kernel
    for it or fails on it, from then on (and from the start for PREFER_ONNXRUNTIME ops)."""

    def __init__(self, model_bytes: bytes, model: onnx.ModelProto, engine: str = "auto"):
        """`engine="onnxruntime"` runs onnxruntime only (the accuracy tool's reference), with graph
        optimisations off so every ONNX tensor keeps its name and its unfused value."""
        self.model_bytes = model_bytes
        self.ort = None
        if engine == "onnxruntime":
            self.ort = self._ort_session(raise_errors=True)
            self.ref, self.ref_error = None, None
            return
        if any(n.op_type in PREFER_ONNXRUNTIME and n.domain in ("", "ai.onnx") for n in model.graph.node):
            self.ort = self._ort_session()
            if self.ort is not None:
                self.ref, self.ref_error = None, None
                return
        try:
            from onnx.reference import ReferenceEvaluator

            self.ref = ReferenceEvaluator(model)
            self.ref_error = None
        except Exception as exc:
            self.ref, self.ref_error = None, exc
            self.ort = self._ort_session()
            if self.ort is None:
                raise

    def _ort_session(self, raise_errors: bool = False):
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 4  # failures come back as exceptions; no coloured log line
            return ort.InferenceSession(self.model_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime cannot run it either
            if raise_errors:
                raise
            return None

    def __call__(self, feeds: dict, outputs: list[str] | None = None) -> list:
        """The values of `outputs` (default: all graph outputs) for `feeds`."""
        if self.ort is not None:
            return self._ort_run(feeds, outputs)
        try:
            return self.ref.run(outputs, feeds)
        except Exception:
            self.ort = self._ort_session()
            if self.ort is None:
                raise
            return self._ort_run(feeds, outputs)

    def _ort_run(self, feeds: dict, outputs: list[str] | None = None) -> list:
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        return self.ort.run(outputs, feeds, quiet)


def expose_values(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are its outputs plus `names` (intermediate tensors),
    so a runner can return any of them by name."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in have:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return exposed


def external_references(model: onnx.ModelProto) -> list[str]:
    """The files a model's tensors point to (external data), anywhere: initializers, Constant and
    other tensor attributes, subgraphs, local functions."""
    found: list[str] = []

    def tensor(t: onnx.TensorProto) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            where = {e.key: e.value for e in t.external_data}.get("location", "?")
            found.append(f"{t.name or 'tensor'} -> {where}")

    def sparse(t: onnx.SparseTensorProto) -> None:
        tensor(t.values)
        tensor(t.indices)

    def nodes(node_list) -> None:
        for node in node_list:
            for a in node.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                if a.HasField("sparse_tensor"):
                    sparse(a.sparse_tensor)
                for t in a.tensors:
                    tensor(t)
                for t in a.sparse_tensors:
                    sparse(t)
                if a.HasField("g"):
                    graph(a.g)
                for g in a.graphs:
                    graph(g)

    def graph(g: onnx.GraphProto) -> None:
        for t in g.initializer:
            tensor(t)
        for t in g.sparse_initializer:
            sparse(t)
        nodes(g.node)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node)
    return found


def check_host_op(host_op, max_payload: int) -> onnx.ModelProto:
    """A host op's payload parsed and vetted, or a UserError naming the host op: a readable ONNX
    model, self-contained (no external data: onnxruntime would open the file relative to the
    current directory), with one graph input per input tensor and one output per output tensor."""
    where = f"host op {host_op.name} ({host_op.op_type})"
    if len(host_op.payload) > max_payload:
        raise UserError(f"{where}: payload of {len(host_op.payload)} bytes is larger than {max_payload}")
    try:
        model = onnx.load_from_string(host_op.payload)
    except Exception as exc:  # noqa: BLE001 - untrusted payload: any failure is bad input
        raise UserError(f"{where}: unreadable payload ({type(exc).__name__})") from None
    refs = external_references(model)
    if refs:
        raise UserError(f"{where}: payload references external data ({refs[0]}); a program must be "
                        "self-contained")
    inputs = [n for n in host_op.inputs if n]
    outputs = [n for n in host_op.outputs if n]
    if len(model.graph.input) != len(inputs) or len(model.graph.output) != len(outputs):
        raise UserError(f"{where}: payload has {len(model.graph.input)} inputs and {len(model.graph.output)} "
                        f"outputs, the op has {len(inputs)} and {len(outputs)}")
    for vi in model.graph.input:
        try:
            onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        except Exception:  # noqa: BLE001
            raise UserError(f"{where}: payload input {vi.name!r} has no tensor dtype") from None
    return model


class OnnxHostRunner:
    """Runs a program's host ops: each payload is a small ONNX model (the node, fusions expanded),
    evaluated with onnx's reference evaluator (onnxruntime where the reference has no kernel) on
    the op's input tensors read from HBM; bool and float64 values, stored as u8 / f32 in HBM, are
    converted back to the dtypes the model declares."""

    MAX_PAYLOAD = 256 << 20

    def __init__(self):
        self._loaded: dict[int, tuple] = {}

    def check(self, program) -> None:
        """Vet every host op's payload before anything runs (see check_host_op)."""
        for host_op in program.host_ops:
            check_host_op(host_op, self.MAX_PAYLOAD)

    def _load(self, host_op):
        from onnx import helper

        model = check_host_op(host_op, self.MAX_PAYLOAD)
        try:
            runner = ModelRunner(host_op.payload, model)
        except Exception as exc:  # noqa: BLE001 - untrusted payload: any failure is bad input
            raise UserError(f"host op {host_op.name} ({host_op.op_type}): cannot evaluate its payload "
                            f"({_first_line(exc)})") from None
        dtypes = [helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type) for vi in model.graph.input]
        return runner, [vi.name for vi in model.graph.input], dtypes

    def __call__(self, host_op, machine: Machine) -> None:
        key = id(host_op)
        if key not in self._loaded:
            self._loaded[key] = self._load(host_op)
        runner, names, dtypes = self._loaded[key]
        tensors = [n for n in host_op.inputs if n]
        feeds = {name: machine.read_tensor(t).astype(dt, copy=False) for name, t, dt in zip(names, tensors, dtypes)}
        try:
            results = runner(feeds)
            for tensor, value in zip([n for n in host_op.outputs if n], results):
                t = machine.program.tensor(tensor)
                machine.write_tensor(tensor, np.asarray(value).astype(np_dtype(t.dtype)).reshape(t.shape))
        except Exception as exc:  # noqa: BLE001 - a payload that does not fit its tensors is bad input
            raise UserError(f"host op {host_op.name} ({host_op.op_type}): its payload does not match its "
                            f"tensors ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
