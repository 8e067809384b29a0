"""Deploy bundles (issue 8): build, verify, tamper, unsafe archives, atomic install, rollback,
signatures, and one slow test that installs a real wheelhouse into a fresh venv with --no-index.

Bundles are built from the tiny real fixture models (tests/fixtures/models). All tests but the
one marked SLOW use wheelhouse=False: fast and offline."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgecell import bundle as B
from edgecell.bundle import (BundleError, BundleVerificationError, UnsafeArchiveError, build_bundle,
                             install_bundle, rollback, run_bundle_args, systemd_unit, verify_bundle)

FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
TFLITE = FIXTURE_MODELS / "tiny_classifier_int8.tflite"


@pytest.fixture(scope="module")
def model() -> Path:
    if not TFLITE.is_file():
        pytest.fail(f"fixture model missing: {TFLITE} (regenerate with tests/fixtures/make_tiny_models.py)")
    return TFLITE


def _run_settings(*args: str) -> B.RunSettings:
    """`edgecell bundle --run '...'` parsed as the CLI does, against the real `run` command."""
    from typer.main import get_command

    from edgecell.cli import app
    from edgecell.cli_bundle import parse_run_settings

    return parse_run_settings(get_command(app).commands["run"], list(args))


def _build(model: Path, out: Path, version: str = "1", profile: str = "raspberry-pi", **kw) -> Path:
    kw.setdefault("archive", False)
    kw.setdefault("run", _run_settings("--camera", "0", "--out", "results", "--top-k", "2"))
    return build_bundle([model], profile=profile, out=out, wheelhouse=False, version=version, **kw)


def _runs(model_path: Path) -> dict:
    """The bundle's model really runs: load it and classify a red image."""
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    loaded = load_model(model_path)
    image = np.zeros((48, 48, 3), np.uint8)
    image[..., 0] = 230
    result, _ = predict(loaded, image)
    return result.to_dict() if hasattr(result, "to_dict") else result


# ---------------------------------------------------------------------------------------------
# build and verify


def test_build_folder_verifies_and_describes_the_run(model, tmp_path):
    folder = _build(model, tmp_path)
    assert folder == tmp_path / "tiny_classifier-1" and folder.is_dir()
    result = verify_bundle(folder)
    assert result.ok, result.message()
    assert "OK" in result.message() and result.files == 3  # model, sidecar, run.json
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["name"] == "tiny_classifier" and manifest["version"] == "1"
    assert manifest["profile"]["name"] == "raspberry-pi" and manifest["edgecell_version"]
    assert set(manifest["files"]) == {"models/tiny_classifier_int8.tflite", "models/tiny_classifier_int8.json",
                                      "run.json"}
    for rel, meta in manifest["files"].items():
        assert meta["size"] == (folder / rel).stat().st_size and len(meta["sha256"]) == 64
    assert manifest["task"]["task"] == "classify" and manifest["task"]["labels"] == ["red", "green", "blue"]
    run = json.loads((folder / "run.json").read_text())
    assert run["source"] == "0" and run["options"] == {"out": "results", "top_k": 2}
    path, source, options = run_bundle_args(folder)
    assert path == folder / "models" / "tiny_classifier_int8.tflite" and source == "0"
    assert options["out"] == "results"
    assert _runs(path)["label"] == "red"


def test_profile_picks_the_format_its_backend_runs(model, tmp_path):
    x86 = _build(model, tmp_path / "v", profile="x86-vnni")
    names = sorted(p.name for p in (x86 / "models").iterdir())
    assert names == ["tiny_classifier_int8.bin", "tiny_classifier_int8.json", "tiny_classifier_int8.xml"]
    jetson = _build(model, tmp_path / "j", profile="jetson")
    assert (jetson / "models" / "tiny_classifier_int8.onnx").is_file()
    only_xml = tmp_path / "only"
    only_xml.mkdir()
    for suffix in (".xml", ".bin", ".json"):
        shutil.copy(model.with_suffix(suffix), only_xml)
    with pytest.raises(BundleError, match="raspberry-pi runs .tflite"):
        _build(only_xml / "tiny_classifier_int8.xml", tmp_path / "pi")


