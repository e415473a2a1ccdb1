"""The profile database: one SQLite file beside the trace, with a documented, versioned schema
(docs/profile-format.md). `summary` and `diff` read it; any SQLite client can too.

All times are device cycles (meta.clock_ghz converts them). Opening checks the schema version and,
when the trace is named instead of the database, that the trace is the one recorded with it.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from .analysis import Profile

SCHEMA_VERSION = 2
DB_SUFFIX = ".profile.db"
TRACE_SUFFIXES = (".pftrace.gz", ".pftrace", ".perfetto-trace", ".gz")
_SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE engines (
    engine TEXT PRIMARY KEY, position INTEGER NOT NULL, kind TEXT NOT NULL,
    instructions INTEGER NOT NULL, busy_cycles INTEGER NOT NULL, wait_cycles INTEGER NOT NULL,
    idle_cycles INTEGER NOT NULL, critical_cycles INTEGER NOT NULL,
    first_issue INTEGER NOT NULL, last_end INTEGER NOT NULL);
CREATE TABLE engine_waits (
    engine TEXT NOT NULL, released_by TEXT NOT NULL, cycles INTEGER NOT NULL,
    PRIMARY KEY (engine, released_by));
CREATE TABLE layers (
    layer INTEGER PRIMARY KEY, name TEXT NOT NULL, op_type TEXT NOT NULL,
    span_start_cycle INTEGER NOT NULL, start_cycle INTEGER NOT NULL, end_cycle INTEGER NOT NULL,
    span_cycles INTEGER NOT NULL, time_cycles INTEGER NOT NULL,
    instructions INTEGER NOT NULL, busy_cycles INTEGER NOT NULL,
    pe_cycles INTEGER NOT NULL, act_cycles INTEGER NOT NULL, dve_cycles INTEGER NOT NULL,
    pool_cycles INTEGER NOT NULL, dma_cycles INTEGER NOT NULL, host_cycles INTEGER NOT NULL,
    compute_active_cycles INTEGER NOT NULL, dma_active_cycles INTEGER NOT NULL,
    host_active_cycles INTEGER NOT NULL, active_cycles INTEGER NOT NULL, idle_cycles INTEGER NOT NULL,
    wait_cycles INTEGER NOT NULL, critical_cycles INTEGER NOT NULL,
    flops INTEGER NOT NULL, pe_flops INTEGER NOT NULL, dtype TEXT NOT NULL,
    roof_engine TEXT NOT NULL, peak_flops REAL NOT NULL,
    dma_bytes INTEGER NOT NULL, hbm_bytes INTEGER NOT NULL, hbm_bytes_in_time REAL NOT NULL,
    dma_count INTEGER NOT NULL,
    host_bytes INTEGER NOT NULL, bound TEXT NOT NULL, bound_reason TEXT NOT NULL, lane INTEGER NOT NULL,
    own_cycles REAL NOT NULL, pe_active_cycles INTEGER NOT NULL, pe_busy_cycles INTEGER NOT NULL,
    pe_occupancy REAL NOT NULL, pe_rows INTEGER NOT NULL, pe_cols INTEGER NOT NULL, pe_n INTEGER NOT NULL,
    overlap_cycles INTEGER NOT NULL, copy_cycles INTEGER NOT NULL, copy_count INTEGER NOT NULL,
    copy_bytes INTEGER NOT NULL, roof_floor_cycles REAL NOT NULL);
CREATE TABLE instructions (
    id INTEGER PRIMARY KEY, engine TEXT NOT NULL, pc INTEGER NOT NULL, op TEXT NOT NULL,
    kind TEXT NOT NULL, dtype TEXT NOT NULL, layer INTEGER NOT NULL,
    start_cycle INTEGER NOT NULL, end_cycle INTEGER NOT NULL, cycles INTEGER NOT NULL,
    wait_cycles INTEGER NOT NULL, flops INTEGER NOT NULL, bytes INTEGER NOT NULL,
    sbuf_bytes INTEGER NOT NULL, psum_bytes INTEGER NOT NULL,
    released_by INTEGER, release_semaphore INTEGER, critical INTEGER NOT NULL, asm TEXT NOT NULL,
    pe_rows INTEGER NOT NULL, pe_cols INTEGER NOT NULL, pe_n INTEGER NOT NULL);
CREATE TABLE dma_transfers (
    id INTEGER PRIMARY KEY, queue TEXT NOT NULL, layer INTEGER NOT NULL,
    src_space TEXT NOT NULL, dst_space TEXT NOT NULL, bytes INTEGER NOT NULL, hbm_bytes INTEGER NOT NULL,
    fabric_bytes INTEGER NOT NULL,
    start_cycle INTEGER NOT NULL, transfer_end_cycle INTEGER NOT NULL, end_cycle INTEGER NOT NULL,
    runs INTEGER NOT NULL, src_dtype TEXT NOT NULL, dst_dtype TEXT NOT NULL, hbm_kind TEXT NOT NULL);
CREATE TABLE counters (name TEXT NOT NULL, unit TEXT NOT NULL, cycle INTEGER NOT NULL, value REAL NOT NULL);
CREATE TABLE critical_path (
    step INTEGER PRIMARY KEY, instruction INTEGER NOT NULL, engine TEXT NOT NULL, kind TEXT NOT NULL,
    layer INTEGER NOT NULL,
    layer_name TEXT NOT NULL, start_cycle INTEGER NOT NULL, end_cycle INTEGER NOT NULL,
    via TEXT NOT NULL, gap_cycles INTEGER NOT NULL, dtype TEXT NOT NULL, fabric_bytes INTEGER NOT NULL,
    transfer_end_cycle INTEGER NOT NULL, pe_n INTEGER NOT NULL, hbm_kind TEXT NOT NULL);
CREATE TABLE allocations (
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, partition_start INTEGER NOT NULL, partitions INTEGER NOT NULL,
    offset INTEGER NOT NULL, bytes_per_partition INTEGER NOT NULL, bytes INTEGER NOT NULL,
    layer INTEGER NOT NULL, writer INTEGER NOT NULL, start_cycle INTEGER NOT NULL, end_cycle INTEGER NOT NULL,
    reads INTEGER NOT NULL);
CREATE INDEX instructions_by_layer ON instructions(layer);
CREATE INDEX counters_by_name ON counters(name, cycle);
"""
TABLES = ("meta", "engines", "engine_waits", "layers", "instructions", "dma_transfers", "counters",
          "critical_path", "allocations")


