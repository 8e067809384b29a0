"""Deploy bundles: one self-contained, verifiable artefact that puts edgecell and a deployment's
models on a device with no network (an X-ray cart, a Pi beside a microscope, a Jetson).

A bundle is a folder (or a .tar.gz of one folder) holding

    manifest.json   name, version, created, edgecell version, profile, task settings, and the
                    SHA-256 and size of every other file
    manifest.sig    optional ed25519 signature of manifest.json's exact bytes (base64)
    run.json        the configured `edgecell run`: model, gate, source, options, output folder
    models/         the models in the format the profile's backend runs, with their sidecars
    wheels/         offline wheelhouse for the target platform and Python (edgecell included)
    install.sh      offline install: pip install --no-index --find-links wheels edgecell[...]

On the device, `install_bundle` unpacks into `prefix/versions/<name>-<version>-<ts>/`, verifies,
builds the version's own virtual environment from the wheelhouse, and only then switches the
`prefix/current` symlink (an atomic rename of a temporary symlink); earlier versions are kept for
`rollback`. Once `prefix/trusted_key.pub` is pinned, unsigned or wrongly signed bundles are refused.

Where things are: `common` (file names, errors, atomic writes), `profiles` (device kinds),
`signing` (ed25519 keys), `verify` (safe extraction, verification, opening a bundle to run),
`build` (model selection, wheelhouse, manifest), `install` (versions, switch, rollback, systemd).
"""

from __future__ import annotations

from edgecell.bundle.common import (BUNDLE_FORMAT, BundleError, BundleVerificationError, CRYPTOGRAPHY_REQ,
                                    GATE_POLICIES, HISTORY, INSTALL_SCRIPT, LOCAL_DIRS, MANIFEST, RUN_CONFIG,
                                    SIGNATURE, TRUSTED_KEY, RunSettings, UnsafeArchiveError, companion_files,
                                    sha256_file)  # noqa: F401
from edgecell.bundle.profiles import (BundleProfile, PROFILES, get_profile)  # noqa: F401
from edgecell.bundle.signing import (generate_keypair, key_fingerprint, load_public_key,
                                     public_key_bytes)  # noqa: F401
from edgecell.bundle.verify import (VerifyResult, check_archive_members, is_archive, is_bundle, open_bundle,
                                    read_manifest, run_bundle_args, safe_extract, verify_bundle)  # noqa: F401
from edgecell.bundle.build import (OPTIONAL_BASE, ProgressFn, build_bundle, download_wheels, source_revision,
                                   wheel_requirements, wheels_min_glibc)  # noqa: F401
from edgecell.bundle.wheel import build_edgecell_wheel  # noqa: F401
from edgecell.bundle.install import (current_version, install_bundle, installed_versions, rollback,
                                     systemd_unit)  # noqa: F401