def test_x86_without_vnni_takes_the_tflite_on_litert_though_an_ir_sits_beside_it(model, tmp_path):
    """Without VNNI the IR's INT8 kernels can saturate and answer otherwise than the card."""
    assert model.with_suffix(".xml").is_file()
    legacy = _build(model, tmp_path, profile="x86-legacy")
    names = sorted(p.name for p in (legacy / "models").iterdir())
    assert names == ["tiny_classifier_int8.json", "tiny_classifier_int8.tflite"]
    assert json.loads((legacy / "manifest.json").read_text())["profile"]["backend"] == "litert"


def test_bad_run_arguments_are_refused_at_build_time(model, tmp_path):
    with pytest.raises(BundleError, match="No such option: --bogus"):
        _build(model, tmp_path, run=_run_settings("--bogus"))
    with pytest.raises(BundleError, match="gate"):
        _build(model, tmp_path, gate_policy="reject")  # no gate model among the models
    assert not any(tmp_path.iterdir())  # nothing half-built left behind


def test_changed_byte_is_refused(model, tmp_path):
    folder = _build(model, tmp_path)
    target = folder / "models" / "tiny_classifier_int8.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify_bundle(folder)
    assert not result.ok
    assert result.changed == ["models/tiny_classifier_int8.tflite (sha256 differs)"]
    assert "\n" not in result.message() and "tiny_classifier_int8.tflite" in result.message()
    with pytest.raises(BundleVerificationError, match="refused: changed: models/tiny_classifier_int8.tflite"):
        run_bundle_args(folder)


def test_missing_and_extra_files_are_refused(model, tmp_path):
    folder = _build(model, tmp_path)
    (folder / "models" / "tiny_classifier_int8.json").unlink()
    (folder / "models" / "evil.sh").write_text("#!/bin/sh\n")
    result = verify_bundle(folder)
    assert not result.ok
    assert result.missing == ["models/tiny_classifier_int8.json"]
    assert result.extra == ["models/evil.sh"]
    assert "missing: models/tiny_classifier_int8.json" in result.message()
    with pytest.raises(BundleVerificationError):
        run_bundle_args(folder)


def test_archive_round_trip(model, tmp_path):
    archive = _build(model, tmp_path, archive=True)
    assert archive.name == "tiny_classifier-1.tar.gz" and archive.is_file()
    assert not (tmp_path / "tiny_classifier-1").exists()
    assert verify_bundle(archive).ok
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert all(n.startswith("tiny_classifier-1") for n in names)
    path, source, _ = run_bundle_args(archive)
    assert _runs(path)["label"] == "red"
    with pytest.raises(BundleError, match="already exists"):
        _build(model, tmp_path, archive=True)


# ---------------------------------------------------------------------------------------------
# unsafe archives


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("bad", ["dotdot", "absolute", "symlink_etc", "symlink_dotdot", "hardlink_out", "fifo"])
def test_unsafe_archive_is_refused_and_nothing_is_written(bad, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    good = (_file("b/manifest.json"), b"{}")
    evil = {
        "dotdot": (_file("b/../../outside/evil"), b"pwned"),
        "absolute": (_file(str(outside / "evil")), b"pwned"),
        "symlink_etc": (_link("b/etc", "/etc"), None),
        "symlink_dotdot": (_link("b/up", "../../outside"), None),
        "hardlink_out": (_link("b/passwd", "/etc/passwd", tarfile.LNKTYPE), None),
        "fifo": (_link("b/pipe", "", tarfile.FIFOTYPE), None),
    }[bad]
    archive = _tar_with(tmp_path / "evil.tar.gz", [good, evil, (_file("b/after"), b"x")])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match="refusing archive"):
        B.safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.iterdir())  # checked before anything was written
    assert not any(outside.iterdir())
    result = verify_bundle(archive)
    assert not result.ok and "refusing archive" in result.message()
    prefix = tmp_path / "prefix"
    with pytest.raises(UnsafeArchiveError):
        install_bundle(archive, prefix=prefix)
    assert not (prefix / "current").exists()
    assert [p.name for p in (prefix / "versions").iterdir()] == []
    assert not any(outside.iterdir())


