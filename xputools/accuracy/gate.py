"""`gate`: the CI numeric-drift check. Run a model on the device, compare its outputs with ONNX Runtime,
check thresholds (global or per output) and a baseline (fail on regression beyond a tolerance even
when the absolute thresholds pass); a manifest gates several models in a process pool.

Formats (docs/accuracy.md): thresholds TOML, baseline JSON, manifest TOML, gate JSON, JUnit XML,
Markdown.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import tomllib

from ..errors import UserError

SCHEMA = "xputools.acc.gate/1"
BASELINE_SCHEMA = "xputools.acc.baseline/1"
THRESHOLD_KEYS = {"min_sqnr": ("sqnr_db", ">="), "min_cosine": ("cosine", ">="), "max_abs_err": ("max_abs", "<=")}
# regression tolerances against a baseline
DEFAULT_TOLERANCE = {"sqnr_db_drop": 1.0, "cosine_drop": 1e-4, "max_abs_growth": 0.25}


@dataclass
class Thresholds:
    default: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))

    def for_output(self, name: str) -> dict[str, float]:
        return {**self.default, **self.outputs.get(name, {})}


def _check_values(where: str, table: dict) -> dict[str, float]:
    out = {}
    for key, value in table.items():
        if key not in THRESHOLD_KEYS:
            raise UserError(f"{where}: unknown threshold {key!r} (use {', '.join(THRESHOLD_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where}: {key} must be a number")
        if key == "min_cosine" and not -1.0 <= value <= 1.0:
            raise UserError(f"{where}: min_cosine {value} out of range [-1, 1]")
        if key == "max_abs_err" and value < 0:
            raise UserError(f"{where}: max_abs_err {value} must be >= 0")
        out[key] = float(value)
    return out


def parse_thresholds(data: dict, where: str = "thresholds") -> Thresholds:
    """Thresholds from a parsed TOML table: [default], [outputs.NAME], [baseline] (tolerances)."""
    unknown = set(data) - {"default", "outputs", "baseline"}
    if unknown:
        raise UserError(f"{where}: unknown section(s) {', '.join(sorted(unknown))} (use default, outputs, baseline)")
    th = Thresholds(_check_values(f"{where} [default]", data.get("default", {})))
    for name, table in (data.get("outputs") or {}).items():
        if not isinstance(table, dict):
            raise UserError(f"{where}: [outputs.{name}] must be a table")
        th.outputs[name] = _check_values(f"{where} [outputs.{name}]", table)
    for key, value in (data.get("baseline") or {}).items():
        if key not in DEFAULT_TOLERANCE or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise UserError(f"{where} [baseline]: {key} must be one of {', '.join(DEFAULT_TOLERANCE)} and >= 0")
        th.tolerance[key] = float(value)
    return th


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def read_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a baseline JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(data.get("models"), dict):
        raise UserError(f"{path}: not a baseline file (schema {BASELINE_SCHEMA}; write one with --update-baseline)")
    return data


def gate_model(model, options=None, samples=None, thresholds: Thresholds | None = None,
               baseline: dict | None = None, key: str | None = None, analysis=None) -> dict:
    """Gate one model: its outputs' metrics (worst over samples), each threshold and baseline check
    and the verdict. `baseline` is the entry of this model in a baseline file ({output: metrics})."""
    from .analysis import Analysis, load_samples
    from .metrics import worst

    th = thresholds or Thresholds()
    an = analysis or Analysis(model, options)
    unknown = sorted(set(th.outputs) - set(an.output_names))
    if unknown:
        raise UserError(f"thresholds name unknown output(s) {', '.join(unknown)}; the model's outputs: "
                        f"{', '.join(an.output_names)}")
    samples = samples if samples is not None else load_samples(None, an.program)
    per: dict[str, list] = {}
    for feeds in samples:
        an.reference.start(an.reference_feeds(feeds))
        for name, m in an.output_metrics(an.free_run(feeds)).items():
            per.setdefault(name, []).append(m)
    outputs = []
    for name in an.output_names:
        metrics = worst(per[name])
        checks = [_threshold_check(k, v, metrics) for k, v in th.for_output(name).items()]
        base = (baseline or {}).get(name)
        if base is not None:
            checks += _baseline_checks(metrics, base, th.tolerance)
        outputs.append({"name": name, "metrics": metrics, "checks": checks,
                        "verdict": "pass" if all(c["passed"] for c in checks) else "fail"})
    return {"name": key or an.model_label, "model": an.model_label, "precision": an.options.precision,
            "samples": len(samples), "outputs": outputs,
            "verdict": "pass" if all(o["verdict"] == "pass" for o in outputs) else "fail"}


def _threshold_check(key: str, limit: float, metrics: dict) -> dict:
    metric, op = THRESHOLD_KEYS[key]
    value = metrics[metric]
    passed = value >= limit if op == ">=" else value <= limit
    if metrics["nan"] or metrics["inf"]:
        passed = passed and metrics["ref_nan"] + metrics["ref_inf"] >= metrics["nan"] + metrics["inf"]
    return {"kind": "threshold", "name": f"{metric} {op} {limit:g}", "metric": metric, "op": op,
            "threshold": limit, "value": value, "passed": bool(passed)}


def _baseline_checks(metrics: dict, base: dict, tol: dict) -> list[dict]:
    checks = []
    if "sqnr_db" in base:
        limit = base["sqnr_db"] - tol["sqnr_db_drop"]
        checks.append(("sqnr_db", ">=", limit, base["sqnr_db"]))
    if "cosine" in base:
        checks.append(("cosine", ">=", base["cosine"] - tol["cosine_drop"], base["cosine"]))
    if "max_abs" in base:
        checks.append(("max_abs", "<=", base["max_abs"] * (1 + tol["max_abs_growth"]) + 1e-12, base["max_abs"]))
    out = []
    for metric, op, limit, was in checks:
        value = metrics[metric]
        passed = value >= limit if op == ">=" else value <= limit
        out.append({"kind": "baseline", "name": f"{metric} no worse than baseline", "metric": metric, "op": op,
                    "threshold": limit, "value": value, "baseline": was, "delta": value - was,
                    "passed": bool(passed)})
    return out


def baseline_from(docs: list[dict]) -> dict:
    """A baseline file's content from gate results."""
    return {"schema": BASELINE_SCHEMA, "models": {
        d["name"]: {o["name"]: {k: o["metrics"][k] for k in ("sqnr_db", "cosine", "max_abs")} for o in d["outputs"]}
        for d in docs}}