def db_path_for(trace: Path) -> Path:
    """The database beside a trace: NAME.pftrace[.gz] -> NAME.profile.db."""
    name = trace.name
    for suffix in TRACE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return trace.with_name(name[: -len(suffix)] + DB_SUFFIX)
    return trace.with_name(name + DB_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_database(path: Path, profile: Profile, extra_meta: dict | None = None, *, force: bool = True,
                   inputs=()) -> None:
    """Write `profile` to a new SQLite file at `path`, whole or not at all (device_model.fileio:
    replaced only with `force`, never over one of `inputs`, nothing left behind on failure)."""
    from device_model.fileio import atomic_output

    with atomic_output(path, force=force, inputs=inputs) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(SCHEMA)
            with con:
                _fill(con, profile, extra_meta or {})
        except sqlite3.OperationalError as exc:   # disk full / I/O error inside SQLite
            raise OSError(28 if "full" in str(exc) else 5, str(exc)) from None
        finally:
            con.close()


def _insert(con: sqlite3.Connection, table: str, rows: list[dict]) -> None:
    """Insert dict rows by column name (every row has the same keys, in the schema's order)."""
    if rows:
        names = list(rows[0])
        con.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                        [tuple(row[n] for n in names) for row in rows])


def _layer_row(st) -> dict:
    return {
        "layer": st.layer, "name": st.name, "op_type": st.op_type, "span_start_cycle": st.first_issue,
        "start_cycle": st.start, "end_cycle": st.last_end, "span_cycles": st.span, "time_cycles": st.time,
        "instructions": st.instructions, "busy_cycles": sum(st.busy.values()),
        **{f"{kind}_cycles": st.busy[kind] for kind in ("pe", "act", "dve", "pool", "dma", "host")},
        "compute_active_cycles": st.compute_active, "dma_active_cycles": st.dma_active,
        "host_active_cycles": st.host_active, "active_cycles": st.active, "idle_cycles": st.idle,
        "wait_cycles": st.wait, "critical_cycles": st.critical, "flops": st.flops, "pe_flops": st.pe_flops,
        "dtype": st.dtype, "roof_engine": st.roof_engine, "peak_flops": st.peak_flops,
        "dma_bytes": st.dma_bytes, "hbm_bytes": st.hbm_bytes, "hbm_bytes_in_time": st.hbm_bytes_in_time,
        "dma_count": st.dma_count, "host_bytes": st.host_bytes, "bound": st.bound, "bound_reason": st.reason,
        "lane": st.lane, "own_cycles": st.own, "pe_active_cycles": st.pe_active,
        "pe_busy_cycles": st.pe_busy, "pe_occupancy": st.pe_occupancy, "pe_rows": st.pe_rows,
        "pe_cols": st.pe_cols, "pe_n": st.pe_n, "overlap_cycles": st.overlap,
        "copy_cycles": st.copy_cycles, "copy_count": st.copy_count, "copy_bytes": st.copy_bytes,
        "roof_floor_cycles": st.floor,
    }


