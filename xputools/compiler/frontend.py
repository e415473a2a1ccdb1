"""ONNX front end: load a model file, bind its input shapes, fold constants, build the IR.

`import_model` produces a `Graph` where every value has a static shape:
1. model-local functions are inlined and models below opset 13 are converted up to 13 (when the
   converter cannot, the original opset is kept and a warning recorded);
2. symbolic or unknown input dims are bound from `shapes` (a dim name bound once, e.g. 'batch',
   applies to every input that uses it);
3. ONNX shape inference runs with data propagation;
4. constant folding: a node whose inputs are all constants is evaluated once on the host
   (`host.run_host_node`) and becomes a constant; Shape/Size of a tensor with a static shape fold
   too; an `If` whose condition folds is replaced by its branch. DequantizeLinear of a constant is
   kept (it carries the int8 weights of QDQ models) and random ops never fold. Steps 3-4 repeat
   until nothing changes;
5. if some shape is still unknown, the whole graph is run once on the host with zero inputs to learn
   every intermediate shape (recorded in `Graph.warnings`; ops whose output shape depends on the
   input values, e.g. NonZero, are rejected instead because no static shape exists);
6. a node the device cannot run whose op ONNX defines by a function body (Attention, RMSNormalization,
   Elu, CastLike...) is replaced by that body when all of it runs on the device (functions.py).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from .errors import CompileError, UnsupportedError
from .expand import graph_to_onnx
from .functions import expand_functions
from .graph import Graph, Node, Value, attr_to_python, rename_outer_references
from .host import run_graph_reference, run_host_node

TARGET_MIN_OPSET = 13
MAX_FOLD_ROUNDS = 8
FOLD_MAX_BYTES = 64 << 20  # do not fold a node into a constant larger than this (unless inputs are)
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli", "DequantizeLinear"}
DATA_DEPENDENT_SHAPE_OPS = {"NonZero", "Unique", "NonMaxSuppression", "Compress", "StringSplit"}

Shapes = Mapping[str, "tuple[int, ...] | list[int]"]

# input positions that decide an op's output shape: they must be constant after folding
SHAPE_SLOTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3),
    "Resize": (1, 2, 3), "Upsample": (1,), "Unsqueeze": (1,), "Squeeze": (1,), "Split": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceL2": (1,),
    "ReduceL1": (1,), "ReduceProd": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,), "TopK": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2), "OneHot": (1,),
    "CenterCropPad": (1,), "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,),
    "AffineGrid": (1,), "MelWeightMatrix": (0, 1), "DFT": (1, 2), "STFT": (1, 3), "MaxUnpool": (2,),
    "Col2Im": (1, 2),
}


# ---- loading -------------------------------------------------------------------------------------
def load_model(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview | onnx.ModelProto
               ) -> onnx.ModelProto:
    """Read and check an ONNX model (a path, its bytes, or an in-memory ModelProto, which is checked
    but not copied); any problem is a one-line CompileError."""
    base_dir: Path | None = None
    if isinstance(path_or_bytes, onnx.ModelProto):
        return _check_structure(path_or_bytes, None, "model")
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, label = bytes(path_or_bytes), "model bytes"
    else:
        path = Path(path_or_bytes)
        label = str(path)
        if not path.exists():
            raise CompileError(f"{label}: no such file")
        if not path.is_file():
            raise CompileError(f"{label}: not a file (expected an .onnx model)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CompileError(f"{label}: cannot read: {exc.strerror or exc}") from None
        base_dir = path.parent
    if not data:
        raise CompileError(f"{label}: empty file, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        problem = _diagnose_wire(data) or f"corrupt file or not an ONNX model ({_condense(str(exc), 120)})"
        raise CompileError(f"{label}: {problem}") from None
    return _check_structure(model, base_dir, label)


def _check_structure(model: onnx.ModelProto, base_dir: Path | None, label: str) -> onnx.ModelProto:
    if not model.HasField("graph"):
        raise CompileError(f"{label}: not an ONNX model (no graph)")
    if not model.opset_import:
        raise CompileError(f"{label}: the model declares no opset (opset_import is empty); "
                           "the file may be truncated")
    if not model.graph.node:
        raise CompileError(f"{label}: the model's graph has no nodes: nothing to compile")
    _load_external_data(model, base_dir, label)
    try:
        onnx.checker.check_model(_with_io_shapes(model), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise CompileError(f"{label}: invalid ONNX model: {_condense(str(exc))}") from None
    return model


def _with_io_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ONNX IR allows a graph input or output without a shape (any shape) but the checker
    insists on the field (onnx/onnx#2932): check a copy where such fields are present."""
    io = list(model.graph.input) + list(model.graph.output)
    if all(vi.type.WhichOneof("value") != "tensor_type" or vi.type.tensor_type.HasField("shape")
           for vi in io):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for vi in list(copy.graph.input) + list(copy.graph.output):
        if vi.type.WhichOneof("value") == "tensor_type" and not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
    return copy


