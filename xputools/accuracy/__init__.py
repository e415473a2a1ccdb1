"""The accuracy analyzer (`xpu acc`), as a library.

- `compare(model, options, samples)`: every ONNX tensor on the device against ONNX Runtime (or a
  saved run): accumulated and local error, the culprits;
- `bisect(model, options, samples, min_sqnr=...)`: the smallest keep set meeting a threshold;
- `gate_model(...)`, `gate_manifest(...)`: the CI drift gate, with `junit_xml` / `markdown` reports;
- `write_report(path, compare_doc)`: the self-contained HTML report.
Documents and file formats: docs/accuracy.md.
"""
from .bisect import bisect, keep_file_text
from .compare import Analysis, compare, load_samples
from .gate import gate_manifest, gate_model, junit_xml, markdown
from .metrics import tensor_metrics
from .report import write_report

__all__ = ["compare", "bisect", "keep_file_text", "Analysis", "load_samples", "gate_model", "gate_manifest",
           "junit_xml", "markdown", "tensor_metrics", "write_report"]
