"""`summary --csv DIR`: the profile database's tables as CSV files (one per table, a header row,
like `nsys stats --format csv`), each written whole or not at all."""
from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

CSV_TABLES = ("layers", "engines", "instructions", "dma_transfers", "critical_path", "allocations")


def table_csv(con: sqlite3.Connection, table: str) -> str:
    cur = con.execute(f"SELECT * FROM {table}")   # table names come from CSV_TABLES only
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([d[0] for d in cur.description])
    writer.writerows(cur)
    return out.getvalue()


def export_csv(db_path: Path, out_dir: Path, *, force: bool = False, inputs=()) -> list[Path]:
    """Write DIR/<table>.csv for each of CSV_TABLES the database has; returns the paths. Every file
    is checked before any is written, so a refusal leaves the directory as it was."""
    from device_model.fileio import OutputError, check_output, write_text_atomic

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir}: no such directory (create it first)")
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        tables = [t for t in CSV_TABLES if t in have]
        paths = [out_dir / f"{t}.csv" for t in tables]
        for p in paths:
            check_output(p, force=force, inputs=[db_path, *inputs])
        for table, p in zip(tables, paths):
            write_text_atomic(p, table_csv(con, table), force=force, inputs=[db_path, *inputs])
    finally:
        con.close()
    return paths
