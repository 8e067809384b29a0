"""Typed errors. Every user-facing failure is an `EdgecellError` whose message is one line
that says what was expected and how to fix it; the CLI prints it without a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class EdgecellError(Exception):
    """Base class: a problem the user can fix (bad input, missing backend, wrong model)."""


class ImageError(EdgecellError):
    """An image that cannot be decoded or is not usable (empty, truncated, too large)."""


class ModelError(EdgecellError):
    """A model file that cannot be loaded, or does not fit the task or the input."""


class BackendNotInstalled(EdgecellError):
    """The backend asked for is not installed; the message names the extra to install."""


class OutputError(EdgecellError):
    """An output cannot be written (full disk, read-only folder): the run stops, what was written stays."""


class SourceError(EdgecellError):
    """A source (file, folder, video, camera, URL) that cannot be opened or read."""


def script_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorator for `python -m edgecell....` scripts: a user error (`EdgecellError`) becomes one
    line `error: ...` on stderr and exit status 2, never a traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except EdgecellError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped
