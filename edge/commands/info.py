"""`edgecell info [MODEL]`: a model's self-description, or this device's."""

from __future__ import annotations

import json
from typing import Optional

import typer


def info(
    model: Optional[str] = typer.Argument(None, help="Model file or shipped model name; omit to describe this device."),
    backend: str = typer.Option("auto", "--backend", "-b", help="Backend used to open the model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a model (task, labels, inputs, outputs, metrics) or, with no model, this device."""
    from rich.console import Console

    from edgecell import __version__
    from edgecell.resources import resolve_model_path, shipped_models

    console = Console()
    if model is None:
        from edgecell.device import describe_device

        data = describe_device()
        data["edgecell"] = __version__
        data["shipped_models"] = {k: str(v) for k, v in shipped_models().items()}
        if as_json:
            print(json.dumps(data, indent=2))
            return
        for key, value in data.items():
            console.print(f"[bold]{key:>17}[/]: {value}", highlight=False)
        if not data["backends"]:
            console.print("no inference backend installed: pip install ai-edge-litert (or 'edgecell[openvino]')")
        return
    from dataclasses import asdict

    from edgecell.model import load_model

    loaded = load_model(resolve_model_path(model, backend), backend)
    data = {"file": str(loaded.path), "size_bytes": loaded.path.stat().st_size, **loaded.session.describe(),
            "metadata": {k: v for k, v in asdict(loaded.info).items() if k != "input_quantization"}}
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    meta = data.pop("metadata")
    for key in ("file", "size_bytes", "backend"):
        console.print(f"[bold]{key:>12}[/]: {data[key]}", highlight=False)
    for key in ("inputs", "outputs"):
        for t in data[key]:
            q = f" scale={t['scale']:.6g} zero_point={t['zero_point']}" if t["scale"] else ""
            console.print(f"[bold]{key[:-1]:>12}[/]: {t['name']} {t['shape']} {t['dtype']}{q}", highlight=False)
    for key, value in meta.items():
        if value not in ({}, [], ""):
            console.print(f"[bold]{key:>12}[/]: {json.dumps(value) if isinstance(value, (dict, list)) else value}",
                          highlight=False)