def _condense(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_LEN_TYPES = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE}
# field number -> (name, protobuf wire type: 2 = length-delimited, 0 = varint)
_MODEL_FIELDS = {f.number: (f.name, 2 if f.type in _LEN_TYPES else 0)
                 for f in onnx.ModelProto.DESCRIPTOR.fields}


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            return None
    return None


def _diagnose_wire(data: bytes) -> str | None:
    """Walk the top-level protobuf fields of a ModelProto: tell a file that is not ONNX at all
    from one that was cut short. None when the structure is sound."""
    pos = 0
    seen: list[str] = []
    while pos < len(data):
        tag = _read_varint(data, pos)
        if tag is None:
            return _cut("a field tag") if seen else "not an ONNX model (not a protobuf ModelProto)"
        key, pos = tag
        number, wire = key >> 3, key & 7
        field = _MODEL_FIELDS.get(number)
        if field is None or field[1] != wire:
            what = "not an ONNX model" if not seen else "corrupt ONNX model"
            return f"{what} (unexpected protobuf field {number} wire type {wire} at byte {pos})"
        name = field[0]
        if wire == 0:
            got = _read_varint(data, pos)
            if got is None:
                return _cut(f"field '{name}'")
            pos = got[1]
        else:
            got = _read_varint(data, pos)
            if got is None:
                return _cut(f"the length of field '{name}'")
            length, pos = got
            if pos + length > len(data):
                return (f"truncated file: field '{name}' needs {length} bytes but only {len(data) - pos} "
                        f"remain ({len(data)} bytes in total); re-export or re-download the model")
            pos += length
        seen.append(name)
    return None


def _cut(what: str) -> str:
    return f"truncated file: it ends inside {what}; re-export or re-download the model"


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            yield from a.tensors
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_tensors(sub)


