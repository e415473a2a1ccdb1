"""The device interface the tools use: load a program on a device, bind inputs, run, read outputs
and tensor taps. Today the device is the emulated XPU (`device_model.Machine`); a hardware backend
would implement the same calls.

Modules: `session` (DeviceSession, run_program), `feeds` (input checks, random inputs), `npz`
(.npz io), `programs` (opening .xpu/.xasm files), `taps` (reading tensors through taps),
`host_runner` (host ops: ONNX reference / onnxruntime).
"""
from .feeds import check_inputs, describe_tensors, random_inputs
from .host_runner import ModelRunner, OnnxHostRunner
from .npz import MAX_NPZ_BYTES, read_npz, write_npz
from .programs import load_program_file
from .session import DeviceSession, RunOutput, run_program
from .taps import TapRecorder, read_tap

__all__ = ["DeviceSession", "RunOutput", "run_program", "check_inputs", "describe_tensors", "random_inputs",
           "read_npz", "write_npz", "MAX_NPZ_BYTES", "TapRecorder", "read_tap", "ModelRunner", "OnnxHostRunner",
           "load_program_file"]
