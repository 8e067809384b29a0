"""Signing: ed25519 through `cryptography`, imported only when a bundle is signed or checked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from edgecell.bundle.common import BundleError, write_durable


# --------------------------------------------------------------------------------------------
# signing (ed25519 through `cryptography`, imported only when used)


def crypto_api():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("bundle signatures need the cryptography package: pip install "
                          "'cryptography>=42' (or 'edgecell[sign]')") from None
    return ed25519, serialization, InvalidSignature


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new ed25519 key pair (PEM). Keep the private key off the devices."""
    ed25519, serialization, _ = crypto_api()
    key = ed25519.Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    write_durable(Path(private_path), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    write_durable(Path(public_path), public_key_bytes(key.public_key()))


def public_key_bytes(public_key) -> bytes:
    _, serialization, _ = crypto_api()
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path):
    ed25519, serialization, _ = crypto_api()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read signing key ({exc.strerror})") from None
    try:
        if len(data) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted ed25519 private key in PEM ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path}: the signing key must be ed25519 (openssl genpkey -algorithm ed25519)")
    return key


def load_public_key(key) -> Any:
    """An ed25519 public key from a path, PEM/raw bytes, or a key object."""
    ed25519, serialization, _ = crypto_api()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.public_key()
    source = str(key)
    if isinstance(key, (str, os.PathLike)):
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise BundleError(f"{key}: cannot read public key ({exc.strerror})") from None
    else:
        data, source = bytes(key), "public key"
    try:
        if len(data) == 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        if data.lstrip().startswith(b"ssh-ed25519"):
            pub = serialization.load_ssh_public_key(data)
        else:
            pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, IndexError) as exc:
        raise BundleError(f"{source}: not an ed25519 public key in PEM ({exc})") from None
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise BundleError(f"{source}: the public key must be ed25519")
    return pub


def key_fingerprint(public_key) -> str:
    _, serialization, _ = crypto_api()
    raw = load_public_key(public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
