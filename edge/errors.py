"""Typed errors. Every user-facing failure is an `EdgecellError` whose message is one line
that says what was expected and how to fix it; the CLI prints it without a traceback."""

from __future__ import annotations


class EdgecellError(Exception):
    """Base class: a problem the user can fix (bad input, missing backend, wrong model)."""


class ImageError(EdgecellError):
    """An image that cannot be decoded or is not usable (empty, truncated, too large)."""


class ModelError(EdgecellError):
    """A model file that cannot be loaded, or does not fit the task or the input."""


class BackendNotInstalled(EdgecellError):
    """The backend asked for is not installed; the message names the extra to install."""


class SourceError(EdgecellError):
    """A source (file, folder, video, camera, URL) that cannot be opened or read."""