def _load_external_data(model: onnx.ModelProto, base_dir: Path | None, label: str) -> None:
    external = [t for t in _all_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return
    if base_dir is None:
        raise CompileError(f"{label}: the model keeps tensor data in external files; load it from its path "
                           "so that the files next to it can be found")
    for t in external:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if not _inside(base_dir, location):  # the same words whether such a file exists or not
            raise CompileError(f"{label}: external data file {location!r} for tensor {t.name!r} is not a plain "
                               "file name inside the model's directory; refusing to read it")
        if not location or not (base_dir / location).is_file():
            raise CompileError(f"{label}: external data file {location!r} for tensor {t.name!r} is missing "
                               f"(looked in {base_dir}); copy it next to the model")
    try:
        onnx.load_external_data_for_model(model, str(base_dir))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise CompileError(f"{label}: cannot read external data: {_condense(str(exc))}") from None


def _inside(base_dir: Path, location: str) -> bool:
    """Whether `location` names a file inside `base_dir` by its spelling alone (relative, no '..',
    no link on the way), so the answer says nothing about files elsewhere."""
    rel = Path(location)
    if not location or rel.is_absolute() or rel.drive or ".." in rel.parts or "\\" in location:
        return False
    path = base_dir
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            return False
    return True


# ---- shapes given by the user --------------------------------------------------------------------
MAX_SHAPE_DIM = 2**31 - 1
MAX_ZERO_RUN_BYTES = 1 << 30


def parse_shape_spec(spec: str) -> tuple[str, tuple[int, ...]]:
    """`"x=1x3x224x224"` -> `("x", (1, 3, 224, 224))`; `"x="` is a scalar."""
    name, sep, dims = spec.rpartition("=")
    if not sep or not name:
        raise CompileError(f"--shape {spec!r}: expected NAME=DIMS, e.g. --shape x=1x3x224x224")
    if not dims.strip():
        return name, ()
    parts = [p.strip() for p in re.split(r"[x,]", dims.strip())]
    # ASCII digits only: str.isdigit() also accepts '²', which int() then rejects
    if not all(re.fullmatch(r"[0-9]{1,12}", p) for p in parts):
        raise CompileError(f"--shape {spec!r}: dims must be integers (ASCII digits) separated by 'x', "
                           "e.g. x=1x3x224x224")
    shape = tuple(int(p) for p in parts)
    if any(d > MAX_SHAPE_DIM for d in shape):
        raise CompileError(f"--shape {spec!r}: a dim larger than {MAX_SHAPE_DIM} cannot fit the device")
    return name, shape


def _fmt_dims(dims) -> str:
    return "x".join("?" if not isinstance(d, int) else str(d) for d in dims) or "scalar"


# Dim names exporters write for "unknown": each occurrence is its own unknown, never one shared symbol.
ANONYMOUS_DIM_PARAMS = frozenset({"?", "-1", "unk", "None", "none"})


def _declared_dims(vi: onnx.ValueInfoProto, zero_is_unknown: bool = True) -> list[int | str | None] | None:
    """The declared dims of `vi`: an int for a fixed dim, a name for a symbol shared across inputs, None
    for an independent unknown (`-1`, `0`, an empty or anonymous name such as PaddlePaddle's `'?'`)."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and (d.dim_value > 0 or (d.dim_value == 0 and not zero_is_unknown)):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param.strip() and d.dim_param.strip() not in ANONYMOUS_DIM_PARAMS:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _zero_axes(vi: onnx.ValueInfoProto) -> set[int]:
    """Axes declared 0: some exporters mean "unknown" (bindable by --shape), others a truly empty tensor."""
    dims = vi.type.tensor_type.shape.dim
    return {axis for axis, d in enumerate(dims) if d.HasField("dim_value") and d.dim_value == 0}


def _bind_input_shapes(graph: onnx.GraphProto, shapes: Shapes) -> None:
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    names = [i.name for i in inputs]
    for given in shapes:
        if given not in names:
            what = "is not an input"
            if given in init_names:
                what = "is an initializer (a constant), not an input"
            raise CompileError(f"--shape {given}: {given!r} {what}; "
                               f"the model's inputs are: {', '.join(names)}")
    for vi in inputs:
        if vi.type.WhichOneof("value") != "tensor_type":
            raise UnsupportedError(f"input {vi.name!r} has type {vi.type.WhichOneof('value')}: "
                                   "only tensor inputs are supported")
    declared = {vi.name: _declared_dims(vi) for vi in inputs}
    # A dim name ('batch') bound through one input binds it in every input that uses it.
    params: dict[str, tuple[int, str]] = {}
    for name, given in shapes.items():
        given = tuple(given)
        if any((not isinstance(d, (int, np.integer))) or d < 1 for d in given):
            raise CompileError(f"--shape {name}: dims must be integers >= 1, got {_fmt_dims(given)}")
        dims = declared[name]
        if dims is not None:
            if len(given) != len(dims):
                raise CompileError(f"--shape {name}={_fmt_dims(given)} has rank {len(given)} but input "
                                   f"{name!r} has rank {len(dims)} ({_fmt_dims(dims)})")
            for axis, (d, g) in enumerate(zip(dims, given)):
                if isinstance(d, int) and d != g:
                    raise CompileError(f"--shape {name}={_fmt_dims(given)}: input {name!r} dim {axis} "
                                       f"is {d} in the model, not {g}")
                if isinstance(d, str):
                    prev = params.setdefault(d, (int(g), name))
                    if prev[0] != g:
                        raise CompileError(f"dim {d!r} is bound to {prev[0]} by input {prev[1]!r} "
                                           f"and to {g} by input {name!r}")
    bound: dict[str, tuple[int, ...]] = {}
    unbound: list[str] = []
    examples: list[str] = []
    for name in names:
        if name in shapes:
            bound[name] = tuple(int(d) for d in shapes[name])
            continue
        dims = declared[name]
        if dims is None:
            unbound.append(f"input {name} (rank unknown)")
            examples.append(f"--shape {name}=<d0>x<d1>...")
            continue
        resolved, missing = [], []
        zero_axes = _zero_axes(next(vi for vi in inputs if vi.name == name))
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                resolved.append(d)
            elif isinstance(d, str) and d in params:
                resolved.append(params[d][0])
            elif axis in zero_axes:  # an empty tensor as declared, unless --shape binds the dim
                resolved.append(0)
            else:
                resolved.append(None)
                missing.append(f"input {name} dim {axis} ({repr(d) if d else 'unnamed'})")
        if missing:
            unbound.extend(missing)
            dims_text = "x".join(str(1 if d is None else d) for d in resolved) or "<scalar>"
            examples.append(f"--shape {name}={dims_text}")
        else:
            bound[name] = tuple(resolved)
    if unbound:
        raise CompileError(f"unbound input dimensions: {', '.join(unbound)}; bind them with "
                           f"{' '.join(examples)}")
    for vi in inputs:
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for d in bound[vi.name]:
            shape.dim.add().dim_value = d


# ---- import --------------------------------------------------------------------------------------
def import_model(model: onnx.ModelProto, shapes: Shapes | None = None,
                 frozen: Mapping[str, np.ndarray] | None = None) -> Graph:
    """The IR of `model` with every shape static and constant subgraphs folded (module docstring).
    `frozen` turns inputs into constants (e.g. the shape or axes inputs a static compile needs)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    warnings: list[str] = []
    if frozen:
        _freeze_inputs(work.graph, frozen)
    if work.functions:
        from onnx import inliner

        work = inliner.inline_local_functions(work)
    work = _upgrade_opset(work, warnings)
    _spell_out_defaults(work.graph)
    _bind_input_shapes(work.graph, dict(shapes or {}))
    del work.graph.value_info[:]
    for o in work.graph.output:  # declared output dims may be symbolic or stale; inference redoes them
        if o.type.WhichOneof("value") == "tensor_type":
            o.type.tensor_type.ClearField("shape")
    work, strict_error = _infer_shapes(work)
    if strict_error:
        warnings.append(f"ONNX shape inference (strict mode) reported: {strict_error}; import continued")
    graph = _build_graph(work, warnings)
    _fold_until_stable(graph)
    _require_static_shapes(graph, strict_error)
    graph.prune()
    if expand_functions(graph, _settle):
        _fold_until_stable(graph)  # an expanded node's output may have folded into a constant
        graph.prune()
    graph.validate()
    return graph


def _fold_until_stable(graph: Graph) -> None:
    for _ in range(MAX_FOLD_ROUNDS):
        changed = _fold_constants(graph)
        graph.prune()
        if not changed:
            break
        _reinfer(graph)


def _settle(graph: Graph) -> None:
    """Steps 3-5 for a graph whose new nodes have no shapes yet (an expanded function body)."""
    _reinfer(graph)
    _fold_until_stable(graph)
    _require_static_shapes(graph, "")
    graph.prune()


def _spell_out_defaults(graph: onnx.GraphProto) -> None:
    """Write attribute defaults that ONNX shape inference gets wrong: STFT's `onesided` defaults to 1,
    but inference reads a missing attribute as 0 and gives the full spectrum's length."""
    for node in graph.node:
        if node.op_type == "STFT" and node.domain in ("", "ai.onnx") and \
                not any(a.name == "onesided" for a in node.attribute):
            node.attribute.append(helper.make_attribute("onesided", 1))


def _freeze_inputs(graph: onnx.GraphProto, frozen: Mapping[str, np.ndarray]) -> None:
    init_names = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in init_names]
    for name, value in frozen.items():
        if name not in names:
            raise CompileError(f"--const-inputs {name}: not an input; the model's inputs are: {', '.join(names)}")
        vi = next(i for i in graph.input if i.name == name)
        want = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        graph.initializer.append(numpy_helper.from_array(np.asarray(value).astype(want), name))
        graph.input.remove(vi)


