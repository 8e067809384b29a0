"""`edgecell models`: the models that ship with edgecell."""

from __future__ import annotations


def models() -> None:
    """List the models that ship with edgecell."""
    from edgecell.modelinfo import read_model_info
    from edgecell.resources import shipped_models, shipped_path

    shipped = shipped_models()
    if not shipped:
        print("no shipped models found in", shipped_path("models"))
        return
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        meta = read_model_info(path)
        print(f"{name:<{width}}  {meta.task:<9} {path.stat().st_size / 1e6:5.2f} MB  {path}")
