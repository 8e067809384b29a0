"""`edgecell bundle | verify | install | rollback`: deploy bundles on the command line.

The CLI owner calls `register(app)` from edgecell.cli; `run_bundle_args(path)` gives `edgecell run
BUNDLE` the verified model, source and options of a bundle (see edgecell.bundle)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from edgecell.bundle import (PROFILES, BundleError, BundleVerificationError, RunSettings, build_bundle,
                             install_bundle, is_bundle, rollback, run_bundle_args, systemd_unit, verify_bundle)
from edgecell.sinks import write_text_atomic

__all__ = ["register", "run_bundle_args", "is_bundle"]

DEFAULT_PREFIX = Path("/opt/edgecell")
_PROFILE_HELP = " | ".join(f"{n}: {p.description.rstrip('.')}" for n, p in PROFILES.items())


def _err():
    from rich.console import Console

    return Console(stderr=True)


def _download_progress(console):
    """A progress bar for the wheel download: wheels saved so far and the package being fetched
    (pip does not say how many there will be, so the bar pulses)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("[bold]wheelhouse[/]"), BarColumn(),
                        TextColumn("{task.completed} wheels"), TextColumn("{task.description}"),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)
    task = progress.add_task("", total=None)

    def update(event: str, detail: str, saved: int) -> None:
        label = {"building": "building", "collecting": "resolving", "downloading": "downloading",
                 "saved": "saved"}.get(event, event)
        progress.update(task, completed=saved, description=f"{label} {detail}"[:70])

    return progress, update


