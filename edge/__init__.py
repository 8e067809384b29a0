"""edgecell: run medical and retail image models on low-power devices.

The runtime (this package) needs numpy, OpenCV and one inference backend
(LiteRT, OpenVINO or ONNX Runtime). Training and quantization live in
`edgecell.convert` and `edgecell.calibration` and need the `train` extra.
"""

__version__ = "0.1.0"

from edgecell.errors import EdgecellError  # noqa: E402

__all__ = ["EdgecellError", "__version__"]
