"""``nose report``: compare evaluation runs; plots from run and search folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nose.cli.common import JsonOpt, user_errors
from nose.errors import NoseError


@user_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Folders (or results.json files) from nose evaluate; "
                                                    "the first is the base.")],
    names: Annotated[str | None, typer.Option(help="Comma-separated column names (default: folder names).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write report.md and plots here.")] = None,
    search: Annotated[Path | None, typer.Option(help="A nose search folder: add its plots.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Table of metrics with % change against the first run (thesis Table 4.1), and plots."""
    from nose.files import check_output_dir
    from nose.report.compare import comparison, load_run, plot_ca_by_type, to_markdown

    loaded = [load_run(r) for r in runs]
    labels = [s.strip() for s in names.split(",")] if names else [Path(r).name for r in runs]
    if len(labels) != len(loaded):
        raise NoseError(f"--names gives {len(labels)} names for {len(loaded)} runs")
    record = None
    if search is not None:
        from nose.search.record import read_record

        record = read_record(search)
    if out is not None:
        check_output_dir(out)
    table = comparison(loaded, labels)
    markdown = to_markdown(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(markdown)
        plot_ca_by_type(loaded, labels, out / "ca_by_type.png")
        if record is not None:
            from nose.report.search_plots import plot_search

            plot_search(record, out)
    if json_out:
        typer.echo(json.dumps(table, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="nose report")
    t.add_column("metric")
    for label in labels:
        t.add_column(label, justify="right")
    from nose.report.compare import fmt

    for row in table["rows"]:
        cells = [fmt(row["values"][0])] + [fmt(v) + ("" if d is None else f" ({d:+.1f}%)")
                                            for v, d in zip(row["values"][1:], row["delta_percent"][1:])]
        t.add_row(escape(row["metric"]), *cells)
    Console().print(t)
    if out is not None:
        typer.echo(f"wrote {out / 'report.md'}")
