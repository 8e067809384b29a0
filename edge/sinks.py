"""Where results go. Every write is atomic: a JSONL line is written whole in one append,
an image or report goes to a temporary file that is renamed into place, so a crash or a pulled
plug never leaves half a file and never loses a result already written."""

from __future__ import annotations

import collections
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that a reader never sees half a file: a temporary file beside it,
    then a rename. On any failure (full disk, read-only folder) the temporary file is removed and
    the error raised: nothing half-written is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


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


OVERLAY_POLICIES = ("all", "flagged", "every:N", "none")
OVERLAY_FORMATS = ("png", "jpg")


def overlay_relpath(source: str, root: Path | None) -> Path:
    """Where a source's overlay goes below the run's overlay folder, so that no two sources share
    one: a file mirrors its path below the source folder with its own suffix kept
    (`d1/smear.jpg` -> `d1/smear.jpg`, `img.bmp` and `img.webp` stay apart; the format's suffix is
    added after); a video or camera frame `NAME#i` -> `NAME/00000012`."""
    path, sep, index = source.partition("#")
    if sep:
        return Path(Path(path).name or "frame") / f"{int(index):08d}"
    p = Path(path)
    if root is not None:
        try:
            return p.resolve().relative_to(Path(root).resolve())
        except ValueError:
            pass
    return Path(*[part for part in p.resolve().parts if part not in (p.resolve().anchor,)])


class OverlayFiles:
    """Writes overlays below `out/overlays/<run id>/` (a new folder per run: an overlay never
    replaces an input or an earlier run's overlay), by an overlay policy, within a disk budget.

    policy: "all"; "flagged" (only records a person must look at: uncertain, retake, abnormal,
    flagged by the gate); "every:N" (every N-th record, plus every flagged one); "none".
    budget_bytes: when this run's overlays reach it, writing stops with one message (`rotate`:
    the oldest overlays of this run are deleted instead, so the newest are always there)."""

    def __init__(self, out: str | os.PathLike, run_id: str, *, root: Path | None = None, policy: str = "all",
                 image_format: str = "png", budget_bytes: int | None = None, rotate: bool = False,
                 warn=None):
        self.folder = Path(out) / "overlays" / run_id
        self.root = root
        self.every = parse_overlay_policy(policy)
        self.policy = policy
        if image_format not in OVERLAY_FORMATS:
            raise ValueError(f"overlay format {image_format!r}; expected one of {', '.join(OVERLAY_FORMATS)}")
        self.suffix = "." + image_format
        self.budget = budget_bytes
        self.rotate = rotate
        self.used = 0
        self.stopped = False
        self._written: "collections.deque[tuple[Path, int]]" = collections.deque()
        self._warn = warn or (lambda message: None)

    def wanted(self, record) -> bool:
        """Does this record get an overlay file under the policy (and the budget)?"""
        if record.result is None or self.every == 0 or self.stopped:
            return False
        if self.every == 1 or record.needs_attention:
            return True
        return self.every > 0 and record.seq % self.every == 0

    def write(self, record, overlay) -> Path | None:
        from edgecell.images import encode_image

        data = encode_image(overlay, self.suffix)
        if self.budget is not None and self.used + len(data) > self.budget:
            if not self.rotate:
                self.stopped = True
                self._warn(f"overlays stopped: this run's overlays reached the {_size_text(self.budget)} budget "
                           f"(--overlay-budget); results go on in results.jsonl and results.csv")
                return None
            while self._written and self.used + len(data) > self.budget:
                old, size = self._written.popleft()
                old.unlink(missing_ok=True)
                self.used -= size
        rel = overlay_relpath(record.source, self.root)
        path = write_bytes_atomic(self.folder / rel.with_name(rel.name + self.suffix), data)
        self.used += len(data)
        if self.budget is not None and self.rotate:
            self._written.append((path, len(data)))
        return path


def parse_overlay_policy(policy: str) -> int:
    """"all" -> 1, "none" -> 0, "flagged" -> -1 (flagged only), "every:N" -> N."""
    if policy == "all":
        return 1
    if policy == "none":
        return 0
    if policy == "flagged":
        return -1
    kind, _, n = policy.partition(":")
    if kind == "every" and n.isdigit() and int(n) >= 1:
        return int(n)
    from edgecell.errors import EdgecellError

    raise EdgecellError(f"--overlays {policy!r}: expected all, flagged, every:N (N >= 1) or none")


def parse_size(text: str) -> int:
    """"500MB", "2GB", "1.5G", "800k", "123" (bytes) -> bytes."""
    from edgecell.errors import EdgecellError

    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "t": 10**12, "tb": 10**12}
    raw = str(text).strip().lower()
    number = raw.rstrip("kmgtb")
    try:
        value = float(number) * units[raw[len(number):]]
    except (ValueError, KeyError):
        value = -1
    if value <= 0:
        raise EdgecellError(f"--overlay-budget {text!r}: expected a size such as 500MB or 2GB")
    return int(value)


def _size_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 10**9 else f"{n / 1e6:.0f} MB"


def open_output_sinks(out: str | os.PathLike) -> list:
    """The results files a run appends to in `out`: results.jsonl and results.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [JsonlSink(out / "results.jsonl"), CsvSink(out / "results.csv")]
