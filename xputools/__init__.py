"""xputools: compiler front door, profiler, debugger and accuracy analyzer for the XPU accelerator
(emulated on this machine). Every `xpu` command is a thin wrapper over one of these functions.

Compile and run (`xpu compile`, `xpu check`, `xpu run`):
    compile_model(model, CompileOptions(precision="bf16", arch="xpu1")) -> Compiled (.program, .graph)
    check_model(model, shapes, arch)     -> dict: what runs where (device / host and why)
    load_program_or_model(path, options) -> Program from .xpu / .xasm, or an .onnx compiled in memory
    DeviceSession(program).run(feeds)    -> RunOutput (.outputs, .result cycles and busy time, .taps)
    run_program(program, feeds, taps=True)   the same, once
    save_program(program, path) / load_program(path)   the .xpu container (the arch travels inside)

Profile (`xpu-prof record`):
    record(program, feeds, "run.pftrace") -> RecordResult (.profile, trace and database paths)

Debug (`xpu debug`, `xpu sanitize`):
    Debugger(program, feeds)  gdb's verbs as methods returning data: break_, run, stepi, reverse_stepi, ...
    sanitize(program, feeds, "race,uninit") -> SanitizeReport (findings naming instructions and nodes)

Accuracy (`xpu acc`): the `xputools.accuracy` package
    accuracy.compare(model, options) every tensor against ONNX Runtime: local vs accumulated error, culprits
    accuracy.bisect(...) the smallest keep set meeting a threshold; accuracy.gate_model(...) the CI gate

The device (`xpu arch`, `xpu asm`, `xpu disasm`):
    load_arch("xpu1" | "my.toml") -> Arch;  Machine(arch).load(program) steps and observes a run
    assemble(text) -> Program;  disassemble(program) -> text that re-assembles to the same program

Errors: every error a user can cause is an `XpuError` whose `exit_code` the CLI exits with (2 bad
input, 1 a failed check).

Names are imported on first use, so `import xputools` stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_EXPORTS = {
    "compile_model": "xputools.compiler.driver",
    "check_model": "xputools.compiler.driver",
    "CompileOptions": "xputools.compiler.context",
    "load_program_or_model": "xputools.compiler.loading",
    "DeviceSession": "xputools.runtime.session",
    "run_program": "xputools.runtime.session",
    "record": "xputools.profile.recorder",
    "Debugger": "xputools.debug.core",
    "sanitize": "xputools.debug.sanitize.core",
    "Machine": "device_model.machine",
    "assemble": "device_model.assembly",
    "disassemble": "device_model.assembly",
    "load_arch": "device_model.arch",
    "save_program": "device_model.container",
    "load_program": "device_model.container",
    "XpuError": "device_model.errors",
}

__all__ = ["__version__", *_EXPORTS]


_PACKAGES = ("runtime", "compiler", "profile", "debug", "accuracy")  # `xputools.accuracy.compare(...)` works


def __getattr__(name: str):
    if name in _PACKAGES:
        return importlib.import_module(f"xputools.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xputools' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_PACKAGES))
