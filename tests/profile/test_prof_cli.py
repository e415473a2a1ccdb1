"""`xpu-prof` commands end to end through click: outputs, exit codes and one-line errors."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from prof_helpers import ROOT, SAMPLES, host_fallback_model

from xputools.cli import cli as xpu_root
from xputools.profile.cli import prof
from xputools.profile.summary import SUMMARY_SCHEMA, SUMMARY_VERSION

SUMMARY_KEYS = {"schema", "version", "profile", "trace", "model", "graph", "arch", "precision", "batch", "status",
                "problem", "clock_ghz", "latency", "throughput", "compute", "window", "trace_info", "engines",
                "layer_count", "layers", "critical_path", "dma", "overlap", "memory", "instruction_kind_count",
                "instruction_kinds", "recommendations"}
LAYER_KEYS = {"layer", "name", "op_type", "time_us", "share_pct", "span_us", "first_issue_cycle", "start_cycle",
              "end_cycle", "critical_us", "critical_pct", "busy_us", "instructions", "dtype", "flops", "tflops",
              "peak_tflops", "peak_pct", "roof_engine", "dma_bytes", "hbm_bytes", "dma_gbps", "dma_pct",
              "compute_pct", "idle_pct", "host_us", "pe_occupancy_pct", "pe_shape", "overlap_pct", "copy_us",
              "bound", "bound_reason"}


def run(*args, root=prof):
    result = CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def mlp_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "mlp.pftrace"
    code, stdout, stderr = run("record", SAMPLES / "mlp.onnx", "-o", out, "--flows")
    assert code == 0, stderr
    return out, stdout, stderr


def test_record_writes_trace_and_database_and_prints_the_summary(mlp_profile):
    trace, stdout, stderr = mlp_profile
    db = trace.with_name("mlp.profile.db")
    assert trace.is_file() and db.is_file()
    assert f"wrote {trace}" in stderr and str(db) in stderr
    assert "latency" in stdout and "recommendations" in stdout and "critical path" in stdout
    assert len(stdout.splitlines()) <= 45      # one screen
    con = sqlite3.connect(db)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "2" and meta["model"] == "mlp" and meta["arch"] == "xpu1"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "engines", "engine_waits", "layers", "instructions", "dma_transfers", "counters",
            "critical_path"} <= tables
    n = con.execute("SELECT COUNT(*) FROM instructions").fetchone()[0]
    assert n == int(meta["instructions"]) > 0
    con.close()


def test_summary_json_schema(mlp_profile):
    trace, _, _ = mlp_profile
    code, stdout, _ = run("summary", trace, "--json")
    assert code == 0
    s = json.loads(stdout)
    assert set(s) == SUMMARY_KEYS
    assert (s["schema"], s["version"]) == (SUMMARY_SCHEMA, SUMMARY_VERSION)
    assert s["layers"] and set(s["layers"][0]) == LAYER_KEYS
    assert s["layer_count"] == len(s["layers"])
    assert {e["engine"] for e in s["engines"]} >= {"pe", "dve"}
    for e in s["engines"]:
        assert e["busy_pct"] + e["wait_pct"] + e["idle_pct"] == pytest.approx(100, abs=0.2)
    assert s["critical_path"]["covers_latency"] and s["critical_path"]["cycles"] == s["latency"]["cycles"]
    assert s["throughput"]["runs_per_s"] == pytest.approx(1 / (s["latency"]["cycles"] / 1.4e9), rel=1e-3)
    # the mlp's input has a fixed leading dimension > 1: that is not said to be a batch
    assert s["batch"] is None and s["throughput"]["inferences_per_s"] is None
    for r in s["recommendations"]:
        assert {"rank", "rule", "message", "impact_us", "impact_pct", "numbers"} <= set(r)
    ranks = [r["impact_us"] for r in s["recommendations"]]
    assert ranks == sorted(ranks, reverse=True)
    code, stdout, _ = run("summary", trace.with_name("mlp.profile.db"), "--json", "--top", "1")
    assert code == 0 and len(json.loads(stdout)["layers"]) == 1


def test_summary_names_a_host_fallback_with_its_cost(tmp_path):
    model = host_fallback_model(tmp_path / "hostdemo.onnx")
    code, stdout, stderr = run("record", model, "--shape", "x=2x64", "-o", tmp_path / "h.pftrace", "--json")
    assert code == 0, stderr
    s = json.loads(stdout)
    host = [r for r in s["recommendations"] if r["rule"] == "host-fallback"]
    assert host and "Sin" in host[0]["message"] and host[0]["impact_pct"] > 10
    assert s["recommendations"][0]["rule"] == "host-fallback"      # the biggest cost ranks first
    assert next(x for x in s["layers"] if x["name"] == "sin")["bound"] == "host"
    assert s["batch"] == 2


def test_diff_of_a_profile_with_itself_is_all_zeros(mlp_profile):
    trace, _, _ = mlp_profile
    code, stdout, _ = run("diff", trace, trace.with_name("mlp.profile.db"), "--json")
    assert code == 0
    d = json.loads(stdout)
    assert d["latency_us"]["delta"] == 0 and d["throughput"]["delta"] == 0
    assert d["layers"] and all(x[k]["delta"] == 0 for x in d["layers"]
                               for k in ("time_us", "critical_us", "busy_us", "flops", "dma_bytes"))
    assert all(e["busy_us"]["delta"] == 0 and e["wait_us"]["delta"] == 0 for e in d["engines"])
    assert d["only_in_a"] == [] and d["only_in_b"] == []
    code, text, _ = run("diff", trace, trace)
    assert code == 0 and "changed: 0" in text


def test_diff_sorts_by_change_and_lists_layers_in_one_profile(tmp_path):
    a, b = tmp_path / "a.pftrace", tmp_path / "b.pftrace"
    assert run("record", SAMPLES / "transformer.onnx", "--shape", "input_ids=1x16", "-o", a)[0] == 0
    assert run("record", SAMPLES / "transformer.onnx", "--shape", "input_ids=4x16", "-o", b,
               "--layers", "0:10")[0] == 0
    code, stdout, _ = run("diff", a, b, "--json")
    assert code == 0
    d = json.loads(stdout)
    changes = [abs(x["time_us"]["delta"]) for x in d["layers"]]
    assert changes == sorted(changes, reverse=True) and changes[0] > 0
    assert d["latency_us"]["delta"] > 0                     # batch 4 takes longer
    assert d["only_in_a"] and not d["only_in_b"]            # B captured layers 0..10 only


def test_default_output_names_never_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("record", SAMPLES / "mlp.onnx")[0] == 0
    first = (tmp_path / "mlp.pftrace").read_bytes()
    assert run("record", SAMPLES / "mlp.onnx")[0] == 0
    assert (tmp_path / "mlp-1.pftrace").is_file() and (tmp_path / "mlp-1.profile.db").is_file()
    assert (tmp_path / "mlp.pftrace").read_bytes() == first
    # a database left alone also blocks the name
    (tmp_path / "mlp-2.profile.db").write_bytes(b"x")
    assert run("record", SAMPLES / "mlp.onnx")[0] == 0
    assert (tmp_path / "mlp-3.pftrace").is_file() and (tmp_path / "mlp-2.profile.db").read_bytes() == b"x"


def test_explicit_output_is_refused_unless_forced(tmp_path):
    out = tmp_path / "run.pftrace"
    out.write_bytes(b"keep me")
    code, _, err = run("record", SAMPLES / "mlp.onnx", "-o", out)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep me"
    code, _, _ = run("record", SAMPLES / "mlp.onnx", "-o", out, "--force")
    assert code == 0 and out.read_bytes() != b"keep me"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_broken_trace_fails_validate_and_summary(mlp_profile, tmp_path, damage):
    trace, _, _ = mlp_profile
    data = trace.read_bytes()
    broken = tmp_path / "broken.pftrace"
    if damage == "truncate":
        broken.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        broken.write_bytes(b"this is not a trace at all" * 10)
    else:
        from xputools.profile.trace_validate import validate_trace

        # the first byte flip from the middle on that breaks the structure (a flip inside a string
        # payload still parses; those are caught by the database's checksum, tested below)
        for at in range(len(data) // 2, len(data)):
            broken.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
            if validate_trace(broken):
                break
    (tmp_path / "mlp.profile.db").write_bytes(trace.with_name("mlp.profile.db").read_bytes())
    code, out, err = run("validate", broken)
    assert code == 1 and "invalid trace" in err
    code, out, err = run("summary", broken)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_validate_ok_and_json(mlp_profile):
    trace, _, _ = mlp_profile
    code, out, _ = run("validate", trace)
    assert code == 0 and out.startswith("ok:")
    code, out, _ = run("validate", trace, "--json")
    report = json.loads(out)
    assert report["valid"] and report["problems"] == [] and report["flows"] > 0
    assert report["metadata"]["model"] == "mlp"


def test_bad_inputs_are_one_line_exit_2(tmp_path, mlp_profile):
    trace, _, _ = mlp_profile
    cases = [
        ("summary", tmp_path / "missing.pftrace"),
        ("record", tmp_path / "missing.onnx"),
        ("record", SAMPLES / "transformer.onnx", "--shape", "input_ids=1x16", "--layers", "nonesuch"),
        ("record", SAMPLES / "transformer.onnx", "--shape", "input_ids=1x16", "--layers", "9:3"),
        ("sweep", SAMPLES / "cnn.onnx", "--batch", "1,2", "--no-plot"),
        ("sweep", SAMPLES / "transformer.onnx", "--batch", "0,x", "--no-plot"),
    ]
    for args in cases:
        code, out, err = run(*args, "-o", tmp_path / "x.pftrace") if args[0] == "record" else run(*args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), (args, err)
    stale = tmp_path / "stale.profile.db"
    con = sqlite3.connect(stale)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    con.commit()
    con.close()
    code, _, err = run("summary", stale)
    assert code == 2 and "schema version 99" in err and "re-record" in err


def test_layer_window_option_suggests_close_names(tmp_path):
    code, _, err = run("record", SAMPLES / "transformer.onnx", "--shape", "input_ids=1x16",
                       "--layers", "layer0/ln:layer0/attn/q/matmul", "-o", tmp_path / "w.pftrace")
    assert code == 2 and "layer0/ln1" in err


def test_hang_still_writes_a_valid_trace_and_exits_1(tmp_path):
    out = tmp_path / "deadlock.pftrace"
    code, stdout, err = run("record", ROOT / "samples/programs/deadlock.xasm", "-o", out)
    assert code == 1 and "deadlock cycle" in err
    assert "HANG" in stdout
    assert run("validate", out)[0] == 0
    con = sqlite3.connect(out.with_name("deadlock.profile.db"))
    assert dict(con.execute("SELECT key, value FROM meta"))["status"] == "hang"
    con.close()


def test_xpu_prof_is_reachable_from_the_root_cli(mlp_profile):
    trace, _, _ = mlp_profile
    code, out, _ = run("prof", "summary", trace, "--json", root=xpu_root)
    assert code == 0 and json.loads(out)["model"] == "mlp"
    code, out, _ = run("prof", "--help", root=xpu_root)
    assert code == 0 and all(c in out for c in ("record", "summary", "diff", "sweep", "validate"))


def test_every_command_has_an_example_in_its_help():
    for name in ("record", "summary", "diff", "sweep", "validate"):
        code, out, _ = run(name, "--help")
        assert code == 0 and "Example" in out and "xpu-prof " + name in out


def test_max_slices_option_reports_the_drop(tmp_path):
    out = tmp_path / "capped.pftrace"
    code, stdout, err = run("record", SAMPLES / "cnn.onnx", "-o", out, "--max-slices", "10")
    assert code == 0 and "left out" in err and "DROPPED" in stdout
    code, stdout, _ = run("validate", out, "--json")
    assert json.loads(stdout)["dropped_slices"] > 0


def test_console_script_entry_point_is_the_group():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    if "xpu-prof" in scripts:   # installed in develop mode
        assert scripts["xpu-prof"] == "xputools.profile.cli:main"
    assert Path(ROOT / "pyproject.toml").read_text().count('xpu-prof = "xputools.profile.cli:main"') == 1