def _opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def _upgrade_opset(model: onnx.ModelProto, warnings: list[str]) -> onnx.ModelProto:
    version = _opset_of(model)
    if not version or version >= TARGET_MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, TARGET_MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; the model still imports
        warnings.append(f"could not convert opset {version} to {TARGET_MIN_OPSET} "
                        f"({_condense(str(exc), 160)}); kept opset {version}")
        return model
    # Some adapters change the model's interface (Scan 8 -> 9 drops the batch dim of the graph inputs):
    # the user feeds the model's own inputs, so such a conversion is not taken.
    if _interface(converted) != _interface(model):
        warnings.append(f"converting opset {version} to {TARGET_MIN_OPSET} would change the model's input or "
                        f"output types; kept opset {version}")
        return model
    return converted


def _interface(model: onnx.ModelProto) -> list[bytes]:
    return [vi.type.SerializeToString() for vi in list(model.graph.input) + list(model.graph.output)]


def _infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    from onnx import shape_inference

    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True), ""
    except Exception as exc:  # noqa: BLE001 - InferenceError / ValidationError / RuntimeError
        strict_error = _condense(str(exc), 240)
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True), strict_error
    except Exception:  # noqa: BLE001
        return model, strict_error


def _type_of(vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...] | None, np.dtype | None]:
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        return None, None
    tt = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
    dims = _declared_dims(vi, zero_is_unknown=False)  # inferred shapes: 0 is an empty tensor
    shape = tuple(dims) if dims is not None and all(isinstance(d, int) for d in dims) else None
    return shape, dtype


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(sp.dims)), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, tuple(sp.dims))
    dense[flat] = values
    return dense.reshape(tuple(sp.dims))


