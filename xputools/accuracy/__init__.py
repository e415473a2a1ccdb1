"""The accuracy analyzer (`xpu acc`), as a library.

- `compare(model, options, samples)`: every ONNX tensor on the device against ONNX Runtime (or a
  saved run): accumulated and local error, the culprits;
- `bisect(model, options, samples, min_sqnr=...)`: the smallest keep set meeting a threshold;
- `gate_model(...)`, `gate_manifest(...)`: the CI drift gate, with `junit_xml` / `markdown` reports;
- `write_report(path, compare_doc)`: the self-contained HTML report.
Documents and file formats: docs/accuracy.md. Names load lazily (the CLI's start-up stays light).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "compare": "analysis", "Analysis": "analysis", "load_samples": "analysis",
    "bisect": "search", "keep_file_text": "search",
    "gate_model": "gate", "gate_manifest": "gate", "junit_xml": "gate", "markdown": "gate",
    "tensor_metrics": "metrics", "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
