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