def _build_graph(model: onnx.ModelProto, warnings: list[str]) -> Graph:
    g = model.graph
    values: dict[str, Value] = {}

    def record(vi: onnx.ValueInfoProto) -> None:
        if not vi.name:
            return
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            raise UnsupportedError(f"tensor {vi.name!r} has type {vi.type.WhichOneof('value')}: "
                                   "sequence, map and optional values are not supported")
        shape, dtype = _type_of(vi)
        old = values.get(vi.name)
        if old is None:
            values[vi.name] = Value(vi.name, shape, dtype)
        else:
            old.shape = old.shape if shape is None else shape
            old.dtype = old.dtype if dtype is None else dtype

    init_names = set()
    for t in g.initializer:
        arr = numpy_helper.to_array(t)
        values[t.name] = Value(t.name, tuple(int(d) for d in arr.shape), arr.dtype, arr)
        init_names.add(t.name)
    for sp in g.sparse_initializer:
        arr = _sparse_to_dense(sp)
        values[sp.values.name] = Value(sp.values.name, arr.shape, arr.dtype, arr)
        init_names.add(sp.values.name)
    input_names = [i.name for i in g.input if i.name not in init_names]
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.name not in init_names:
            record(vi)
    nodes: list[Node] = []
    taken = {n.name for n in g.node if n.name}
    used: set[str] = set()
    for i, n in enumerate(g.node):
        name = n.name
        if not name or name in used:
            base = f"{n.op_type}_{i}"
            name = base
            k = 1
            while name in taken or name in used:
                name, k = f"{base}_{k}", k + 1
        used.add(name)
        attrs = {a.name: attr_to_python(a) for a in n.attribute}
        domain = n.domain if n.domain != "ai.onnx" else ""
        nodes.append(Node(name, n.op_type, list(n.input), list(n.output), attrs, domain,
                          origin=[n.name or name]))  # a duplicate ONNX name stays the user's name
        for o in n.output:
            if o and o not in values:
                values[o] = Value(o, None, None)
    for node in nodes:
        for name in node.present_inputs():
            if name not in values:
                raise CompileError(f"node {node.name!r} reads {name!r}, which no node, input or "
                                   "initializer defines")
    opset = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in model.opset_import}
    return Graph(g.name, input_names, [o.name for o in g.output], nodes, values, opset, warnings=warnings)


