"""Load a program on a device, bind inputs, run, read outputs and tensor taps.

This is the one device interface the tools use: today the emulated XPU (`device_model.Machine`);
a hardware backend would implement the same calls.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device_model.dtypes import np_dtype
from device_model.machine import Machine, RunResult
from device_model.program import Program, Tap

from .errors import UserError

MAX_NPZ_BYTES = 4 << 30


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz file (no pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(Path(path), **arrays)


def describe_tensors(tensors) -> str:
    return ", ".join(f"{t.name} {'x'.join(map(str, t.shape)) or 'scalar'} {np_dtype(t.dtype).name}"
                     for t in tensors)


def check_inputs(program: Program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds matched to the program's inputs by name, shape and dtype, or a UserError that lists
    what the program expects."""
    expected = program.inputs()
    want = describe_tensors(expected)
    names = {t.name for t in expected}
    unknown = sorted(set(feeds) - names)
    if unknown:
        raise UserError(f"unknown input {', '.join(unknown)}; the program expects: {want}")
    missing = sorted(names - set(feeds))
    if missing:
        raise UserError(f"missing input {', '.join(missing)}; the program expects: {want}")
    bound = {}
    for t in expected:
        arr = np.asarray(feeds[t.name])
        dt = np_dtype(t.dtype)
        if arr.shape != tuple(t.shape):
            raise UserError(f"input {t.name}: shape {'x'.join(map(str, arr.shape)) or 'scalar'} given; "
                            f"the program expects: {want}")
        if arr.dtype != dt and not (arr.dtype == np.bool_ and dt == np.uint8):
            raise UserError(f"input {t.name}: dtype {arr.dtype} given; the program expects: {want}")
        bound[t.name] = arr
    return bound


def random_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random feeds: standard normal for floats, small non-negative ints otherwise."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in program.inputs():
        dt = np_dtype(t.dtype)
        if dt.kind == "f" or dt.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            feeds[t.name] = rng.standard_normal(t.shape).astype(np.float32).astype(dt)
        else:
            feeds[t.name] = rng.integers(0, 8, size=t.shape).astype(dt)
    return feeds


class TapRecorder:
    """Observer that copies each tap's value out of device memory right after the instruction
    that makes it valid, so later reuse of the buffer does not matter."""

    def __init__(self, machine: Machine, taps: list[Tap], names: set[str] | None = None):
        self.machine = machine
        self.values: dict[str, np.ndarray] = {}
        self._due: dict[tuple[str, int], list[Tap]] = {}
        for tap in taps:
            if tap.pieces and (names is None or tap.name in names):
                self._due.setdefault((tap.after_engine, tap.after_index), []).append(tap)

    def on_complete(self, ev) -> None:
        for tap in self._due.get((ev.engine, ev.index), ()):
            self.values[tap.name] = read_tap(self.machine, tap)


def read_tap(machine: Machine, tap: Tap) -> np.ndarray:
    """A tap's logical value (in its logical dtype and shape) from current device memory."""
    size = int(np.prod(tap.shape)) if tap.shape else 1
    wide = np.int64 if np_dtype(tap.dtype).kind in "iub" else np.float64
    flat = np.zeros(size, dtype=wide)
    for piece in tap.pieces:
        values = machine.memory.view(piece.ap).astype(wide)
        index = np.full(piece.ap.shape, piece.offset, dtype=np.int64)
        for axis, stride in enumerate(piece.strides):
            shape = [1] * len(piece.ap.shape)
            shape[axis] = piece.ap.shape[axis]
            index = index + np.arange(piece.ap.shape[axis], dtype=np.int64).reshape(shape) * stride
        flat[index.reshape(-1)] = values.reshape(-1)
    return flat.astype(np_dtype(tap.dtype)).reshape(tap.shape)


@dataclass
class RunOutput:
    outputs: dict[str, np.ndarray]
    result: RunResult
    taps: dict[str, np.ndarray] = field(default_factory=dict)


class DeviceSession:
    """A program loaded once on an emulated device and run many times, like an ONNX Runtime
    InferenceSession. Every run starts at cycle 0 with SBUF and PSUM cleared; HBM keeps the
    constants, and inputs are written anew."""

    def __init__(self, program: Program, arch=None, cost_jitter=None):
        self.program = program
        self.machine = Machine(arch or program.arch_name, host_runner=OnnxHostRunner())
        self.machine.load(program, cost_jitter=cost_jitter)
        self._fresh = True

    def run(self, feeds: dict[str, np.ndarray], taps: bool | set[str] = False, observers=()) -> RunOutput:
        machine, program = self.machine, self.program
        bound = check_inputs(program, feeds)
        if not self._fresh:
            machine.reset()
            machine.memory.clear_onchip()
        self._fresh = False
        for name, arr in bound.items():
            machine.write_tensor(name, arr)
        attached = list(observers)
        recorder = None
        if taps:
            recorder = TapRecorder(machine, program.taps, None if taps is True else set(taps))
            attached.insert(0, recorder)
        for obs in attached:
            machine.attach(obs)
        try:
            result = machine.run()
        finally:
            for obs in attached:
                machine.detach(obs)
        outputs = {t.name: machine.read_tensor(t.name) for t in program.outputs()}
        return RunOutput(outputs, result, recorder.values if recorder else {})


def run_program(program: Program, feeds: dict[str, np.ndarray], arch=None, taps: bool | set[str] = False,
                observers=(), cost_jitter=None) -> RunOutput:
    """Load `program` on a fresh emulated device, run it on `feeds`, return outputs (and taps)."""
    return DeviceSession(program, arch, cost_jitter).run(feeds, taps, observers)


class OnnxHostRunner:
    """Runs a program's host ops: each payload is a small ONNX model (the node, fusions expanded),
    evaluated with onnx's reference evaluator (onnxruntime where the reference has no kernel) on
    the op's input tensors read from HBM; bool and float64 values, stored as u8 / f32 in HBM, are
    converted back to the dtypes the model declares."""

    MAX_PAYLOAD = 256 << 20

    def __init__(self):
        self._loaded: dict[int, tuple] = {}

    def _load(self, host_op):
        import onnx
        from onnx import helper

        from .compiler.host import ModelRunner

        if len(host_op.payload) > self.MAX_PAYLOAD:
            raise UserError(f"host op {host_op.name}: payload too large")
        try:
            model = onnx.load_from_string(host_op.payload)
            runner = ModelRunner(host_op.payload, model)
        except Exception as exc:  # noqa: BLE001 - untrusted payload: any failure is bad input
            raise UserError(f"host op {host_op.name}: unreadable payload ({exc})") from None
        dtypes = [helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type) for vi in model.graph.input]
        return runner, [vi.name for vi in model.graph.input], dtypes

    def __call__(self, host_op, machine: Machine) -> None:
        key = id(host_op)
        if key not in self._loaded:
            self._loaded[key] = self._load(host_op)
        runner, names, dtypes = self._loaded[key]
        tensors = [n for n in host_op.inputs if n]
        feeds = {name: machine.read_tensor(t).astype(dt, copy=False) for name, t, dt in zip(names, tensors, dtypes)}
        results = runner(feeds)
        for tensor, value in zip([n for n in host_op.outputs if n], results):
            t = machine.program.tensor(tensor)
            machine.write_tensor(tensor, np.asarray(value).astype(np_dtype(t.dtype)).reshape(t.shape))
