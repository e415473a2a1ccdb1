"""The Profile screen: a view over a profile database (xputools.profile): the timeline, the
selected instruction, the per-layer table (Enter: debug here) and the summary (engines, critical
path, recommendations) from `build_summary`. The profile loads in a worker."""
from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, LoadingIndicator, Static

from .widgets.timeline import Timeline, layer_colour


def summary_text(s: dict) -> Text:
    """Engines, critical path and recommendations of a `build_summary` dict, as terminal text."""
    out = Text()
    out.append(f"{s['model'] or 'program'}  {s['arch']} {s['precision']}  ", style="bold")
    out.append(f"latency {s['latency']['us']} us ({s['latency']['cycles']} cycles)  {s['status']}\n")
    out.append("engines          busy%  wait%  idle%\n", style="bold")
    for e in s["engines"]:
        out.append(f"{e['engine']:<15} {e['busy_pct']:>6} {e['wait_pct']:>6} {e['idle_pct']:>6}\n")
    crit = s["critical_path"]
    out.append(f"critical path {crit['us']} us, {crit['instructions']} instructions\n", style="bold")
    for k, v in list(crit["by_engine"].items())[:6]:
        out.append(f"  {k:<10} {v}%\n")
    out.append("recommendations\n", style="bold")
    for r in s["recommendations"] or []:
        out.append(f" {r['rank']}. ", style="bold")
        out.append(f"[{r['impact_us']} us] {r['message']}\n")
    if not s["recommendations"]:
        out.append("  (none)\n", style="dim")
    return out


class ProfileView(Vertical):
    def __init__(self, loader: Callable, **kw):
        super().__init__(**kw)
        self.loader = loader
        self.data = None
        self.summary: dict | None = None

    def compose(self) -> ComposeResult:
        yield LoadingIndicator()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exit_on_error=False, group="load")
    def _load(self) -> None:
        from xputools.errors import UserError
        from xputools.profile.database import load_instructions
        from xputools.profile.summary import build_summary

        try:
            data = self.loader()
            result = (data, build_summary(data), load_instructions(data.path), "")
        except (UserError, OSError) as exc:
            result = (None, None, [], str(exc))
        except Exception as exc:  # never a traceback in the app
            result = (None, None, [], f"internal error: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self._loaded, *result)

    def _loaded(self, data, summary, instrs, error: str) -> None:
        self.query_one(LoadingIndicator).remove()
        if data is None:
            self.mount(Static(Text(f"error: {error}", style="red")))
            return
        self.data, self.summary = data, summary
        engines = [e["engine"] for e in data.engines]
        timeline = Timeline(instrs, engines, int(data.meta["cycles"]), id="timeline")
        table = DataTable(id="layers", cursor_type="row", zebra_stripes=True)
        table.border_title = "layers (Enter: debug here)"
        table.add_columns("layer", "op", "us", "%", "crit%", "bound")
        for row in summary["layers"]:
            table.add_row(Text(row["name"], style=layer_colour(row["name"])), row["op_type"], row["time_us"],
                          row["share_pct"], row["critical_pct"], row["bound"], key=row["name"])
        side = VerticalScroll(Static(summary_text(summary)), id="prof-summary")
        self.mount(timeline, Static("", id="instr-detail"), Horizontal(table, side, id="prof-bottom"))
        self._show(timeline.selected)
        if self.app.debugger is None:
            timeline.focus()

    def on_timeline_selected(self, event: Timeline.Selected) -> None:
        self._show(event.instr)

    def _show(self, ins: dict | None) -> None:
        detail = self.query_one("#instr-detail", Static)
        if ins is None:
            detail.update("")
            return
        detail.update(Text(f"{ins['engine']}:{ins['pc']} [{ins['layer_name']}] {ins['kind']} {ins['dtype']}  "
                           f"cycles {ins['start_cycle']}..{ins['end_cycle']} ({ins['cycles']}, wait "
                           f"{ins['wait_cycles']}){'  critical' if ins['critical'] else ''}  {ins['asm']}",
                           no_wrap=True, overflow="ellipsis"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        name = event.row_key.value
        self.app.run_debug_command(f"tbreak node {name}")
        self.app.run_debug_command("run")