def _fill(con: sqlite3.Connection, profile: Profile, extra_meta: dict) -> None:
    from device_model.assembly import format_instr
    from device_model.isa import ENGINE_INDEX, engine_kind

    meta = dict(profile.meta)
    meta.update(extra_meta)
    meta["schema_version"] = SCHEMA_VERSION
    meta["tool_version"] = __version__
    meta["window_start_cycle"], meta["window_end_cycle"] = profile.time_range
    con.executemany("INSERT INTO meta VALUES (?, ?)",
                    [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(meta.items())])
    con.executemany("INSERT INTO engines VALUES (?,?,?,?,?,?,?,?,?,?)", [
        (e.engine, ENGINE_INDEX[e.engine], engine_kind(e.engine), e.instructions, e.busy, e.wait, e.idle,
         e.critical, e.first_issue, e.last_end) for e in profile.engines])
    con.executemany("INSERT INTO engine_waits VALUES (?,?,?)", [
        (e.engine, src, cycles) for e in profile.engines for src, cycles in sorted(e.waits_on.items())])
    _insert(con, "layers", [_layer_row(st) for st in profile.layers])
    con.executemany(f"INSERT INTO instructions VALUES ({','.join('?' * 22)})", [
        (r.id, r.engine, r.index, r.instr.op, r.kind, r.dtype, r.layer, r.issue, r.end, r.cycles, r.wait,
         r.flops, r.bytes, r.sbuf, r.psum, r.released_by if r.released_by >= 0 else None,
         r.release_sem if r.release_sem >= 0 else None, int(r.critical), format_instr(r.instr),
         r.pe_rows, r.pe_cols, r.pe_n)
        for r in profile.selected])
    con.executemany("INSERT INTO dma_transfers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
        (r.id, r.engine, r.layer, r.instr.operands["src"].space, r.instr.operands["dst"].space, r.bytes,
         r.hbm_bytes, r.fabric_bytes, r.issue, r.transfer_end, r.end, r.runs,
         r.instr.operands["src"].dtype, r.instr.operands["dst"].dtype, r.hbm_kind)
        for r in profile.selected if r.instr.op == "dma_copy"])
    con.executemany("INSERT INTO counters VALUES (?,?,?,?)", [
        (c.name, c.unit, t, float(v)) for c in profile.counters for t, v in c.samples])
    con.executemany("INSERT INTO allocations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [
        (i, a.space, a.pstart, a.pcount, a.lo, a.hi - a.lo, a.bytes, a.layer, a.writer, a.first, a.last, a.reads)
        for i, a in enumerate(profile.allocations)])
    names = {i: name for i, (name, _op) in enumerate(profile.origins)}
    con.executemany("INSERT INTO critical_path VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
        (i, s.instr, s.engine, s.kind, s.layer, names.get(s.layer, "(no layer)"), s.start, s.end, s.via,
         s.gap, s.dtype, s.fabric_bytes, s.transfer_end, s.pe_n, s.hbm_kind)
        for i, s in enumerate(profile.critical_path)])


