"""Summaries of a run's records: tables (Markdown and console) and a plot.

One table per (layout, mode), one row per (shape, dtype): the floor, each implementation's median
time and fraction of the floor, and flashmarkov's ratio to the best peer. Built from the records
alone, so a JSON file can be re-rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import COPY, FRACTION, Record
from .registry import OPS, OURS, load_op

LEGEND = (
    "Cells: median ms (fraction of the {floor}; 1 is the floor). Last column: the best "
    "peer's time / flashmarkov's (> 1: flashmarkov is faster). *wrong*: further from the float64 "
    "reference than the dtype's tolerance, not timed; *failed*: raised or crashed (see the JSON)."
)


def _floor(records: list[Record]) -> str:
    """The op's name for its floor (``Op.floor``), from the records' op."""
    op = next((r["op"] for r in records if r.get("op") in OPS), None)
    return load_op(op).floor if op else "floor"


NUMERIC = ("floor ms", "flashmarkov", "its time", "peer/ours")
STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def _cell(record: Record | None) -> str:
    if record is None:
        return ""
    if record["status"] == "ok":
        return f"{record['median_ms']:.3g} ({record['value']:.2g})"
    if record["status"] == "wrong" and record["rel_err"] is not None:
        return f"wrong ({record['rel_err']:.0e})"
    return record["status"]


def _fastest(records: list[Record]) -> Record | None:
    timed = [r for r in records if r["status"] == "ok"]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None


def _ratio(record: Record | None) -> str:
    return f"{record['ratio_to_best_peer']:.2f}×" if record and record["ratio_to_best_peer"] else "–"


def _by_row(records: list[Record]) -> dict[tuple[str, str, str, str], list[Record]]:
    """Result records grouped by (layout, mode, shape, dtype), in run order."""
    rows: dict[tuple[str, str, str, str], list[Record]] = {}
    for r in records:
        if r["metric"] == FRACTION:
            rows.setdefault((r["layout"], r["mode"], "x".join(map(str, r["shape"])), r["dtype"]), []).append(r)
    return rows


def tables(records: list[Record], op: str) -> list[Table]:
    """One table per (layout, mode) with a column per implementation."""
    groups: dict[tuple[str, str], dict[tuple[str, str], list[Record]]] = {}
    for (layout, mode, shape, dtype), row in _by_row(records).items():
        groups.setdefault((layout, mode), {})[(shape, dtype)] = row
    result = []
    for (layout, mode), rows in groups.items():
        impls = list(dict.fromkeys(r["impl"] for row in rows.values() for r in row))
        body = []
        for (shape, dtype), row in rows.items():
            by_impl = {r["impl"]: r for r in row}
            ours = _fastest([r for r in row if r["impl"].startswith(OURS)])
            cells = [_cell(by_impl.get(impl)) for impl in impls]
            body.append([shape, dtype, f"{row[0]['floor_ms']:.3g}", *cells, _ratio(ours)])
        header = ["shape", "dtype", "floor ms", *impls, "flashmarkov vs best peer"]
        result.append(Table(f"{op} {layout} {mode}", header, body))
    return result


def compact(records: list[Record]) -> Table:
    """One row per case: flashmarkov's time and fraction of the floor, the best peer's, the ratio."""
    body = []
    for (layout, mode, shape, dtype), row in _by_row(records).items():
        ours_all = [r for r in row if r["impl"].startswith(OURS)]
        ours = _fastest(ours_all) or next(iter(ours_all), None)
        peer = _fastest([r for r in row if not r["impl"].startswith(OURS)])
        peer_cells = [peer["impl"], _cell(peer)] if peer else ["–", "–"]
        body.append(
            [layout, mode, shape, dtype, f"{row[0]['floor_ms']:.3g}", _cell(ours) or "–", *peer_cells, _ratio(ours)]
        )
    header = ["layout", "mode", "shape", "dtype", "floor ms", "flashmarkov", "best peer", *NUMERIC[2:]]
    return Table(f"ms (fraction of the {_floor(records)})", header, body)


def _provenance(records: list[Record]) -> str:
    """The first run's machine, versions, commit and date; records merged from other runs
    (``benchmarks/merge_results.py``) add their commits, each record keeping its own in the JSON."""
    copy = next(r for r in records if r["metric"] == COPY)
    line = (
        f"{copy['gpu']} · torch {copy['torch']} · triton {copy['triton']} · commit {copy['commit']} · "
        f"{copy['date']} · copy bandwidth {copy['value']:.0f} GB/s (read + write) · timer: {copy['timer']}"
    )
    others = sorted({(r["commit"], r["date"][:10]) for r in records} - {(copy["commit"], copy["date"][:10])})
    if others:
        line += " · rows merged from " + ", ".join(f"commit {c} ({d})" for c, d in others) + " (each record's commit is in the JSON)"
    return line


def markdown(records: list[Record], op: str) -> str:
    lines = [f"# {op} benchmark", "", _provenance(records), "", LEGEND.format(floor=_floor(records))]
    for table in tables(records, op):
        lines += ["", f"## {table.title}", "", "| " + " | ".join(table.header) + " |"]
        lines.append("|" + "---|" * len(table.header))
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def print_summary(records: list[Record]) -> None:
    """The compact table and the provenance on stdout, with rich when it is installed."""
    table = compact(records)
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        widths = [max(len(row[i]) for row in [table.header, *table.rows]) for i in range(len(table.header))]
        print(table.title)
        for row in [table.header, *table.rows]:
            print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        print(_provenance(records))
        return
    rich_table = RichTable(title=table.title, title_justify="left")
    for column in table.header:
        rich_table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in table.rows:
        rich_table.add_row(*row)
    console = Console(width=max(120, Console().width))
    console.print(rich_table)
    console.print(_provenance(records), highlight=False)


def _draw(axes: Any, panel: list[Record], impls: list[str], dtypes: list[str], x_label: str, title: str) -> None:
    """One row of the plot: time with the floor (left), fraction of the floor (right)."""
    time_axis, fraction_axis = axes
    for dtype in dtypes:
        style = STYLES[dtypes.index(dtype) % len(STYLES)]
        floor = sorted({(r["x"], r["floor_ms"]) for r in panel if r["dtype"] == dtype})
        if floor:
            xs, ms = zip(*floor, strict=True)
            time_axis.plot(xs, ms, style, marker="_", color="black", alpha=0.5, label=f"floor {dtype}")
        for impl in impls:
            points = sorted(
                (r["x"], r["median_ms"], r["value"]) for r in panel if (r["impl"], r["dtype"]) == (impl, dtype)
            )
            if points:
                xs, ms, fractions = zip(*points, strict=True)
                line = {"color": f"C{impls.index(impl) % 10}", "marker": "o", "label": f"{impl} {dtype}"}
                time_axis.plot(xs, ms, style, **line)
                fraction_axis.plot(xs, fractions, style, **line)
    time_axis.set(yscale="log", xlabel=x_label, ylabel="median ms", title=f"{title}: time")
    fraction_axis.set(xlabel=x_label, ylabel="fraction of floor", title=f"{title}: fraction of floor")
    fraction_axis.set_ylim(0, max([1.05] + [r["value"] * 1.05 for r in panel]))
    handles, labels = time_axis.get_legend_handles_labels()
    fraction_axis.legend(handles, labels, fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    for axis in axes:
        axis.set_xscale("log", base=2)
        axis.grid(True, alpha=0.3)


def plot(records: list[Record], path: Path, x_label: str) -> None:
    """Median time (with the floor) and fraction of the floor against ``x``, one row of panels per
    (layout, mode); from the sweep records when the run has them, else from all timed records."""
    from matplotlib.figure import Figure

    timed = [r for r in records if r["metric"] == FRACTION and r["status"] == "ok"]
    timed = [r for r in timed if r["sweep"]] or timed
    panels = list(dict.fromkeys((r["layout"], r["mode"]) for r in timed))
    rows = max(1, len(panels))
    figure = Figure(figsize=(14, 1 + 3.4 * rows))
    axes = figure.subplots(rows, 2, squeeze=False)
    figure.subplots_adjust(left=0.06, right=0.8, top=0.95, bottom=0.06, wspace=0.2, hspace=0.45)
    impls = list(dict.fromkeys(r["impl"] for r in timed))
    dtypes = list(dict.fromkeys(r["dtype"] for r in timed))
    for (layout, mode), row in zip(panels, axes, strict=False):
        panel = [r for r in timed if (r["layout"], r["mode"]) == (layout, mode)]
        _draw(row, panel, impls, dtypes, x_label, f"{layout} {mode}")
    figure.savefig(path, dpi=110)