# ---- constant folding ----------------------------------------------------------------------------
def _shape_only_result(node: Node, graph: Graph) -> np.ndarray | None:
    """Shape/Size of a tensor whose shape is static (its data may be unknown)."""
    if node.op_type not in ("Shape", "Size") or node.domain:
        return None
    src = graph.values.get(node.input(0))
    if src is None or not src.is_static:
        return None
    if node.op_type == "Size":
        return np.array(src.size, dtype=np.int64)
    rank = len(src.shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(src.shape[start:end], dtype=np.int64)


def _foldable(node: Node, graph: Graph) -> bool:
    if node.op_type in NEVER_FOLD and not node.domain:
        return False
    if not all(graph.is_const(i) for i in node.all_inputs()):
        return False
    out = [graph.values.get(o) for o in node.outputs if o]
    expected = sum(v.nbytes for v in out if v is not None and v.is_static and v.dtype is not None)
    given = sum(graph.values[i].const.nbytes for i in node.all_inputs())
    return expected <= max(FOLD_MAX_BYTES, given)


def _set_const(graph: Graph, name: str, array: np.ndarray) -> None:
    array = np.asarray(array, order="C")
    v = graph.values[name]
    v.const, v.shape, v.dtype = array, tuple(int(d) for d in array.shape), array.dtype


def _fold_constants(graph: Graph) -> bool:
    """One sweep over the nodes; True if anything folded or was inlined."""
    changed = False
    pending = list(reversed(graph.nodes))
    kept: list[Node] = []
    graph.nodes = kept  # so that helpers see the nodes kept so far while splicing
    while pending:
        node = pending.pop()
        if node.op_type == "If" and not node.domain and graph.is_const(node.input(0)):
            cond = bool(np.asarray(graph.const(node.input(0))).reshape(-1)[0])
            spliced = _inline_if(graph, node, cond, kept + pending)
            pending.extend(reversed(spliced))
            changed = True
            continue
        shape_value = _shape_only_result(node, graph)
        if shape_value is not None:
            _set_const(graph, node.outputs[0], shape_value)
            changed = True
            continue
        if _foldable(node, graph):
            try:
                outs = run_host_node(node, [graph.const(i) for i in node.all_inputs()], graph)
            except CompileError as exc:
                graph.warnings.append(f"node {node.name!r} ({node.op_type}) has constant inputs but was not "
                                      f"folded: {_condense(str(exc), 160)}")
                kept.append(node)
                continue
            if sum(a.nbytes for a in outs if a is not None) <= max(
                    FOLD_MAX_BYTES, sum(graph.const(i).nbytes for i in node.all_inputs())):
                for o, a in zip(node.outputs, outs):
                    if o:
                        _set_const(graph, o, a)
                changed = True
                continue
        kept.append(node)
    graph.nodes = kept
    return changed


def _inline_if(graph: Graph, node: Node, cond: bool, others: list[Node]) -> list[Node]:
    """The nodes of the taken branch, with branch-local names made unique in the outer graph and the
    branch outputs renamed to the If's outputs."""
    branch: onnx.GraphProto = node.attrs["then_branch" if cond else "else_branch"]
    taken = set(graph.values) | {n.name for n in others} | {o for n in others for o in n.outputs}
    local = [o for n in branch.node for o in n.output if o] + [t.name for t in branch.initializer]
    mapping: dict[str, str] = {}
    for out_name, target in zip((o.name for o in branch.output), node.outputs):
        if out_name in local and out_name not in mapping and target:
            mapping[out_name] = target
    for name in local:
        if name not in mapping:
            fresh, k = name, 1
            while fresh in taken:
                fresh, k = f"{node.name}/{name}" + (f"_{k}" if k > 1 else ""), k + 1
            mapping[name] = fresh
            taken.add(fresh)
    for t in branch.initializer:
        arr = numpy_helper.to_array(t)
        graph.values[mapping[t.name]] = Value(mapping[t.name], arr.shape, arr.dtype, arr)
    out: list[Node] = []
    node_names = {n.name for n in others}
    for i, bn in enumerate(branch.node):
        name = bn.name or f"{bn.op_type}_{i}"
        name = f"{node.name}/{name}" if name in node_names else name
        while name in node_names:
            name += "_"
        node_names.add(name)
        attrs = {}
        for a in bn.attribute:
            v = attr_to_python(a)
            if isinstance(v, onnx.GraphProto):
                v = rename_outer_references(v, mapping)
            elif isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto):
                v = [rename_outer_references(s, mapping) for s in v]
            attrs[a.name] = v
        outs = [mapping.get(o, o) if o else "" for o in bn.output]
        out.append(Node(name, bn.op_type, [mapping.get(i, i) if i else "" for i in bn.input], outs, attrs,
                        bn.domain if bn.domain != "ai.onnx" else "", origin=[bn.name or name]))
        for o in outs:
            if o and o not in graph.values:
                graph.values[o] = Value(o, None, None)
    # Branch outputs that are not computed by a branch node: an outer value or a branch constant.
    for out_vi, target in zip(branch.output, node.outputs):
        src = mapping.get(out_vi.name, out_vi.name)
        if not target or src == target:
            continue
        if graph.is_const(src):
            _set_const(graph, target, graph.const(src))
        else:
            out.append(Node(f"{node.name}/Identity_{target}", "Identity", [src], [target],
                            origin=[node.name]))
    return out


