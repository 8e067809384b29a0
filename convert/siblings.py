"""OpenVINO IR and ONNX siblings of a full-integer INT8 `.tflite`, checked against LiteRT.

    python -m edgecell.convert.siblings edge/models/cells_int8.tflite --out edge/models \\
        [--images DIR_OR_FILES ...] [--formats xml onnx]

Why from the `.tflite`: the shipped INT8 file is the model that was measured and carded; the
Keras sources are not kept. Both readers keep its INT8 arithmetic (same weights, scales and zero
points; no re-quantization, no calibration):

- IR: OpenVINO's TFLite frontend reads the file (`ov.convert_model`), `ov.save_model` writes it;
- ONNX: tf2onnx reads the file into a QDQ graph (QuantizeLinear/DequantizeLinear around every
  integer tensor).

Both readers keep the file's int8 input and output ports, which neither IR nor ONNX can label with
a scale and zero point (edgecell refuses such files rather than guess). So the siblings get float
ports: the input is quantized inside the model (x * (1 / scale) in float32, round half to even, + zero point,
saturate: what LiteRT's caller does) and the outputs dequantized ((q - zero point) * scale). Any
OpenVINO or ONNX Runtime user then feeds floats and gets floats, with no side contract.

Each sibling is written beside the others with the source's stem (`cells_int8.xml` + `.bin`,
`cells_int8.onnx`), so it shares the source's sidecar JSON (copied to `--out` with the files its task
reads beside it, as the X-ray head or the product statistics' .npz); then every given image goes through
`load_model` + `pipeline.predict` on the sibling and on LiteRT with the source, and the answers are
compared (`edgecell.backends.agreement`). Two INT8 engines round a few intermediate values
differently, which can flip a near-tie top-1; a sibling that agrees on fewer than `--min-agreement`
of the images (default 98 %: a near-tie flips on 1-2 % of images, as between any two INT8 engines) is deleted and the command exits 1. The images it answers
differently are listed. (The shipped samples must agree exactly: tests/backends.) The printed JSON (sizes, SHA-256, agreement) is what the model card rows need;
accuracy on the card's held-out split comes from `edgecell eval` on the sibling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.backends.base import TensorInfo
from edgecell.backends.tflite_file import read_io
from edgecell.errors import ModelError, script_main

FORMATS = {"xml": "openvino", "onnx": "onnxruntime"}
#: share of the checked images on which a sibling must give LiteRT's answer to be kept
MIN_AGREEMENT = 0.98
ONNX_OPSET = 17


def _quantized(t: TensorInfo) -> bool:
    return t.dtype in ("int8", "uint8") and t.scale is not None


def openvino_ir_from_tflite(src: str | os.PathLike, out_xml: str | os.PathLike) -> Path:
    """The .tflite as OpenVINO IR with float input and outputs (quantization inside the model)."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.preprocess import PrePostProcessor

    inputs, outputs = read_io(src)
    model = ov.convert_model(str(src))
    ppp = PrePostProcessor(model)
    for port in model.inputs:
        t = next((i for i in inputs if i.name in port.get_names()), None)
        if t is None or not _quantized(t):
            continue
        lo, hi = np.iinfo(np.dtype(t.dtype)).min, np.iinfo(np.dtype(t.dtype)).max

        def quantize(node, t=t, lo=lo, hi=hi):
            q = ops.round(ops.multiply(node, ops.constant(np.float32(1.0 / t.scale))), "half_to_even")
            return ops.clamp(ops.add(q, ops.constant(np.float32(t.zero_point))), float(lo), float(hi)).output(0)

        step = ppp.input(port.get_any_name())
        step.tensor().set_element_type(ov.Type.f32)
        step.preprocess().custom(quantize)
    for port in model.outputs:
        t = next((o for o in outputs if o.name in port.get_names()), None)
        if t is None or not _quantized(t):
            continue

        def dequantize(node, t=t):
            real = ops.subtract(ops.convert(node, "f32"), ops.constant(np.float32(t.zero_point)))
            return ops.multiply(real, ops.constant(np.float32(t.scale))).output(0)

        step = ppp.output(port.get_any_name())
        step.postprocess().custom(dequantize)
        step.tensor().set_element_type(ov.Type.f32)
    model = ppp.build()
    out_xml = Path(out_xml)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml


