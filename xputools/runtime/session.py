"""A program loaded on the emulated device and run on feeds: outputs, run statistics and taps."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_model.arch import Arch
from device_model.machine import Machine, RunResult
from device_model.program import Program

from .feeds import check_inputs
from .host_runner import OnnxHostRunner
from .taps import TapRecorder


@dataclass
class RunOutput:
    """One run's outputs (by output name), its statistics, and the tap values asked for."""

    outputs: dict[str, np.ndarray]
    result: RunResult
    taps: dict[str, np.ndarray] = field(default_factory=dict)


class DeviceSession:
    """A program loaded once on an emulated device and run many times, like an ONNX Runtime
    InferenceSession. Every run starts at cycle 0 with SBUF and PSUM as a new load has them, as
    far as the run can tell (Machine.rewind: a run with no observer and no taps finds zeroed only
    the bytes it reads before writing); HBM keeps the constants, and inputs are written anew."""

    def __init__(self, program: Program, arch: Arch | None = None,
                 cost_jitter: tuple[int, int] | None = None, check_bounds: bool = True):
        """Load `program` on an emulated device of the arch it carries (`arch`, if given, must be
        that arch: a MachineError says otherwise). An access outside the arch's memories is refused
        here unless `check_bounds` is False (the sanitizer reports those itself, then lets the run
        fault where it would)."""
        self.program = program
        host_runner = OnnxHostRunner()
        host_runner.check(program)  # payloads are untrusted: vet them before anything runs
        self.machine = Machine(arch or program.arch, host_runner=host_runner)
        self.machine.load(program, cost_jitter=cost_jitter)
        if check_bounds:
            program.check_fits(self.machine.arch)  # the taps too, which loading does not reach
        self._fresh = True
        self._outputs = [t.name for t in program.outputs()]

    def run(self, feeds: dict[str, np.ndarray], taps: bool | set[str] = False, observers=()) -> RunOutput:
        """Run once on `feeds` (checked against the program's inputs); `taps` True reads every tap, a set
        only those; `observers` are attached to the machine for this run."""
        machine, program = self.machine, self.program
        bound = check_inputs(program, feeds)
        attached = list(observers)
        recorder = None
        if taps:
            recorder = TapRecorder(machine, program.taps, None if taps is True else set(taps))
            attached.insert(0, recorder)
        if not self._fresh:
            machine.rewind(observed=bool(attached))
        self._fresh = False
        for name, arr in bound.items():
            machine.write_tensor(name, arr)
        for obs in attached:
            machine.attach(obs)
        try:
            result = machine.run()
        finally:
            for obs in attached:
                machine.detach(obs)
        outputs = {name: machine.read_tensor(name) for name in self._outputs}
        return RunOutput(outputs, result, recorder.values if recorder else {})


def run_program(program: Program, feeds: dict[str, np.ndarray], arch: Arch | None = None,
                taps: bool | set[str] = False, observers=(), cost_jitter: tuple[int, int] | None = None) -> RunOutput:
    """Load `program` on a fresh emulated device, run it on `feeds`, return outputs (and taps)."""
    return DeviceSession(program, arch, cost_jitter).run(feeds, taps, observers)
