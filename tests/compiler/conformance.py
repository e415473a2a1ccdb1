"""ONNX node conformance on the XPU: the cases of `onnx.backend.test.case.node.collect_testcases()`
whose ops are all in the device list (opset <= 26), compiled and emulated in fp32 and compared with
the cases' expected outputs at the cases' tolerances.

    python tests/compiler/conformance.py [--all] [--write-doc docs/conformance.md] [-k substring]

With --all every case of the suite runs (any op; host fallback where the device lacks one) and the
document gains the whole-suite figure: pass, on-device pass, host-fallback pass, refused, failing.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MAX_OPSET = 26


@dataclass
class CaseResult:
    name: str
    ops: str
    ok: bool
    reason: str = ""
    on_device: bool = False
    refused: bool = False  # the compiler declined with a clear error (not a crash, not a wrong answer)


def select_cases(all_ops: bool = False):
    from onnx.backend.test.case.node import collect_testcases

    from xputools.compiler.support import DEVICE_OPS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    device = set(DEVICE_OPS)
    out = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        opset = max((o.version for o in c.model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if c.kind != "real" and ops and (all_ops or ops <= device) and opset <= MAX_OPSET and c.data_sets:
            out.append(c)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def _shape_inputs(model) -> set[str]:
    """Graph inputs used directly as shapes, axes, pads, sizes... (and a CumSum axis, a Trilu k: inputs
    that decide how the device computes): a static compile freezes them (`--const-inputs`), as TensorRT
    needs shape tensors at build time."""
    from xputools.compiler.decompose import STRUCTURAL_INPUTS
    from xputools.compiler.frontend import SHAPE_SLOTS

    names = set()
    for n in model.graph.node:
        for pos in SHAPE_SLOTS.get(n.op_type, ()) + STRUCTURAL_INPUTS.get(n.op_type, ()):
            if pos < len(n.input) and n.input[pos]:
                names.add(n.input[pos])
    return names


def _inputs_to_freeze(message: str, given: dict) -> set[str]:
    """The inputs a compile error asks to freeze (`--const-inputs FILE.npz holding a, b`)."""
    match = re.search(r"--const-inputs FILE\.npz holding ([^;]+?)(?:;|$)", message)
    if not match:
        return set()
    return {n.strip() for n in match.group(1).split(",") if n.strip() in given}


def _float_like(dtype) -> bool:
    return dtype.kind in "fc" or dtype.name.startswith(("float", "bfloat"))


def _array(value) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def run_case(case) -> CaseResult:
    from xputools.compiler.context import CompileOptions
    from xputools.compiler.driver import compile_model
    from xputools.compiler.outputs import onnx_outputs
    from xputools.errors import UserError
    from xputools.runtime import run_program

    ops = ",".join(sorted({n.op_type for n in case.model.graph.node}))
    in_names = [i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}]
    given = {}
    for name, arr in zip(in_names, case.data_sets[0][0]):
        try:
            given[name] = _array(arr)
        except ValueError:  # a sequence or optional input: the compile refuses it below
            continue
    frozen = {name: arr for name, arr in given.items() if name in _shape_inputs(case.model)}
    for _ in range(3):  # do what the compiler asks: freeze the inputs it names, as a user would
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = compile_model(case.model, CompileOptions(const_inputs=frozen))
            break
        except Exception as exc:  # noqa: BLE001 - a failing case is data here
            asked = _inputs_to_freeze(str(exc), given)
            if not asked or asked <= set(frozen):
                return CaseResult(case.name, ops, False, "compile: " + _first_line(exc),
                                  refused=isinstance(exc, UserError))
            frozen.update({k: given[k] for k in asked})
    else:
        return CaseResult(case.name, ops, False, "compile: inputs to freeze kept changing")
    prog = compiled.program
    on_device = not prog.host_ops
    out_names = [o.name for o in case.model.graph.output]
    for inputs, expected in case.data_sets:
        feeds = {}
        for name, arr in zip(in_names, inputs):
            arr = _array(arr)
            want = prog.tensor(name).dtype if any(t.name == name for t in prog.inputs()) else None
            if want == "f32" and arr.dtype == np.float64:
                arr = arr.astype(np.float32)  # the device stores float64 as f32
            feeds[name] = arr
        feeds = {k: v for k, v in feeds.items() if any(t.name == k for t in prog.inputs())}
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                got = onnx_outputs(prog, run_program(prog, feeds).outputs)
        except Exception as exc:  # noqa: BLE001
            return CaseResult(case.name, ops, False, "run: " + _first_line(exc), on_device)
        for name, ref in zip(out_names, expected):
            ref = _array(ref)
            if name not in got:
                return CaseResult(case.name, ops, False, f"output {name} missing", on_device)
            g = got[name]
            if g.shape != ref.shape:
                return CaseResult(case.name, ops, False, f"output {name}: shape {g.shape} != {ref.shape}", on_device)
            if _float_like(ref.dtype) or _float_like(g.dtype):
                try:
                    np.testing.assert_allclose(g.astype(np.float64), ref.astype(np.float64), rtol=case.rtol,
                                               atol=case.atol)
                except AssertionError as exc:
                    detail = [ln for ln in str(exc).splitlines() if "Max" in ln][:2]
                    return CaseResult(case.name, ops, False, f"output {name}: " + "; ".join(x.strip() for x in detail),
                                      on_device)
            elif not np.array_equal(g.astype(ref.dtype), ref):
                return CaseResult(case.name, ops, False, f"output {name}: values differ", on_device)
    return CaseResult(case.name, ops, True, "", on_device)


def _run_guarded(case) -> CaseResult:
    try:
        return run_case(case)
    except Exception as exc:  # noqa: BLE001 - e.g. inputs the harness cannot even feed
        ops = ",".join(sorted({n.op_type for n in case.model.graph.node}))
        return CaseResult(case.name, ops, False, "harness: " + _first_line(exc))


def run_all(substring: str = "", all_ops: bool = False):
    return [_run_guarded(c) for c in select_cases(all_ops) if substring in c.name]


def full_suite_markdown(results) -> str:
    """The whole node suite (every op, not only the device list): pass on the device, pass through host
    fallback, refused with a reason, failing (a wrong answer, a run-time error or a crash)."""
    dev = sum(r.ok and r.on_device for r in results)
    host = sum(r.ok and not r.on_device for r in results)
    refused = [r for r in results if r.refused]
    failing = [r for r in results if not r.ok and not r.refused]
    lines = ["## The whole node suite", "",
             "Generated with `--all` (long: run it in the background, never in the test suite).", "",
             f"Cases: every `onnx.backend.test.case.node` case with data, opset <= {MAX_OPSET}, any op; inputs "
             "the compiler asks to freeze (a window size, a Reshape's shape, CumSum's axis, Trilu's k, a DFT's "
             "length) are frozen from the case's data, as a static compile needs them (`--const-inputs`).", "",
             "| result | cases |", "|---|---|",
             f"| pass | {dev + host} |", f"| on-device pass | {dev} |", f"| host-fallback pass | {host} |",
             f"| refused with a reason | {len(refused)} |", f"| failing | {len(failing)} |",
             f"| total | {len(results)} |", "",
             "Failing: Bernoulli draws random numbers (no seed reproduces the reference's; a case passes only "
             "by chance); the bf16/fp16 causal and padded-KV attention cases (plain and `_expanded`) miss by one "
             "bf16/fp16 unit: the device rounds as it computes in bf16, and against a float64 evaluation of the "
             "same inputs it is closer than the expected data (bf16 causal: 0.0034 vs 0.0044); the two inverse "
             "DFT cases give an exact 0 where the expected data holds the reference FFT's 1.9e-7 rounding noise "
             "and the tolerance is 1e-7; Resize downsampling with align_corners to one row gives ONNX Runtime's "
             "[1, 4] where the suite expects [1, 3.14].", "",
             "### Failing", "", "| case | ops | reason |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.ops} | {r.reason.replace('|', '/')} |" for r in failing]
    lines += ["", "### Refused", "", "| case | ops | reason |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.ops} | {r.reason.replace('|', '/')} |" for r in refused]
    return "\n".join(lines) + "\n"


def markdown(results) -> str:
    passed = sum(r.ok for r in results)
    dev = sum(r.ok and r.on_device for r in results)
    lines = ["# ONNX node conformance", "",
             "Generated by `python tests/compiler/conformance.py --all --write-doc docs/conformance.md`; checked by",
             "`tests/compiler/test_conformance.py`.", "",
             f"Cases: every `onnx.backend.test.case.node` case whose ops are all in the device list, opset <= "
             f"{MAX_OPSET}, compiled and emulated in fp32 against the case's expected outputs and tolerances "
             "(float64 cases run in f32, the device's widest float).", "",
             f"**{passed} / {len(results)} pass ({100.0 * passed / max(len(results), 1):.1f} %)**; "
             f"{dev} of the passing cases ran entirely on the device, the rest used host fallback for some node.",
             "", "## Failures", "", "| case | ops | reason |", "|---|---|---|"]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.name} | {r.ops} | {r.reason.replace('|', '/')} |")
    lines += ["", "## Passing on the host (fallback)", "",
              ", ".join(r.name for r in results if r.ok and not r.on_device) or "none", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-doc", type=Path)
    ap.add_argument("-k", default="")
    ap.add_argument("--all", action="store_true", help="every case of the suite, not only device-list ops")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    results = run_all(args.k, args.all)
    for r in results:
        if not r.ok:
            print(f"FAIL {r.name} [{r.ops}]: {r.reason}")
    passed = sum(r.ok for r in results)
    print(f"{passed} / {len(results)} passed, {sum(r.ok and r.on_device for r in results)} fully on the device")
    if args.write_doc:
        if args.all:  # the device-list section is the subset of the whole run
            listed = {c.name for c in select_cases(False)}
            text = markdown([r for r in results if r.name in listed]) + "\n" + full_suite_markdown(results)
        else:
            text = markdown(results)
        args.write_doc.write_text(text)


if __name__ == "__main__":
    main()