def onnx_from_tflite(src: str | os.PathLike, out_onnx: str | os.PathLike, *, opset: int = ONNX_OPSET) -> Path:
    """The .tflite as a QDQ ONNX graph with float input and outputs."""
    import onnx
    import tf2onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs, outputs = read_io(src)
    proto, _ = tf2onnx.convert.from_tflite(str(src), opset=opset)
    graph = proto.graph
    onnx_type = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}

    def constants(t: TensorInfo) -> tuple[str, str]:
        scale, zero = f"{t.name}/scale", f"{t.name}/zero_point"
        graph.initializer.extend([numpy_helper.from_array(np.array(t.scale, np.float32), scale),
                                  numpy_helper.from_array(np.array(t.zero_point, np.dtype(t.dtype)), zero)])
        return scale, zero

    def rename(old: str, new: str) -> None:
        for node in graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]

    head, tail = [], []
    for value in graph.input:
        t = next((i for i in inputs if i.name == value.name), None)
        if t is None or not _quantized(t) or value.type.tensor_type.elem_type != onnx_type[t.dtype]:
            continue
        rename(value.name, f"{value.name}/quantized")
        # x * (1 / scale), then QuantizeLinear with scale 1: the runtime's quantizer (edgecell's input
        # table, the IR sibling) multiplies by the reciprocal, QuantizeLinear divides; for the usual
        # (pixel - 127.5) / 127.5 input every value is a .5 tie and the two round 7 % of pixels apart
        scale, zero = constants(t)
        reciprocal, one = f"{t.name}/reciprocal_scale", f"{t.name}/one"
        graph.initializer.extend([numpy_helper.from_array(np.array(1.0 / t.scale, np.float32), reciprocal),
                                  numpy_helper.from_array(np.array(1.0, np.float32), one)])
        head += [helper.make_node("Mul", [value.name, reciprocal], [f"{value.name}/scaled"], name=f"{value.name}/scale"),
                 helper.make_node("QuantizeLinear", [f"{value.name}/scaled", one, zero], [f"{value.name}/quantized"],
                                  name=f"{value.name}/quantize")]
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    for value in graph.output:
        t = next((o for o in outputs if o.name == value.name), None)
        if t is None or not _quantized(t) or value.type.tensor_type.elem_type != onnx_type[t.dtype]:
            continue
        rename(value.name, f"{value.name}/quantized")
        tail.append(helper.make_node("DequantizeLinear", [f"{value.name}/quantized", *constants(t)], [value.name],
                                     name=f"{value.name}/dequantize"))
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    out_onnx = Path(out_onnx)
    onnx.save(proto, str(out_onnx))
    return out_onnx


CONVERTERS = {"xml": openvino_ir_from_tflite, "onnx": onnx_from_tflite}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def size_bytes(path: Path) -> int:
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def compare_with_litert(src: Path, sibling: Path, images: Sequence[Path]) -> dict:
    """Every image through `load_model` + `pipeline.predict` on the sibling (its format's backend)
    and on LiteRT with the source; the images whose answers differ, with how."""
    from edgecell.backends.agreement import REFERENCE_BACKEND, disagreement
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    reference = load_model(src, REFERENCE_BACKEND)
    model = load_model(sibling, FORMATS[sibling.suffix.lstrip(".")])
    differ = {}
    for image_path in images:
        image = decode_image(image_path)
        why = disagreement(predict(reference, image)[0], predict(model, image)[0])
        if why:
            differ[str(image_path)] = why
    return {"images": len(images), "agree": len(images) - len(differ), "differ": differ}


def make_siblings(src: str | os.PathLike, out_dir: str | os.PathLike, images: Sequence[Path],
                  formats: Sequence[str] = tuple(FORMATS), *, min_agreement: float = MIN_AGREEMENT) -> list[dict]:
    """Write each sibling, check it against LiteRT on `images`, keep it only if it gives LiteRT's
    answer on at least `min_agreement` of them."""
    src, out_dir = Path(src), Path(out_dir)
    if src.suffix != ".tflite" or not src.is_file():
        raise ModelError(f"{src}: expected a .tflite model file")
    if not images:
        raise ModelError("no images to check the siblings on; pass --images (the held-out split the card uses)")
    out_dir.mkdir(parents=True, exist_ok=True)
    sidecar = src.with_suffix(".json")
    if sidecar.is_file() and out_dir.resolve() != src.parent.resolve():
        from edgecell.bundle.common import companion_files  # the files its task reads beside it

        (out_dir / sidecar.name).write_text(sidecar.read_text())
        for companion in companion_files(sidecar):
            (out_dir / companion.name).write_bytes(companion.read_bytes())
    rows = []
    for fmt in formats:
        path = CONVERTERS[fmt](src, out_dir / f"{src.stem}.{fmt}")
        check = compare_with_litert(src, path, images)
        check["rate"] = round(check["agree"] / check["images"], 4)
        kept = check["rate"] >= min_agreement
        if not kept:
            for p in [path] + ([path.with_suffix(".bin")] if fmt == "xml" else []):  # never another's .bin
                p.unlink(missing_ok=True)
        rows.append({"file": path.name, "backend": FORMATS[fmt], "kept": kept, "size_bytes": size_bytes(path) if kept else None,
                     "sha256": sha256(path) if kept else None,
                     "bin_sha256": sha256(path.with_suffix(".bin")) if kept and fmt == "xml" else None,
                     "agreement_with_litert": check})
    return rows


def _images(args: Sequence[str]) -> list[Path]:
    from edgecell.images import IMAGE_SUFFIXES

    out = []
    for a in args:
        p = Path(a)
        out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    return out


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecell.convert.siblings", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the full-integer INT8 .tflite")
    parser.add_argument("--out", required=True, help="folder for the siblings (edge/models to ship them)")
    parser.add_argument("--images", nargs="+", required=True,
                        help="images (files or folders) to check the siblings' answers against LiteRT on")
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                        help=f"share of the images on which a sibling must give LiteRT's answer (default {MIN_AGREEMENT})")
    args = parser.parse_args(argv)
    if not 0.0 < args.min_agreement <= 1.0:
        parser.error(f"--min-agreement {args.min_agreement}: expected a share in (0, 1]")
    rows = make_siblings(args.model, args.out, _images(args.images), args.formats, min_agreement=args.min_agreement)
    print(json.dumps(rows, indent=2))
    return 0 if all(r["kept"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
