"""xputools: profiler, debugger and accuracy analyzer for the XPU accelerator."""

__version__ = "0.1.0"