# ---------------------------------------------------------------------------------------------
# install, interrupted install, rollback, systemd


def test_install_then_interrupted_install_keeps_previous(model, tmp_path, monkeypatch):
    prefix = tmp_path / "opt"
    v1 = install_bundle(_build(model, tmp_path / "b", "1", archive=True), prefix=prefix, create_env=False)
    assert (prefix / "current").is_symlink() and (prefix / "current").resolve() == v1.resolve()
    assert not os.path.isabs(os.readlink(prefix / "current"))  # relocatable prefix
    assert v1.parent == prefix / "versions" and v1.name.startswith("tiny_classifier-1-")

    def crash(*args, **kwargs):
        raise RuntimeError("power cut before the switch")

    monkeypatch.setattr("edgecell.bundle.install._activate", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        install_bundle(_build(model, tmp_path / "b", "2", archive=True), prefix=prefix, create_env=False)
    monkeypatch.undo()
    assert (prefix / "current").resolve() == v1.resolve()
    assert [p.name for p in (prefix / "versions").iterdir()] == [v1.name]  # no half-installed v2
    path, source, options = run_bundle_args(prefix)
    assert path.resolve().is_relative_to(v1.resolve()) and source == "0"
    assert _runs(path)["label"] == "red"


def test_killed_installs_leave_nothing_that_counts_toward_keep(model, tmp_path):
    """kill -9 mid-install leaves a version folder (never recorded as installed) and .staging-*
    folders: they must not push good versions out of --keep, and the next install removes them."""
    prefix = tmp_path / "opt"
    v1 = install_bundle(_build(model, tmp_path / "b", "1", archive=True), prefix=prefix, create_env=False, keep=3)
    v2 = install_bundle(_build(model, tmp_path / "b", "2", archive=True), prefix=prefix, create_env=False, keep=3)
    for name in ("tiny_classifier-3-20300101T000000", "tiny_classifier-4-20300101T000001", ".staging-x1y2"):
        (prefix / "versions" / name / "venv").mkdir(parents=True)
    assert [v.name for v in B.installed_versions(prefix)] == [v1.name, v2.name]
    v5 = install_bundle(_build(model, tmp_path / "b", "5", archive=True), prefix=prefix, create_env=False, keep=3)
    assert sorted(p.name for p in (prefix / "versions").iterdir()) == sorted([v1.name, v2.name, v5.name])
    assert rollback(prefix) == v2 and rollback(prefix) == v1


def test_a_helper_process_dies_with_the_install(tmp_path):
    """The install's pip/venv children get SIGKILL when the install itself is killed."""
    import signal

    pidfile = tmp_path / "child.pid"
    code = ("import sys; from edgecell.bundle.install import _run_child; "
            "_run_child(['sh', '-c', 'echo $$ > ' + sys.argv[1] + '; exec sleep 120'])")
    parent = subprocess.Popen([sys.executable, "-c", code, str(pidfile)])
    for _ in range(200):
        if pidfile.is_file() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(200):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").is_file() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break  # a zombie: dead, waiting for init to reap it
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the helper process outlived the killed install")


def test_install_refuses_a_tampered_bundle_and_keeps_current(model, tmp_path):
    prefix = tmp_path / "opt"
    v1 = install_bundle(_build(model, tmp_path / "b", "1"), prefix=prefix, create_env=False)
    bad = _build(model, tmp_path / "b", "2")
    (bad / "run.json").write_text((bad / "run.json").read_text().replace('"0"', '"1"'))
    with pytest.raises(BundleVerificationError, match="changed: run.json"):
        install_bundle(bad, prefix=prefix, create_env=False)
    assert (prefix / "current").resolve() == v1.resolve()
    assert len(list((prefix / "versions").iterdir())) == 1


def test_rollback_switches_back(model, tmp_path):
    prefix = tmp_path / "opt"
    v1 = install_bundle(_build(model, tmp_path / "b", "1"), prefix=prefix, create_env=False)
    v2 = install_bundle(_build(model, tmp_path / "b", "2"), prefix=prefix, create_env=False)
    assert (prefix / "current").resolve() == v2.resolve() and v1.is_dir()  # previous kept
    assert rollback(prefix).resolve() == v1.resolve()
    assert (prefix / "current").resolve() == v1.resolve()
    assert _runs(run_bundle_args(prefix)[0])["label"] == "red"
    with pytest.raises(BundleError, match="no earlier version"):
        rollback(prefix)
    history = [json.loads(line) for line in (prefix / "history.jsonl").read_text().splitlines()]
    assert [h["action"] for h in history] == ["install", "install", "rollback"]


def test_systemd_unit(model, tmp_path):
    prefix = tmp_path / "opt"
    install_bundle(_build(model, tmp_path / "b", "1"), prefix=prefix, create_env=False)
    unit = systemd_unit(prefix)
    assert "DynamicUser=yes" in unit and "User=" not in unit.replace("DynamicUser=", "")
    assert "StateDirectory=edgecell" in unit and "WorkingDirectory=%S/edgecell" in unit
    assert "Restart=on-failure" in unit and f"run {prefix.absolute() / 'current'}" in unit
    assert "WantedBy=multi-user.target" in unit
    assert "User=cart" in systemd_unit(prefix, user="cart")


# ---------------------------------------------------------------------------------------------
# signatures


@pytest.fixture()
def keys(tmp_path):
    pytest.importorskip("cryptography")
    out = {}
    for who in ("ours", "theirs"):
        B.generate_keypair(tmp_path / f"{who}.key", tmp_path / f"{who}.pub")
        out[who] = (tmp_path / f"{who}.key", tmp_path / f"{who}.pub")
    return out


def test_signed_bundle_with_pinned_key(model, tmp_path, keys):
    key, pub = keys["ours"]
    signed = _build(model, tmp_path / "b", "1", sign_key=key)
    assert (signed / "manifest.sig").is_file()
    assert verify_bundle(signed).signature == "unchecked"
    result = verify_bundle(signed, public_key=pub)
    assert result.ok and result.signature == "valid", result.message()

    prefix = tmp_path / "opt"
    v1 = install_bundle(signed, prefix=prefix, trust=pub, create_env=False)
    assert (prefix / "trusted_key.pub").read_bytes() == pub.read_bytes()  # pinned

    unsigned = _build(model, tmp_path / "b", "2")
    with pytest.raises(BundleVerificationError, match="unsigned bundle, but a signing key is pinned"):
        install_bundle(unsigned, prefix=prefix, create_env=False)

    other = _build(model, tmp_path / "b", "3", sign_key=keys["theirs"][0])
    with pytest.raises(BundleVerificationError, match="signature does not match the pinned key"):
        install_bundle(other, prefix=prefix, create_env=False)

    tampered = _build(model, tmp_path / "b", "4", sign_key=key)
    manifest = tampered / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "4"', '"version": "5"'))
    result = verify_bundle(tampered, public_key=pub)
    assert not result.ok and result.signature == "invalid" and "\n" not in result.message()
    with pytest.raises(BundleVerificationError, match="signature does not match"):
        install_bundle(tampered, prefix=prefix, create_env=False)

    with pytest.raises(BundleError, match="pins another key"):
        install_bundle(other, prefix=prefix, trust=keys["theirs"][1], create_env=False)
    assert (prefix / "current").resolve() == v1.resolve()
    # the pinned key is used when the installed bundle runs: a re-signed-by-someone-else file is refused
    assert run_bundle_args(prefix)[0].is_file()
    (v1 / "manifest.sig").write_bytes((other / "manifest.sig").read_bytes())
    with pytest.raises(BundleVerificationError, match="signature does not match"):
        run_bundle_args(prefix)


# ---------------------------------------------------------------------------------------------
# SLOW (~1-2 minutes, needs PyPI): a real wheelhouse for THIS machine, offline install


def _pypi_reachable() -> bool:
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "typer"], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def _host_profile() -> str | None:
    import platform

    if sys.platform != "linux" or sys.version_info[:2] < (3, 10):
        return None
    libc, ver = platform.libc_ver()
    glibc = tuple(int(x) for x in ver.split(".")[:2]) if libc == "glibc" and ver else (0, 0)
    for name, prof in B.PROFILES.items():
        if prof.arch == platform.machine() and glibc >= prof.glibc:
            return name
    return None