def _reject_value_dependent_shapes(graph: Graph, unknown: list[str]) -> None:
    """A shape decided by a run-time value (Reshape's shape, Slice's starts, ... fed by an input)
    cannot be learned by running on zeros: say which inputs to freeze."""
    for n in graph.nodes:
        if not any(o in unknown for o in n.outputs):
            continue
        for pos in SHAPE_SLOTS.get(n.op_type, ()):
            name = n.input(pos)
            if name and not graph.is_const(name):
                sources = _graph_inputs_feeding(graph, name)
                raise CompileError(
                    f"node {n.name!r} ({n.op_type}): its output shape depends on the run-time value of "
                    f"{name!r} (from input {', '.join(sources) or '?'}); freeze it with "
                    f"--const-inputs FILE.npz holding {', '.join(sources) or name}")


def _refuse_shapes_that_move(graph: Graph, unknown: list[str], zero_env: Mapping[str, np.ndarray]) -> None:
    """A second run on other input values (ones) must give the shapes the zero run gave: a shape that
    moves is decided by an input's value (a window size, a grid size fed by an input), and a shape
    learned from zeros would be silently wrong. The run failing proves nothing either way."""
    feeds = {v.name: np.ones(v.shape, dtype=v.dtype) for v in graph.inputs}
    try:
        with np.errstate(all="ignore"):
            env = run_graph_reference(graph, feeds)
    except CompileError:
        return
    for name in unknown:
        a, b = zero_env.get(name), env.get(name)
        if a is None or b is None or np.shape(a) == np.shape(b):
            continue
        sources = _graph_inputs_feeding(graph, name)
        p = graph.producer(name)
        where = f"node {p.name!r} ({p.op_type})" if p is not None else f"value {name!r}"
        raise CompileError(f"{where}: the shape of {name!r} depends on the run-time value of input "
                           f"{', '.join(sources) or '?'}; freeze it with --const-inputs FILE.npz holding "
                           f"{', '.join(sources) or name}")


