"""How a run looks to a person: the closing table, from a `RunSummary` (running totals plus the
first and last records), never from the whole list of records."""

from __future__ import annotations

from pathlib import Path

from edgecell.pipeline import Record, RunSummary


def source_label(source: str) -> str:
    """A short name for a table row: the file name, with `#frame` for video and camera frames."""
    path, sep, frame = source.partition("#")
    return Path(path).name + (sep + frame if sep else "")


def print_run_summary(summary: RunSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ran = summary.task_totals.results
    title = f"{ran} of {summary.inputs} inputs in {summary.elapsed:.1f} s"
    table = Table(show_lines=False, title=title + (f" ({summary.note})" if summary.note else ""))
    table.add_column("source", overflow="fold")
    classes = summary.task_totals.columns
    for c in classes:
        table.add_column(c, justify="right")
    if not classes:
        table.add_column("result")
    table.add_column("ms", justify="right")
    for record in summary.shown:
        table.add_row(*_row(record, classes))
    if classes and ran > 1:
        table.add_row("[bold]total[/]", *[f"[bold]{summary.task_totals.counts[c]}[/]" for c in classes], "")
    console.print(table)
    medians = summary.median_ms()
    if medians:
        console.print(f"per image: median {medians['total']:.1f} ms (pre {medians['pre']:.1f}, "
                      f"infer {medians['infer']:.1f}, post {medians['post']:.1f})", highlight=False)


def _row(record: Record, classes: list[str]) -> list[str]:
    name = source_label(record.source)
    blanks = [""] * (len(classes) - 1 if classes else 0)
    if not record.ok:
        return [name, *blanks, f"[red]{record.error}[/]", ""]
    result = record.result
    if result is None:
        return [name, *blanks, f"[yellow]rejected: {record.gate.reason() if record.gate else ''}[/]", ""]
    ms = f"{record.timings.total:.1f}"
    if classes:
        counts = result.class_counts() or {}
        flag = " [yellow](flagged)[/]" if record.action == "flagged" else ""
        flag += " [yellow](unfamiliar)[/]" if getattr(result, "unfamiliar", False) else ""  # counts not to be trusted
        return [name + flag, *[str(counts.get(c, 0)) for c in classes], ms]
    text = result.summary()
    if record.action == "flagged" and record.gate is not None:
        text += f" [yellow]flagged: utility {record.gate.utility:.2f}[/]"
    return [name, text, ms]