def gate_document(models: list[dict]) -> dict:
    return {"schema": SCHEMA, "verdict": "pass" if all(m["verdict"] == "pass" for m in models) else "fail",
            "models": models}


# ---- manifests -------------------------------------------------------------------------------------
MANIFEST_KEYS = {"path", "name", "precision", "inputs", "samples", "calibration", "calibration_method", "keep",
                 "keep_file", "shape", "const_inputs", "arch", "thresholds", "min_sqnr", "min_cosine",
                 "max_abs_err"}


def read_manifest(path: str | Path) -> list[dict]:
    """The [[model]] entries of a manifest, with paths resolved against the manifest's directory."""
    path = Path(path)
    data = read_toml(path)
    entries = data.get("model")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: a manifest needs [[model]] entries")
    base = path.parent
    out = []
    for i, e in enumerate(entries, 1):
        if not isinstance(e, dict) or "path" not in e:
            raise UserError(f"{path}: model #{i} needs a path")
        unknown = set(e) - MANIFEST_KEYS
        if unknown:
            raise UserError(f"{path}: model #{i}: unknown key(s) {', '.join(sorted(unknown))}")
        entry = dict(e)
        for k in ("path", "inputs", "samples", "calibration", "keep_file", "const_inputs", "thresholds"):
            if k in entry:
                entry[k] = str(base / entry[k])
        entry.setdefault("precision", "fp32")
        entry.setdefault("name", f"{Path(entry['path']).stem}:{entry['precision']}")
        out.append(entry)
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: two models share a name; give each a distinct name")
    return out


def entry_options(entry: dict):
    """CompileOptions for a manifest entry (the same parsing as the CLI's compile options)."""
    from ..compiler.keepfile import options_from_spec

    return options_from_spec(entry.get("precision", "fp32"), entry.get("keep", ()), entry.get("keep_file"),
                             entry.get("shape", ()), entry.get("calibration"),
                             entry.get("calibration_method", "minmax"), entry.get("arch"), entry.get("const_inputs"))


def entry_thresholds(entry: dict, cli_default: dict[str, float], cli_file: Thresholds | None) -> Thresholds:
    th = Thresholds(dict(cli_default))
    if cli_file is not None:
        th = Thresholds({**cli_file.default, **cli_default}, dict(cli_file.outputs), dict(cli_file.tolerance))
    if "thresholds" in entry:
        own = parse_thresholds(read_toml(entry["thresholds"]), entry["thresholds"])
        th = Thresholds({**th.default, **own.default}, {**th.outputs, **own.outputs}, {**th.tolerance, **own.tolerance})
    own = _check_values(f"model {entry['name']}", {k: entry[k] for k in THRESHOLD_KEYS if k in entry})
    th.default.update(own)
    return th


