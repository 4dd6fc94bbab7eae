"""The pool's Ed25519 key, which signs usage statements (web/services/statements.py).

The key is made the first time the pool starts (or the first time a statement is signed)
and kept in a PEM file readable by its owner only: written under a temporary name opened
with mode 0600, then linked to its place, so no other process ever sees a half-written key
or one readable by others, and two servers starting at once end up with the same key (the
second link fails and that server reads the first's). A key file readable by group or
others is refused, as ssh refuses such keys.

Anyone may verify a statement with the public key (GET /api/v1/statements/public-key); its
id, `ed25519:` + the SHA-256 of its 32 raw bytes, is written into every statement.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from web.services.errors import Invalid, Unavailable

_loaded: dict[Path, Ed25519PrivateKey] = {}
_lock = threading.Lock()


def pool_key(path: Path) -> Ed25519PrivateKey:
    """The key in `path`, made there first if there is none (see the module docstring)."""
    path = Path(path)
    with _lock:
        key = _loaded.get(path)
        if key is None:
            key = _loaded[path] = _read_or_make(path)
        return key


def _read_or_make(path: Path) -> Ed25519PrivateKey:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # new: owner-only
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails if another server made one meanwhile
        except FileExistsError:
            return _read(path)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _read(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Unavailable(
            f"the statement signing key {path} may be read by others "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it",
            field="statement_key_file",
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise Unavailable(f"{path} holds no Ed25519 key", field="statement_key_file")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """A public key from PEM text (Invalid naming `public_key` if it is not an Ed25519 one)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise Invalid(f"not a PEM public key: {err}", field="public_key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Invalid("not an Ed25519 public key", field="public_key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def signature_matches(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    try:
        key.verify(raw, message)
    except InvalidSignature:
        return False
    return True
