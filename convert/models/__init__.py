"""Keras model definitions used by the training commands (need the `train` extra)."""

from edgecell.convert.models.centernet import build_centernet
from edgecell.convert.models.tiny_yolo import build_tiny_yolo

__all__ = ["build_centernet", "build_tiny_yolo"]