# ---------------------------------------------------------------------------------- reading
@dataclass
class ProfileData:
    """A profile database read back: meta plus rows (dicts) of each table summary/diff need."""

    path: Path
    meta: dict
    engines: list
    engine_waits: list
    layers: list
    critical_path: list
    kinds: list          # instruction kinds aggregated from the instructions table
    dma: dict            # DMA totals from dma_transfers
    counter_peaks: dict  # counter name -> max value
    dma_queues: list = None       # per queue: transfers, bytes, fabric_bytes, hbm_bytes, busy_cycles, runs
    dma_sizes: list = None        # payload bytes of every transfer
    pe_flops_by_dtype: dict = None  # matmul dtype -> FLOPs
    allocations_top: list = None    # the largest SBUF/PSUM reservations by bytes x cycles

    @property
    def clock_ghz(self) -> float:
        return float(self.meta["clock_ghz"])

    def us(self, cycles: float) -> float:
        return cycles / (self.clock_ghz * 1e3)


def _decode(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, ValueError):
        return value


def open_profile(path: str | Path) -> ProfileData:
    """Load a profile from its database, or from the trace it was recorded with (found beside it)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a .pftrace or its {DB_SUFFIX}")
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        return load_database(path)
    return _load_for_trace(path)


def _load_for_trace(trace: Path) -> ProfileData:
    from .trace_validate import read_metadata, validate_trace

    try:
        meta = read_metadata(trace)
    except UserError:
        meta = {}
    db = trace.with_name(str(meta["profile_db"])) if meta.get("profile_db") else db_path_for(trace)
    if not meta or not db.is_file():
        problems = validate_trace(trace)
        if problems:
            raise UserError(f"{trace}: not a valid xpu-prof trace: {problems[0]}")
        if not db.is_file():
            raise UserError(f"{trace}: its profile database {db.name} is missing (it is written beside "
                            f"the trace by `xpu-prof record`); re-record, or pass the database itself")
    data = load_database(db)
    expected = data.meta.get("trace_sha256")
    if expected and file_sha256(trace) != expected:
        problems = validate_trace(trace)
        if problems:
            raise UserError(f"{trace}: the trace is broken ({problems[0]}); its database {db.name} is "
                            f"intact: run `xpu-prof summary {db}` or re-record")
        raise UserError(f"{trace}: does not match its profile database {db.name} (recorded for another "
                        f"trace); re-record, or pass the database itself")
    return data


def _connect_read_only(path: str | Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot open the profile database ({exc})") from None
    con.row_factory = sqlite3.Row
    return con


def load_database(path: Path) -> ProfileData:
    con = _connect_read_only(path)
    try:
        try:
            meta = {row["key"]: _decode(row["value"]) for row in con.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not an xpu-prof profile database ({exc})") from None
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{path}: profile database schema version {version} is not supported by "
                            f"xputools {__version__} (reads version {SCHEMA_VERSION}); re-record the "
                            f"profile with this version")
        try:
            return _read(con, path, meta)
        except (sqlite3.DatabaseError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: the profile database is damaged ({exc}); re-record it") from None
    finally:
        con.close()


def load_instructions(path: str | Path) -> list[dict]:
    """Every instruction row of a profile database (engine, pc, op, kind, layer, start/end cycle,
    wait, flops, bytes, critical, asm), in start order: what a timeline view draws."""
    con = _connect_read_only(path)
    try:
        return _rows(con, """
            SELECT i.id, i.engine, i.pc, i.op, i.kind, i.dtype, i.layer, COALESCE(l.name, '') AS layer_name,
                   i.start_cycle, i.end_cycle, i.cycles, i.wait_cycles, i.flops, i.bytes, i.critical, i.asm
            FROM instructions i LEFT JOIN layers l ON l.layer = i.layer ORDER BY i.start_cycle, i.id""")
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: the profile database is damaged ({exc}); re-record it") from None
    finally:
        con.close()


def _rows(con, sql: str) -> list[dict]:
    return [dict(row) for row in con.execute(sql)]


def _read(con: sqlite3.Connection, path: Path, meta: dict) -> ProfileData:
    for key in ("cycles", "clock_ghz", "arch"):
        if key not in meta:
            raise KeyError(f"meta has no {key!r}")
    engines = _rows(con, "SELECT * FROM engines ORDER BY position")
    waits = _rows(con, "SELECT * FROM engine_waits ORDER BY engine, cycles DESC")
    layers = _rows(con, "SELECT * FROM layers ORDER BY layer")
    critical = _rows(con, "SELECT * FROM critical_path ORDER BY step")
    kinds = _rows(con, """
        SELECT CASE WHEN engine LIKE 'dma%' THEN 'dma' ELSE engine END AS engine, kind, dtype,
               COUNT(*) AS count, SUM(cycles) AS cycles, SUM(flops) AS flops, SUM(bytes) AS bytes
        FROM instructions GROUP BY 1, kind, dtype ORDER BY cycles DESC, count DESC, kind""")
    dma = dict(con.execute("""
        SELECT COUNT(*) AS transfers, COALESCE(SUM(bytes), 0) AS bytes,
               COALESCE(SUM(hbm_bytes), 0) AS hbm_bytes, COALESCE(SUM(fabric_bytes), 0) AS fabric_bytes,
               COALESCE(SUM(runs), 0) AS runs,
               COALESCE(SUM(end_cycle - start_cycle), 0) AS busy_cycles
        FROM dma_transfers""").fetchone())
    queues = _rows(con, """
        SELECT queue, COUNT(*) AS transfers, SUM(bytes) AS bytes, SUM(fabric_bytes) AS fabric_bytes,
               SUM(hbm_bytes) AS hbm_bytes, SUM(end_cycle - start_cycle) AS busy_cycles, SUM(runs) AS runs
        FROM dma_transfers GROUP BY queue ORDER BY CAST(SUBSTR(queue, 4) AS INTEGER)""")
    sizes = [row[0] for row in con.execute("SELECT bytes FROM dma_transfers ORDER BY id")]
    pe_flops = {row[0]: row[1] for row in con.execute(
        "SELECT dtype, SUM(flops) FROM instructions WHERE op = 'matmul' GROUP BY dtype ORDER BY dtype")}
    dma["active_cycles"] = _active_cycles(con)
    peaks = {row["name"]: row["peak"] for row in
             con.execute("SELECT name, MAX(value) AS peak FROM counters GROUP BY name")}
    allocs = _rows(con, """
        SELECT a.space, a.partition_start, a.partitions, a.offset, a.bytes_per_partition, a.bytes,
               COALESCE(l.name, '(no layer)') AS layer_name, a.start_cycle, a.end_cycle, a.reads
        FROM allocations a LEFT JOIN layers l ON l.layer = a.layer
        ORDER BY a.bytes * (a.end_cycle - a.start_cycle) DESC, a.id LIMIT 10""")
    return ProfileData(path, meta, engines, waits, layers, critical, kinds, dma, peaks, queues, sizes, pe_flops,
                       allocs)


def _active_cycles(con: sqlite3.Connection) -> int:
    """Cycles during which at least one DMA transfer was in flight."""
    total, cur_start, cur_end = 0, None, None
    for start, end in con.execute("SELECT start_cycle, end_cycle FROM dma_transfers ORDER BY start_cycle"):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total
