"""Where results go. Every write is atomic: a JSONL line is written whole in one append,
an image or report goes to a temporary file that is renamed into place, so a crash or a pulled
plug never leaves half a file and never loses a result already written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO


class JsonlWriter:
    """Append one JSON object per line; each line is one write() on an O_APPEND descriptor and is
    flushed to the OS at once, so readers (and a crash) see whole lines only."""

    def __init__(self, path: str | os.PathLike | None = None, stream: IO[str] | None = None):
        self.path = Path(path) if path else None
        self.stream = stream
        self._fd = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=_jsonable) + "\n"
        if self._fd is not None:
            os.write(self._fd, line.encode())
        if self.stream is not None:
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def overlay_name(source: str, index: int) -> str:
    """A file name for a source's overlay: smear.jpg -> smear.png; camera0#12 -> camera0_000012.png."""
    if "#" in source:
        stem = Path(source.split("#")[0]).stem or "frame"
        return f"{stem}_{index:06d}.png"
    return Path(source).stem + ".png"


# ----------------------------------------------------------------------------- run sinks
# Each receives every record of a run as it is made (the `edgecell.pipeline.Sink` protocol).


class JsonlSink:
    """results.jsonl (and/or a stream such as stdout for `--json`): one whole line per record."""

    def __init__(self, path: str | os.PathLike | None = None, stream: IO[str] | None = None):
        self.writer = JsonlWriter(path, stream)

    def write(self, record, image=None, overlay=None) -> None:
        self.writer.write(record.to_dict())

    def close(self) -> None:
        self.writer.close()


class CsvSink:
    """results.csv written row by row as records come (whole rows, one append each), so a run
    killed by any signal leaves every finished row; a second run into the same folder appends
    under the header already there. The columns are fixed by the file's existing header, else by
    the first record that has a result (rows before it wait in memory until then, or until close);
    a column a later row lacks is left empty, a key the header lacks is left out (the JSONL line
    has everything)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = _csv_header(self.path)
        self._waiting: list[dict] = []
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record, image=None, overlay=None) -> None:
        row = record.csv_row()
        if self.columns is None:
            self._waiting.append(row)
            if record.result is None:
                return
            self._start(self._waiting)
            return
        self._append([row])

    def _start(self, rows: list[dict]) -> None:
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        self.columns = columns
        self._waiting = []
        self._append(rows, header=True)

    def _append(self, rows: list[dict], header: bool = False) -> None:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        os.write(self._fd, buf.getvalue().encode())

    def close(self) -> None:
        if self._fd is None:
            return
        if self.columns is None and self._waiting:
            self._start(self._waiting)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None


def _csv_header(path: Path) -> list[str] | None:
    """The columns of an existing results.csv (its first line), or None for a new or empty file."""
    import csv

    if not path.is_file() or path.stat().st_size == 0:
        return None
    with path.open(newline="") as f:
        first = f.readline()
    return next(csv.reader([first])) if first.strip() else None


class OverlayFiles:
    """Writes each frame's overlay image into a folder (atomically) and returns its path."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def write(self, frame, overlay) -> Path:
        from edgecell.images import write_image_atomic

        return write_image_atomic(self.folder / overlay_name(frame.name, frame.index), overlay)


def open_output_sinks(out: str | os.PathLike) -> tuple[list, OverlayFiles]:
    """The files a run writes into `out`: results.jsonl and results.csv sinks, and the overlay writer."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [JsonlSink(out / "results.jsonl"), CsvSink(out / "results.csv")], OverlayFiles(out)