def _graph_inputs_feeding(graph: Graph, name: str) -> list[str]:
    seen, stack, found = set(), [name], []
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        if cur in graph.input_names:
            found.append(cur)
            continue
        p = graph.producer(cur)
        if p is not None:
            stack.extend(i for i in p.all_inputs() if not graph.is_const(i))
    return sorted(found)


def _reinfer(graph: Graph) -> None:
    """Run ONNX shape inference on the current IR and take every static shape it finds."""
    model = graph_to_onnx(graph, keep_value_info=False)
    inferred, _ = _infer_shapes(model)
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        v = graph.values.get(vi.name)
        if v is None or v.is_const:
            continue
        shape, dtype = _type_of(vi)
        if shape is not None:
            v.shape = shape
        if dtype is not None:
            v.dtype = dtype


def _require_static_shapes(graph: Graph, strict_error: str) -> None:
    unknown = [v.name for v in graph.values.values() if not v.is_static or v.dtype is None]
    if not unknown:
        return
    for n in graph.nodes:
        if n.op_type in DATA_DEPENDENT_SHAPE_OPS and any(o in unknown for o in n.outputs):
            raise UnsupportedError(f"node {n.name!r} ({n.op_type}): its output shape depends on the input "
                                   "values; the XPU compiler needs static shapes")
        if n.op_type == "Loop" and not graph.is_const(n.input(0)) and any(o in unknown for o in n.outputs):
            raise UnsupportedError(f"node {n.name!r} (Loop): the length of its scan outputs depends on a "
                                   "trip count computed at run time; the XPU compiler needs static shapes")
    _reject_value_dependent_shapes(graph, unknown)
    zero_bytes = sum(v.nbytes for v in graph.inputs)
    if zero_bytes > MAX_ZERO_RUN_BYTES:
        raise CompileError(f"cannot determine static shapes for {', '.join(unknown[:5])}: learning them needs a "
                           f"run on {zero_bytes / 2**30:.3g} GiB of zero inputs (limit "
                           f"{MAX_ZERO_RUN_BYTES / 2**30:.3g} GiB): use smaller --shape values")
    feeds = {v.name: np.zeros(v.shape, dtype=v.dtype) for v in graph.inputs}
    try:
        env = run_graph_reference(graph, feeds)
    except CompileError as exc:
        hint = f" (shape inference: {strict_error})" if strict_error else ""
        raise CompileError(f"cannot determine static shapes for {', '.join(unknown[:5])}"
                           f"{'...' if len(unknown) > 5 else ''}: {_condense(str(exc), 200)}{hint}") from None
    _refuse_shapes_that_move(graph, unknown, env)
    for name in unknown:
        arr = env[name]
        v = graph.values[name]
        v.shape, v.dtype = tuple(int(d) for d in arr.shape), arr.dtype
    listed = ", ".join(unknown[:5]) + ("..." if len(unknown) > 5 else "")
    graph.warnings.append(f"shape inference left {len(unknown)} tensor shape(s) unknown ({listed}); they "
                          "were learned by running the graph once on zero inputs, which assumes they do not "
                          "depend on input values")
