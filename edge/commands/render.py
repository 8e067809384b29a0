"""How a run looks to a person: the closing table, from a `RunSummary` (running totals plus the
first and last records), never from the whole list of records."""

from __future__ import annotations

from pathlib import Path

from edgecell.pipeline import Record, RunSummary


def source_label(source: str) -> str:
    """A short name for a table row: the file name, with `#frame` for video and camera frames."""
    path, sep, frame = source.partition("#")
    return Path(path).name + (sep + frame if sep else "")


#: more classes than this go into one "counts" column of the non-zero ones: 13 morphology classes
#: as columns fold every cell to a letter on an 80-column console (a Pi's screen, a pipe)
MAX_CLASS_COLUMNS = 5


def print_run_summary(summary: RunSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ran = summary.task_totals.results
    title = f"{ran} of {summary.inputs} inputs in {summary.elapsed:.1f} s"
    table = Table(show_lines=False, title=title + (f" ({summary.note})" if summary.note else ""))
    table.add_column("source", overflow="fold")
    classes = summary.task_totals.columns
    folded = len(classes) > MAX_CLASS_COLUMNS
    if folded:
        table.add_column("counts", overflow="fold")
    for c in [] if folded else classes:
        table.add_column(c, justify="right")
    if not classes:
        table.add_column("result")
    verdicts = bool(classes) and any(r.result is not None and r.result.verdict() for r in summary.shown)
    if verdicts:
        table.add_column("flag", overflow="fold")
    table.add_column("ms", justify="right")
    for record in summary.shown:
        table.add_row(*_row(record, classes, folded, verdicts))
    if classes and ran > 1:
        totals = summary.task_totals.counts
        cells = [_nonzero(totals)] if folded else [str(totals[c]) for c in classes]
        table.add_row("[bold]total[/]", *[f"[bold]{c}[/]" for c in cells], *([""] if verdicts else []), "")
    console.print(table)
    medians = summary.median_ms()
    if medians:
        console.print(f"per image: median {medians['total']:.1f} ms (pre {medians['pre']:.1f}, "
                      f"infer {medians['infer']:.1f}, post {medians['post']:.1f})", highlight=False)


def _nonzero(counts: dict[str, int]) -> str:
    """`normal 96, ovalocyte 5, burr 1`: the classes that occur, most first; `0` when none do."""
    shown = [f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n]
    return ", ".join(shown) or "0"


def _row(record: Record, classes: list[str], folded: bool = False, verdicts: bool = False) -> list[str]:
    name = source_label(record.source)
    width = (1 if folded else len(classes)) + int(verdicts)
    blanks = [""] * (width - 1 if classes else 0)
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
        cells = [_nonzero(counts)] if folded else [str(counts.get(c, 0)) for c in classes]
        verdict = result.verdict()
        marked = f"[yellow]{verdict}[/]" if verdict and result.needs_attention else verdict
        return [name + flag, *cells, *([marked] if verdicts else []), ms]
    text = result.summary()
    if record.action == "flagged" and record.gate is not None:
        text += f" [yellow]flagged: utility {record.gate.utility:.2f}[/]"
    return [name, text, ms]
