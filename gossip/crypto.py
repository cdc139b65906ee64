"""Ed25519 identities (PyNaCl) and SHA-256, the only primitives fedchain signs and hashes with.

A node id is the hex of its 32-byte Ed25519 public key; it is also the node's account on the
chain. Every signature covers a domain tag plus the chain id (see :func:`signing_bytes`), so a
signature made for one purpose or one chain never verifies for another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from gossip.codec import pack

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def signing_bytes(domain: str, chain_id: str, fields: list) -> bytes:
    """Canonical bytes a signature covers: ``pack([domain, chain_id, *fields])``."""
    return pack([domain, chain_id, *fields])


def is_node_id(value: object) -> bool:
    """True for a well-formed node id: 64 lowercase hex characters."""
    if not isinstance(value, str) or len(value) != 2 * PUBLIC_KEY_SIZE:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return value == value.lower()


def verify(node_id: str, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature by ``node_id`` (hex public key); never raises on bad input."""
    if not is_node_id(node_id) or not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(bytes.fromhex(node_id)).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


class KeyPair:
    """One node's Ed25519 key pair."""

    def __init__(self, signing_key: SigningKey) -> None:
        self._sk = signing_key
        self.node_id: str = signing_key.verify_key.encode().hex()

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "KeyPair":
        """Deterministic key from a 32-byte seed (tests and reproducible testnets)."""
        return cls(SigningKey(seed))

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte signature over ``message``."""
        return self._sk.sign(message).signature

    def save(self, path: Path) -> None:
        """Write the key as JSON, mode 0600, atomically, so that no other user can ever read it.

        The bytes go to a fresh temporary file in the same folder, created exclusively
        (``O_EXCL | O_NOFOLLOW`` through :func:`tempfile.mkstemp`, so neither a leftover file
        with a looser mode nor a planted symlink can catch them), set to 0600 with ``fchmod``
        whatever the umask, synced, and renamed over ``path``; the folder is synced so the
        rename survives a power loss. A symlinked ``path`` is refused rather than replaced or
        followed. The leftover ``<name>.tmp`` of earlier versions, which may hold an older
        key readable by others, is removed.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            raise PermissionError(f"{path} is a symbolic link; refusing to write a key through it")
        body = json.dumps({"type": "ed25519", "node_id": self.node_id, "seed": self._sk.encode().hex()}) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body.encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.with_name(path.name + ".tmp"))
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> "KeyPair":
        """Read a key written by :meth:`save`; refuses a key file others can read.

        The mode is checked on the opened file itself (``fstat``), so the file checked is the
        file read, even if the path is swapped in between; anything but a regular file (a
        folder, a FIFO, a device) is refused.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO planted as the key must not hang the node
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path} is not a regular file")
            mode = st.st_mode & 0o777
            if mode & 0o077:
                raise PermissionError(f"{path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")
            text = os.read(fd, 64 * 1024).decode("utf-8", "replace")
        finally:
            os.close(fd)
        try:
            data = json.loads(text)
            kp = cls(SigningKey(bytes.fromhex(data["seed"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a valid fedchain key file: {exc}") from exc
        if data.get("node_id") not in (None, kp.node_id):
            raise ValueError(f"{path}: node_id does not match the key")
        return kp


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
