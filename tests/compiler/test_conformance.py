"""ONNX node conformance: >= 95 % of the device-op cases pass on the emulated XPU in fp32, and
docs/conformance.md lists the failures that remain."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

import conformance  # noqa: E402


def test_onnx_node_conformance_at_least_95_percent():
    results = conformance.run_all()
    passed = sum(r.ok for r in results)
    failures = [f"{r.name}: {r.reason}" for r in results if not r.ok]
    assert len(results) > 500  # the selection did not silently shrink
    assert passed / len(results) >= 0.95, "\n".join(failures)
    documented = (ROOT / "docs/conformance.md").read_text()
    undocumented = [r.name for r in results if not r.ok and f"| {r.name} |" not in documented]
    assert not undocumented, f"failures missing from docs/conformance.md (regenerate it): {undocumented}"