def parse_run_settings(run_command, run_args: list[str]) -> RunSettings:
    """`--run '...'` checked against the real `run` command (a click command, taken from the app
    being run, so this module never imports the CLI that registers it). Only the options given
    are kept; unknown options and bad values are refused now, at build time, not on the device."""
    from typer import _click as click

    args = [str(a) for a in run_args]
    if any(a in ("--help", "-h") for a in args):
        raise BundleError("run arguments: --help is not a run configuration")
    try:  # the model is the bundle's: a placeholder takes its place, so a positional is the source
        ctx = run_command.make_context("run", ["MODEL", *args])
    except click.ClickException as exc:
        raise BundleError(f"run arguments {shlex.join(args)!r}: {exc.format_message()}") from None
    source = ctx.params.get("source")
    options: dict = {}
    for name, value in ctx.params.items():
        if name in ("model", "source") or ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        if name == "camera":
            source = str(value)
            continue
        options[name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return RunSettings(source=source, options=options, args=args)


def register(app: typer.Typer) -> None:
    """Add the `bundle`, `verify`, `install` and `rollback` commands to `app`."""

    @app.command("bundle")
    def bundle_cmd(
        ctx: typer.Context,
        models: List[str] = typer.Argument(..., metavar="MODEL...", help="Model files or shipped model names; the "
                                           "format the profile's backend runs is taken from beside each file. A "
                                           "model whose task is 'gate' becomes the gate in front of the others."),
        profile: str = typer.Option(..., "--profile", "-p", help=f"Target device. {_PROFILE_HELP}"),
        out: Path = typer.Option(Path("bundles"), "--out", "-o", help="Folder the bundle is written to."),
        run: Optional[str] = typer.Option(None, "--run", help="The `edgecell run` options the device uses, quoted, "
                                          "e.g. --run '--camera 0 --out /var/lib/edgecell/results'. Checked now."),
        gate_policy: Optional[str] = typer.Option(None, "--gate-policy", help="With a gate model: reject, flag or pass."),
        name: Optional[str] = typer.Option(None, "--name", help="Bundle name (default: the main model's name)."),
        version: Optional[str] = typer.Option(None, "--version", help="Bundle version (default: a UTC timestamp)."),
        python: Optional[str] = typer.Option(None, "--python", help="Target Python, e.g. 3.11 (default: the profile's)."),
        wheels: bool = typer.Option(True, "--wheels/--no-wheels", help="Include the offline wheelhouse (pip download "
                                    "for the target platform; needs PyPI here). --no-wheels: models and config only."),
        sign: Optional[Path] = typer.Option(None, "--sign", help="ed25519 private key (PEM) to sign the manifest; make "
                                            "one with: openssl genpkey -algorithm ed25519 -out bundle.key && "
                                            "openssl pkey -in bundle.key -pubout -out bundle.pub"),
        folder: bool = typer.Option(False, "--folder", help="Write a folder instead of a .tar.gz archive."),
        shipped_models: bool = typer.Option(False, "--with-shipped-models", help="Keep all of edgecell's shipped "
                                            "models in the bundled edgecell wheel (always kept: the sample images "
                                            "and the shipped models bundled by name, so `edgecell run cells` works)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Build a deploy bundle: models, manifest (SHA-256 of every file), run configuration,
        offline wheelhouse and install.sh, optionally signed.

        Example (an X-ray cart; `edgecell info` on it names its profile, x86-legacy without VNNI):
        `edgecell bundle xray gate_xray --profile x86-legacy --gate-policy reject --run '--camera 0
        --out results' --sign bundle.key`
        """
        from edgecell.resources import resolve_model_path

        paths = [resolve_model_path(m) for m in models]
        run_command = ctx.find_root().command.get_command(ctx, "run")
        if run and run_command is None:
            raise BundleError("--run: this command line has no `run` command to check the options against")
        run_settings = parse_run_settings(run_command, shlex.split(run)) if run else RunSettings()
        console = _err()
        progress, update = _download_progress(console)
        with progress:
            path = build_bundle(paths, profile=profile, out=out, run=run_settings, gate_policy=gate_policy,
                                wheelhouse=wheels, python_version=python, sign_key=sign, archive=not folder,
                                name=name, version=version, progress=update if wheels else None,
                                shipped_models=shipped_models)
        result = verify_bundle(path)
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        summary = {"bundle": str(path), "bytes": size, "profile": profile, "files": result.files,
                   "signed": sign is not None}
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"{path}  ({size / 1e6:.1f} MB, {result.files} files, profile {profile}"
                  f"{', signed' if sign else ''})")

    @app.command("verify")
    def verify_cmd(
        bundle: Path = typer.Argument(..., help="Bundle folder, .tar.gz, or an install prefix (checks `current`)."),
        key: Optional[Path] = typer.Option(None, "--key", help="ed25519 public key the signature must match "
                                           "(default: the prefix's pinned trusted_key.pub, if any)."),
        as_json: bool = typer.Option(False, "--json", help="Print every finding as JSON (exit code 1 if refused)."),
    ) -> None:
        """Check a bundle: the manifest, every file's size and SHA-256, nothing missing or added,
        and the signature when a key is given or pinned. One line says OK or why it is refused."""
        target = bundle
        if bundle.is_dir() and (bundle / "current").is_symlink():
            target = bundle / "current"
            if key is None and (bundle / "trusted_key.pub").is_file():
                key = bundle / "trusted_key.pub"
        result = verify_bundle(target, public_key=key)
        if as_json:
            print(json.dumps(result.to_dict(), indent=2))
            if not result.ok:
                raise typer.Exit(1)
            return
        if not result.ok:
            raise BundleVerificationError(result.message())
        print(result.message())

    @app.command("install")
    def install_cmd(
        bundle: Path = typer.Argument(..., help="Bundle .tar.gz or folder."),
        prefix: Path = typer.Option(DEFAULT_PREFIX, "--prefix", help="Install root: versions/, current -> the "
                                    "active version, trusted_key.pub, history.jsonl, edgecell.service."),
        trust: Optional[Path] = typer.Option(None, "--trust", help="Pin this ed25519 public key (first install): from "
                                             "then on unsigned or wrongly signed bundles are refused."),
        env: bool = typer.Option(True, "--env/--no-env", help="Build the version's venv from the bundle's wheelhouse "
                                 "(offline). --no-env: use the edgecell already installed."),
        python: Optional[str] = typer.Option(None, "--python", help="Python interpreter for the venv (default: this "
                                             "one if it is the bundle's version, else pythonX.Y on PATH)."),
        user: Optional[str] = typer.Option(None, "--user", help="Existing user the systemd service runs as "
                                           "(default: a dynamic user systemd makes, writing /var/lib/edgecell)."),
        keep: int = typer.Option(3, "--keep", help="Installed versions to keep for rollback (at least 2)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Install a bundle atomically: unpack into its own version folder, verify every hash (and
        the signature once a key is pinned), build its venv offline, then switch `current` last.
        A failure at any step leaves the running version untouched. Writes PREFIX/edgecell.service."""
        import time

        started = time.perf_counter()
        version_dir = install_bundle(bundle, prefix=prefix, trust=trust, create_env=env, python=python, keep=keep)
        seconds = time.perf_counter() - started
        unit_path = write_text_atomic(prefix.absolute() / "edgecell.service", systemd_unit(prefix, user=user))
        info = {"installed": str(version_dir), "current": str(prefix.absolute() / "current"),
                "seconds": round(seconds, 1), "systemd_unit": str(unit_path),
                "pinned_key": str(prefix.absolute() / "trusted_key.pub")
                if (prefix / "trusted_key.pub").is_file() else None}
        if as_json:
            print(json.dumps(info, indent=2))
            return
        print(f"installed {version_dir.name} in {seconds:.1f} s; current -> {version_dir}")
        print(f"systemd unit: {unit_path}\n  first time: sudo cp {unit_path} /etc/systemd/system/edgecell.service && "
              "sudo systemctl daemon-reload && sudo systemctl enable --now edgecell\n"
              "  results: /var/lib/edgecell (the run's relative --out); log: journalctl -u edgecell\n"
              "  after an update or rollback: sudo systemctl restart edgecell")

    @app.command("rollback")
    def rollback_cmd(
        prefix: Path = typer.Option(DEFAULT_PREFIX, "--prefix", help="Install root given to `edgecell install`."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Switch `current` back to the version installed before it (verified first). Restart the
        service afterwards: sudo systemctl restart edgecell."""
        target = rollback(prefix)
        if as_json:
            print(json.dumps({"current": str(target)}))
            return
        print(f"current -> {target}; restart the service: sudo systemctl restart edgecell")
