"""The `edgecell` command line: the Typer app, the list of commands, and the one place user errors
become one line (`edgecell: error: ...`) and a non-zero exit. Tracebacks are for bugs only (set
EDGECELL_DEBUG=1 to see them for user errors too).

Each command lives in its own module under `edgecell.commands` (or beside it, as `cli_bundle`) and
is registered below with one line. Commands parse options, call the library and render; the image
-> result path is `edgecell.pipeline`."""

from __future__ import annotations

import os
import sys

import typer

from edgecell.commands import bench, commission, evaluate, fleet, info, models, run
from edgecell.errors import EdgecellError

app = typer.Typer(
    name="edgecell",
    help="Run medical and retail image models on small devices (LiteRT, OpenVINO, ONNX Runtime).\n\n"
         "Try `edgecell run` (counts blood cells in the shipped sample smears), `edgecell info`, "
         "`edgecell models`.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

#: (name, command function): one line per command
COMMANDS = (
    ("run", run.run),
    ("info", info.info),
    ("models", models.models),
    ("eval", evaluate.evaluate),
    ("bench", bench.bench),
    ("commission", commission.commission),
)

for _name, _command in COMMANDS:
    app.command(name=_name)(_command)
app.add_typer(fleet.app, name="fleet")


def _register_bundle_commands() -> None:
    from edgecell.cli_bundle import register

    register(app)


_register_bundle_commands()


def main() -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except EdgecellError as exc:
        if os.environ.get("EDGECELL_DEBUG"):
            raise
        print(f"edgecell: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # before or after a run's loop (a run itself exits 130/143 with its count)
        print("edgecell: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # a folder it may not write (a service's state folder), a full disk: one line
        if os.environ.get("EDGECELL_DEBUG") or not exc.filename:
            raise
        print(f"edgecell: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
