"""`roofline` (table, JSON, PNG) and `summary --csv` (the database's tables as CSV)."""
from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from click.testing import CliRunner
from prof_helpers import SAMPLES

from xputools.profile.cli import prof


def run(*args):
    result = CliRunner().invoke(prof, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("roof") / "cnn.pftrace"
    assert run("record", SAMPLES / "cnn.onnx", "-o", out)[0] == 0
    return out


def test_roofline_points_follow_the_database(cnn, tmp_path):
    png = tmp_path / "r.png"
    code, out, err = run("roofline", cnn, "-o", png, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert png.read_bytes().startswith(b"\x89PNG") and r["plot"] == str(png)
    con = sqlite3.connect(cnn.with_name("cnn.profile.db"))
    con.row_factory = sqlite3.Row
    layers = {row["name"]: dict(row) for row in con.execute("SELECT * FROM layers")}
    con.close()
    assert len(r["points"]) + len(r["unplaced"]) == len(layers)
    for p in r["points"]:
        layer = layers[p["name"]]
        work = layer["pe_flops"] if layer["roof_engine"] == "pe" else layer["flops"]
        assert p["intensity"] == pytest.approx(work / layer["hbm_bytes"], rel=1e-3)
        assert p["achieved_tflops"] == pytest.approx(work / (layer["time_cycles"] / 1.4e9) / 1e12, rel=1e-3,
                                                     abs=1e-6)
        assert p["achieved_tflops"] <= p["attainable_tflops"] * 1.0001      # never above the roof
    assert {x["name"] for x in r["roofs"]} >= {"PE f32"}
    code, _, err = run("roofline", cnn, "-o", png)
    assert code == 2 and "--force" in err


def test_summary_csv_tables(cnn, tmp_path):
    code, _, err = run("summary", cnn, "--csv", tmp_path)
    assert code == 0, err
    con = sqlite3.connect(cnn.with_name("cnn.profile.db"))
    for table in ("layers", "engines", "instructions", "dma_transfers", "critical_path", "allocations"):
        rows = list(csv.reader((tmp_path / f"{table}.csv").open()))
        assert len(rows) - 1 == con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0, table
        assert rows[0] == [d[1] for d in con.execute(f"PRAGMA table_info({table})")]
    con.close()
    before = (tmp_path / "layers.csv").read_bytes()
    code, _, err = run("summary", cnn, "--csv", tmp_path)
    assert code == 2 and "--force" in err and (tmp_path / "layers.csv").read_bytes() == before
    code, _, err = run("summary", cnn, "--csv", tmp_path / "missing")
    assert code == 2 and "no such directory" in err


def test_every_sql_recipe_in_the_format_doc_runs(cnn):
    import re

    from prof_helpers import ROOT

    doc = (ROOT / "docs/profile-format.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    assert len(statements) >= 10
    con = sqlite3.connect(cnn.with_name("cnn.profile.db"))
    for sql in statements:
        rows = con.execute(sql).fetchall()
        assert rows or "pe_rows * i.pe_cols <" in sql or "src_dtype != dst_dtype" in sql, sql
    con.close()