def run_entry(entry: dict, cli_default: dict[str, float], cli_file: Thresholds | None, baseline: dict | None) -> dict:
    """Gate one manifest entry (runs in a worker process). Bad input comes back as an error entry."""
    from ..runtime import read_npz
    from .analysis import load_samples

    try:
        samples = None
        if "inputs" in entry:
            samples = [read_npz(entry["inputs"])]
        options = entry_options(entry)
        th = entry_thresholds(entry, cli_default, cli_file)
        if "samples" in entry:
            from ..compiler.driver import compile_model

            samples = load_samples(entry["samples"], compile_model(entry["path"], options).program)
        return gate_model(entry["path"], options, samples, th, (baseline or {}).get(entry["name"]), entry["name"])
    except Exception as exc:  # noqa: BLE001 - reported as this model's error, the others still run
        return {"name": entry["name"], "model": entry["path"], "precision": entry.get("precision"),
                "outputs": [], "verdict": "error", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}


def gate_manifest(entries: list[dict], cli_default: dict[str, float], cli_file: Thresholds | None,
                  baseline: dict | None, jobs: int = 2) -> dict:
    """Gate every manifest entry in a process pool; results in manifest order."""
    if jobs <= 1 or len(entries) == 1:
        results = [run_entry(e, cli_default, cli_file, baseline) for e in entries]
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(entries))) as pool:
            futures = [pool.submit(run_entry, e, cli_default, cli_file, baseline) for e in entries]
            results = [f.result() for f in futures]
    return gate_document(results)


# ---- reports ---------------------------------------------------------------------------------------
def junit_xml(doc: dict) -> str:
    """JUnit XML: a testsuite per model, a testcase per output and check."""
    suites = ET.Element("testsuites", name="xpu acc gate")
    total = failed = 0
    for m in doc["models"]:
        suite = ET.SubElement(suites, "testsuite", name=f"{m['name']}")
        cases = fails = errors = 0
        if m.get("error"):
            case = ET.SubElement(suite, "testcase", classname=f"xpu.acc.{m['name']}", name="run")
            ET.SubElement(case, "error", message=m["error"])
            cases, errors = 1, 1
        for o in m["outputs"]:
            for c in o["checks"]:
                case = ET.SubElement(suite, "testcase", classname=f"xpu.acc.{m['name']}",
                                     name=f"{o['name']}: {c['name']}")
                cases += 1
                if not c["passed"]:
                    fails += 1
                    ET.SubElement(case, "failure", message=f"{c['metric']} = {c['value']:.6g}, needs {c['op']} "
                                                           f"{c['threshold']:.6g}")
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        suite.set("errors", str(errors))
        total += cases
        failed += fails + errors
    suites.set("tests", str(total))
    suites.set("failures", str(failed))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def markdown(doc: dict) -> str:
    """A Markdown summary for a CI step summary."""
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️"}
    lines = [f"## xpu acc gate: {doc['verdict'].upper()}", ""]
    for m in doc["models"]:
        lines.append(f"### {icon[m['verdict']]} {m['name']} ({m.get('precision')})")
        if m.get("error"):
            lines += ["", f"error: `{m['error']}`", ""]
            continue
        lines += ["", "| output | check | value | limit | result |", "|---|---|---|---|---|"]
        for o in m["outputs"]:
            if not o["checks"]:
                met = o["metrics"]
                lines.append(f"| {o['name']} | (no threshold) | SQNR {met['sqnr_db']:.2f} dB, cos {met['cosine']:.6f} "
                             "| | |")
            for c in o["checks"]:
                lines.append(f"| {o['name']} | {c['name']} | {c['value']:.6g} | {c['op']} {c['threshold']:.6g} | "
                             f"{'pass' if c['passed'] else '**FAIL**'} |")
        lines.append("")
    return "\n".join(lines)


def render_gate(doc: dict) -> str:
    lines = []
    for m in doc["models"]:
        lines.append(f"{m['verdict'].upper():5s} {m['name']} ({m.get('precision')})")
        if m.get("error"):
            lines.append(f"      error: {m['error']}")
        for o in m["outputs"]:
            met = o["metrics"]
            lines.append(f"      {o['name']}: SQNR {met['sqnr_db']:.2f} dB, cosine {met['cosine']:.6f}, "
                         f"max|e| {met['max_abs']:.3g}")
            for c in o["checks"]:
                extra = f" (baseline {c['baseline']:.6g}, delta {c['delta']:+.3g})" if c["kind"] == "baseline" else ""
                lines.append(f"        {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['value']:.6g}{extra}")
    lines.append(f"gate: {doc['verdict']}")
    return "\n".join(lines)
