"""What `xpu tui MODEL` opens: the Debug tab's Debugger and the loaders the Profile and Accuracy tabs
call in a worker (a recorded profile; an `xpu acc compare` result, re-run with nodes kept at fp32)."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path


class ModelSession:
    """A program (or a compiled ONNX model) with its inputs. `profile()` records once into a private
    temporary directory (removed by `close()`); `accuracy(keep)` compares the model (ONNX only)."""

    def __init__(self, source: Path, compile_kw: dict, feeds: dict, program):
        self.source = Path(source)
        self.compile_kw = compile_kw
        self.feeds = feeds
        self.program = program
        self._tmp = tempfile.TemporaryDirectory(prefix="xpu-tui-")

    @property
    def is_model(self) -> bool:
        return self.source.suffix == ".onnx"

    def debugger(self):
        from xputools.debug import Debugger

        return Debugger(self.program, self.feeds)

    def profile(self):
        from xputools.profile.database import open_profile
        from xputools.profile.recorder import record

        trace = Path(self._tmp.name) / f"{self.source.stem}.pftrace"
        record(self.program, self.feeds, trace, source=str(self.source), force=True)
        return open_profile(trace.with_name(f"{self.source.stem}.profile.db"))

    def accuracy(self, keep: list[tuple[str, str]]) -> dict:
        from xputools.accuracy.analysis import compare
        from xputools.clikit import build_options

        options = build_options(**self.compile_kw)
        options = replace(options, keep=list(options.keep) + list(keep))
        return compare(self.source, options, samples=[self.feeds])

    def app_kwargs(self) -> dict:
        return {"debugger": self.debugger(), "profile": self.profile,
                "accuracy": self.accuracy if self.is_model else None}

    def close(self) -> None:
        self._tmp.cleanup()
