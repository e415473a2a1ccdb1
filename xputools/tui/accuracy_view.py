"""The Accuracy screen: a view over an `xpu acc compare` result (xputools.accuracy.compare): the
per-tensor table (local vs accumulated, worst first or in graph order: `o`), the accumulated SQNR
along the graph as a sparkline, the culprits; Enter on a row: debug here; `k`: keep that node at
fp32 and re-run the comparison (in a worker)."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, LoadingIndicator, Sparkline, Static

SQNR_CAP = 120.0  # an exact match has infinite SQNR: drawn at the cap


def _sqnr(metrics: dict | None) -> float | None:
    if not metrics:
        return None
    v = metrics.get("sqnr_db")
    return None if v is None else float(v)


def _cell(metrics: dict | None) -> Text:
    v = _sqnr(metrics)
    if v is None:
        return Text("-", style="dim")
    style = "bold red" if v < 20 else ("yellow" if v < 40 else "green")
    return Text("exact" if math.isinf(v) else f"{v:.1f}", style=style)


def ordered_rows(doc: dict, worst_first: bool) -> list[dict]:
    """The compared tensors, in graph order or worst accumulated SQNR first."""
    rows = [r for r in doc["tensors"] if r.get("accumulated") or r.get("local")]
    if worst_first:
        rows = sorted(rows, key=lambda r: (_sqnr(r.get("accumulated")) if _sqnr(r.get("accumulated")) is not None
                                           else math.inf))
    return rows


class AccuracyView(Vertical):
    BINDINGS = [Binding("o", "order", "Worst/graph order"), Binding("k", "keep", "Keep fp32 + re-run")]

    def __init__(self, loader: Callable[[list[tuple[str, str]]], dict], **kw):
        super().__init__(**kw)
        self.loader = loader
        self.keep: list[tuple[str, str]] = []
        self.doc: dict | None = None
        self.worst_first = True

    def compose(self) -> ComposeResult:
        yield Static("", id="acc-head")
        yield Sparkline([], id="acc-spark")
        with Horizontal(id="acc-bottom"):
            table = DataTable(id="acc-table", cursor_type="row", zebra_stripes=True)
            table.border_title = "tensors: SQNR dB (Enter: debug here, k: keep fp32)"
            yield table
            yield VerticalScroll(Static("", id="acc-culprits-text"), id="acc-culprits")
        yield LoadingIndicator(id="acc-loading")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("node", "op", "where", "local", "accum", "max abs")
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="accuracy")
    def _load(self) -> None:
        from xputools.errors import UserError

        try:
            doc, error = self.loader(list(self.keep)), ""
        except (UserError, OSError) as exc:
            doc, error = None, str(exc)
        except Exception as exc:  # never a traceback in the app
            doc, error = None, f"internal error: {type(exc).__name__}: {exc}"
        self.app.call_from_thread(self._loaded, doc, error)

    def _loaded(self, doc: dict | None, error: str) -> None:
        self.query_one("#acc-loading").display = False
        if doc is None:
            self.query_one("#acc-head", Static).update(Text(f"error: {error}", style="red"))
            return
        self.doc = doc
        outs = ", ".join(f"{o['name']} {_cell(o['accumulated']).plain} dB" for o in doc["outputs"])
        keep = ", ".join(f"{n}={p}" for n, p in (self.keep or []))
        self.query_one("#acc-head", Static).update(Text(
            f"{Path(doc['model']).name}  {doc['precision']} vs {doc['reference']}  outputs: {outs}" +
            (f"  keep: {keep}" if keep else ""), no_wrap=True, overflow="ellipsis"))
        graph = ordered_rows(doc, worst_first=False)
        self.query_one(Sparkline).data = [min(SQNR_CAP, _sqnr(r.get("accumulated")) or SQNR_CAP) for r in graph]
        self._fill()
        culprits = Text("culprits (local error)\n", style="bold")
        for c in doc["culprits"]:
            culprits.append(f"{c['rank']}. {c['node']} ({c['op']}) local {_cell(c['local']).plain} dB")
            if c.get("recovered_sqnr_db") is not None:
                culprits.append(f"; fp32 -> output {c['recovered_sqnr_db']:.1f} dB")
            culprits.append("\n")
        if not doc["culprits"]:
            culprits.append("(none: no node adds error)\n", style="dim")
        for e in doc.get("errors") or []:
            culprits.append(f"error: {e}\n", style="red")
        self.query_one("#acc-culprits-text", Static).update(culprits)

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for r in ordered_rows(self.doc, self.worst_first):
            acc = r.get("accumulated") or {}
            table.add_row(r["node"], r["op"], r["engine"], _cell(r.get("local")), _cell(r.get("accumulated")),
                          f"{acc.get('max_abs', 0):.3g}" if acc else "-", key=r["name"])

    def _selected_row(self) -> dict | None:
        table = self.query_one(DataTable)
        if self.doc is None or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.doc["tensors"] if r["name"] == key), None)

    def action_order(self) -> None:
        if self.doc is not None:
            self.worst_first = not self.worst_first
            self._fill()

    def action_keep(self) -> None:
        row = self._selected_row()
        if row is None:
            return
        node = row.get("group") or row["node"]
        if (node, "fp32") not in self.keep:
            self.keep.append((node, "fp32"))
        self.query_one("#acc-loading").display = True
        self.query_one("#acc-head", Static).update(f"re-running with {node} kept at fp32 ...")
        self._load()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self._selected_row()
        if row is not None:
            self.app.run_debug_command(f"tbreak node {row['node']}")
            self.app.run_debug_command("run")
