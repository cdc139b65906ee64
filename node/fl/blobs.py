"""Content-addressed blobs (global models, updates) in their own SQLite file.

A blob's key is the SHA-256 of its bytes, so a write is idempotent and a blob can be fetched from
any peer and checked on arrival. Blobs are written *before* the block that names them commits; a
crash between the two leaves an unreferenced blob, never a block whose model is missing. Old
blobs are pruned by height with a retention setting.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from gossip.codec import DecodeError, decode_array, encode_array, pack, unpack
from gossip.crypto import sha256


class BlobError(Exception):
    """The blob file is unusable, or a blob does not match its hash."""


def model_bytes(vector: np.ndarray) -> bytes:
    """Canonical bytes of a flat float32 model: what its hash commits to."""
    return pack(encode_array(np.ascontiguousarray(vector, dtype=np.float32)))


def model_hash(vector: np.ndarray) -> bytes:
    return sha256(model_bytes(vector))


def parse_model(data: bytes, max_size: int) -> np.ndarray:
    try:
        vec = decode_array(unpack(data, max_size))
    except DecodeError as exc:
        raise BlobError(f"model blob malformed: {exc}") from exc
    if vec.dtype != np.float32 or vec.ndim != 1 or not np.isfinite(vec).all():
        raise BlobError("model blob must be a finite 1-D float32 vector")
    return vec


class BlobStore:
    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, kind TEXT NOT NULL, "
                             "height INTEGER NOT NULL, data BLOB NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS blobs_height ON blobs(kind, height)")
        except sqlite3.DatabaseError as exc:
            raise BlobError(f"{path} is not a usable blob store ({exc}); move it away to refetch from peers") from exc

    def put(self, kind: str, data: bytes, height: int) -> bytes:
        """Store ``data`` under its hash; storing it again at a later height keeps it that much
        longer (an unchanged global model must not be pruned while it is still current)."""
        key = sha256(data)
        self._db.execute("INSERT INTO blobs(hash, kind, height, data) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(hash) DO UPDATE SET height = MAX(height, excluded.height)",
                         (key, kind, height, data))
        return key

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT data FROM blobs WHERE hash = ?", (key,)).fetchone()
        if row is None:
            return None
        if sha256(row[0]) != key:
            raise BlobError(f"blob {key.hex()[:12]} is corrupt on disk")
        return row[0]

    def has(self, key: bytes) -> bool:
        return self._db.execute("SELECT 1 FROM blobs WHERE hash = ?", (key,)).fetchone() is not None

    def prune(self, kind: str, below_height: int) -> int:
        cur = self._db.execute("DELETE FROM blobs WHERE kind = ? AND height < ?", (kind, below_height))
        return cur.rowcount

    def count(self, kind: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM blobs WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()