def test_SLOW_real_wheelhouse_installs_offline_into_fresh_venv(model, tmp_path):
    """SLOW (about 1-2 minutes): downloads the wheelhouse for this machine's platform and Python,
    installs it with --no-index into the version's fresh venv, and runs the bundle's model there."""
    profile = _host_profile()
    if profile is None:
        pytest.skip("no bundle profile matches this machine's platform")
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: cannot download the wheelhouse")
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    archive = build_bundle([model], profile=profile, out=tmp_path / "b", run=_run_settings("--camera", "0"),
                           wheelhouse=True, python_version=python, version="1")
    started = time.perf_counter()
    version_dir = install_bundle(archive, prefix=tmp_path / "opt")
    seconds = time.perf_counter() - started
    venv_python = version_dir / "venv" / "bin" / "python"
    assert venv_python.is_file()
    code = ("import sys, edgecell, edgecell.bundle as b; m, s, o = b.run_bundle_args(sys.argv[1]); "
            "from edgecell.model import load_model; import numpy as np; "
            "from edgecell.pipeline import predict; img = np.zeros((32, 32, 3), np.uint8); img[..., 0] = 230; "
            "print(edgecell.__file__); print(predict(load_model(m), img)[0].label)")
    proc = subprocess.run([str(venv_python), "-c", code, str(tmp_path / "opt")], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, label = proc.stdout.split()
    assert str(version_dir) in where  # the venv's own edgecell, not this checkout
    assert label == "red"
    size = archive.stat().st_size
    print(f"\n[bundle] profile={profile} archive={size / 1e6:.1f} MB install={seconds:.1f} s")
    assert seconds <= 120


# ---------------------------------------------------------------------------------------------
# command line (edgecell's app: `--run` is checked against its real `run` command)


def test_cli_bundle_verify_install_rollback(model, tmp_path):
    from typer.testing import CliRunner

    from edgecell.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["bundle", str(model), "--profile", "raspberry-pi", "--out", str(tmp_path / "b"),
                              "--no-wheels", "--version", "1", "--run", "--camera 0 --top-k 2", "--json"])
    assert res.exit_code == 0, res.output
    archive = Path(json.loads(res.stdout)["bundle"])
    assert archive.is_file()
    res = runner.invoke(app, ["verify", str(archive), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True
    prefix = tmp_path / "opt"
    for version in ("1", "2"):
        if version == "2":
            res = runner.invoke(app, ["bundle", str(model), "--profile", "raspberry-pi", "--out", str(tmp_path / "b"),
                                      "--no-wheels", "--version", "2", "--json"])
            archive = Path(json.loads(res.stdout)["bundle"])
        res = runner.invoke(app, ["install", str(archive), "--prefix", str(prefix), "--json"])
        assert res.exit_code == 0, res.output
    assert (prefix / "edgecell.service").read_text().count("Restart=on-failure") == 1
    res = runner.invoke(app, ["verify", str(prefix)])
    assert res.exit_code == 0 and "OK" in res.stdout
    res = runner.invoke(app, ["rollback", "--prefix", str(prefix), "--json"])
    assert res.exit_code == 0 and "tiny_classifier-1-" in json.loads(res.stdout)["current"]
    (prefix / "current" / "run.json").write_text("{}")
    res = runner.invoke(app, ["verify", str(prefix), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["changed"][0].startswith("run.json")
    res = runner.invoke(app, ["verify", str(prefix)])
    assert res.exit_code != 0 and isinstance(res.exception, BundleVerificationError)
    for command in ("bundle", "verify", "install", "rollback"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_gate_model_and_policy_go_into_the_run_config(model, tmp_path):
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    gate = gate_dir / "tiny_gate_int8.tflite"
    shutil.copy(model, gate)
    meta = json.loads(model.with_suffix(".json").read_text())
    (gate_dir / "tiny_gate_int8.json").write_text(json.dumps({**meta, "task": "gate", "name": "tiny_gate"}))
    folder = build_bundle([model, gate], profile="raspberry-pi", out=tmp_path / "b", wheelhouse=False,
                          version="1", archive=False, gate_policy="reject", run=_run_settings("--camera", "2"))
    run = json.loads((folder / "run.json").read_text())
    assert run["model"] == "models/tiny_classifier_int8.tflite" and run["gate"] == "models/tiny_gate_int8.tflite"
    path, source, options = run_bundle_args(folder)
    assert source == "2" and options["gate_policy"] == "reject" and options["gate"].is_file()
    with pytest.raises(BundleError, match="gate policy 'maybe'"):
        build_bundle([model, gate], profile="raspberry-pi", out=tmp_path / "c", wheelhouse=False, gate_policy="maybe")


def test_wheelhouse_glibc_floor_from_wheel_tags():
    assert B.wheels_min_glibc(["cv-5-cp37-abi3-manylinux_2_28_x86_64.whl",
                               "np-2-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                               "pc-2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                               "rich-15-py3-none-any.whl"]) == "2.28"
    assert B.wheels_min_glibc(["rich-15-py3-none-any.whl"]) is None
    tags = B.PROFILES["raspberry-pi"].platforms()
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux2014_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    # tflite-runtime 2.14's aarch64 wheels (the fallback runtime) are tagged manylinux_2_34 only
    assert "manylinux_2_34_aarch64" in tags and "manylinux_2_34_aarch64" in B.PROFILES["jetson"].platforms()


def test_shipped_models_among_the_bundled_ones_are_named_for_the_wheel(model):
    """A bundle of the shipped `cells` keeps `cells` in its edgecell wheel: `edgecell run cells` works there."""
    from edgecell.bundle.build import _shipped_names
    from edgecell.resources import shipped_models

    assert _shipped_names([shipped_models()["cells"], model]) == {"cells"}


def test_gate_path_in_run_arguments_is_refused(model, tmp_path):
    with pytest.raises(BundleError, match="give the gate model as one of the bundle's models"):
        _build(model, tmp_path, run=_run_settings("--gate", str(model)))


def test_files_named_in_the_sidecar_travel_with_the_model(tmp_path):
    """The X-ray model's Grad-CAM head (settings.gradcam_head) must be in the bundle beside it."""
    from edgecell.resources import shipped_path

    src = shipped_path("models")
    settings = json.loads((src / "xray_int8.json").read_text())["settings"]
    head, float_model = settings["gradcam_head"], settings["training"]["float_model"]
    for name in ("xray_int8.tflite", "xray_int8.json", head, float_model):
        if not (src / name).is_file():
            pytest.fail(f"shipped {name} missing")
        shutil.copy(src / name, tmp_path / name)
    folder = build_bundle([tmp_path / "xray_int8.tflite"], profile="raspberry-pi", out=tmp_path / "out",
                          wheelhouse=False, archive=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert f"models/{head}" in manifest["files"]
    assert f"models/{float_model}" not in manifest["files"]  # only commission --adapt needs it, not the device
    assert verify_bundle(folder).ok


def test_an_rbc_bundle_carries_its_centre_detector(tmp_path):
    """The rbc model loads `<settings.detector>_<precision>` beside it: a bundle without it cannot
    run at all (found by the fleet health check)."""
    from edgecell.resources import shipped_path

    folder = build_bundle([shipped_path("models") / "rbc_int8.tflite"], profile="raspberry-pi", out=tmp_path / "out",
                          wheelhouse=False, archive=False)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert "models/rbc_centres_int8.tflite" in files and "models/rbc_centres_int8.json" in files


def test_a_long_text_setting_is_not_taken_for_a_companion_file(tmp_path):
    """Settings values that name a file beside the sidecar travel with the model; a sentence
    longer than a file name may be (the cells sidecar's notes) must not stop the bundle."""
    from edgecell.bundle.common import companion_files

    (tmp_path / "head.npz").write_bytes(b"x")
    sidecar = tmp_path / "m_int8.json"
    sidecar.write_text(json.dumps({"task": "classify", "settings": {"head": "head.npz", "note": "word " * 80}}))
    assert companion_files(sidecar) == [tmp_path / "head.npz"]
