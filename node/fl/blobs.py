"""Content-addressed blobs (global models, updates) in their own SQLite file.

A blob's key is the SHA-256 of its bytes, so a write is idempotent and a blob can be fetched from
any peer and checked on arrival. Old blobs are pruned by height with a retention setting.

Writes never run on the event loop: a commit waits for the disk (an fsync), tens of milliseconds
on a busy device, and a daemon writes every update it admits. They go, in order, to one writer
thread with its own connection; until a write has committed its blob is served from memory, so a
reader never misses a blob that was put. :meth:`BlobStore.put_durable` waits for the commit
(without blocking the loop), for what must be on disk before a block naming it commits: a
crash can leave an unreferenced blob, never a final block whose model is missing.

Updates arrive in bursts (every trainer answers a new model at once), so the writer, once woken,
gathers for :data:`GATHER_S` before it commits whatever is queued in one transaction: one fsync
and one hand-over to the writer thread per burst rather than per blob. A write someone waits for
(:meth:`BlobStore.put_durable`) ends the gathering at once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gossip.codec import DecodeError, decode_array, encode_array, pack, unpack
from gossip.crypto import sha256

log = logging.getLogger("fedchain.fl")

GATHER_S = 0.05
"""How long the writer, once handed a write, waits for more before it commits them together."""

MAX_PENDING_BYTES = 64 << 20
"""Bytes of blobs waiting for the writer; a put beyond this waits for the writer to catch up."""


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


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, kind TEXT NOT NULL, "
                   "height INTEGER NOT NULL, data BLOB NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS blobs_height ON blobs(kind, height)")
        return db
    except sqlite3.DatabaseError as exc:
        raise BlobError(f"{path} is not a usable blob store ({exc}); move it away to refetch from peers") from exc


class BlobStore:
    def __init__(self, path: Path) -> None:
        self._db = _connect(path)           # the writer's connection, used on the writer thread only
        self._reader = _connect(path)       # reads, on the caller's thread (the loop)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fl-blobs")
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[str, bytes]] = {}   # hash -> (kind, bytes) put, not yet committed
        self._pending_bytes = 0
        self._queue: list[tuple] = []         # writes and prunes for the next commit, in call order
        self._next: Future | None = None      # the commit that will take the queue (not yet started)
        self._last: Future | None = None      # the commit of the newest queued operation
        self._urgent = threading.Event()      # a caller waits for the next commit: stop gathering

    # ----- writes (on the writer thread, in call order) -----------------------------------------
    def put(self, kind: str, data: bytes, height: int) -> bytes:
        """Store ``data`` under its hash (queued; readers see it at once). Storing it again at a
        later height keeps it that much longer: an unchanged global model must not be pruned
        while it is still current."""
        key = sha256(data)
        if self._pending_bytes > MAX_PENDING_BYTES and self._last is not None:
            self._last.result()  # the disk cannot keep up: wait rather than hold unbounded memory
        with self._lock:
            if key not in self._pending:
                self._pending[key] = (kind, data)
                self._pending_bytes += len(data)
        self._enqueue(("write", key, kind, data, height))
        return key

    async def put_durable(self, kind: str, data: bytes, height: int) -> bytes:
        """:meth:`put`, returning once the write has committed (the loop keeps running)."""
        key = self.put(kind, data, height)
        self._hurry()
        await asyncio.wrap_future(self._last)
        return key

    def prune(self, kind: str, below_height: int) -> None:
        """Delete ``kind`` blobs stored below ``below_height`` (queued after earlier writes)."""
        self._enqueue(("prune", kind, below_height))

    def flush(self) -> None:
        """Wait until every queued write has committed (raises what a write raised)."""
        self._hurry()
        self._writer.submit(lambda: None).result()

    def _hurry(self) -> None:
        """End the gathering of the commit that will take the queue, if one is waiting to (a flag
        raised with nothing queued would cost the next burst its gathering)."""
        with self._lock:
            if self._next is not None:
                self._urgent.set()

    def _enqueue(self, op: tuple) -> None:
        with self._lock:
            self._queue.append(op)
            if self._next is None:
                self._next = self._writer.submit(self._commit)
            self._last = self._next

    def _commit(self) -> None:
        """Everything queued, in order, in one transaction (on the writer thread)."""
        self._urgent.wait(GATHER_S)
        with self._lock:
            ops, self._queue, self._next = self._queue, [], None
            self._urgent.clear()
        try:
            with self._db:  # BEGIN ... COMMIT, or ROLLBACK if a statement fails
                self._db.execute("BEGIN")
                for op in ops:
                    if op[0] == "write":
                        _, key, kind, data, height = op
                        self._db.execute("INSERT INTO blobs(hash, kind, height, data) VALUES (?, ?, ?, ?) "
                                         "ON CONFLICT(hash) DO UPDATE SET height = MAX(height, excluded.height)",
                                         (key, kind, height, data))
                    else:
                        _, kind, below = op
                        self._db.execute("DELETE FROM blobs WHERE kind = ? AND height < ?", (kind, below))
        except sqlite3.Error:
            log.exception("committing %d blob operations failed", len(ops))
            raise
        finally:
            with self._lock:
                for op in ops:
                    if op[0] == "write":
                        _, key, _, data, _ = op
                        if self._pending.pop(key, None) is not None:
                            self._pending_bytes -= len(data)

    # ----- reads ------------------------------------------------------------------------------
    def get(self, key: bytes, kind: str) -> bytes | None:
        """The ``kind`` blob with hash ``key``: a model is never served for an update's hash, nor
        the other way round (each reader checks what it asked for)."""
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return pending[1] if pending[0] == kind else None
        row = self._reader.execute("SELECT data FROM blobs WHERE hash = ? AND kind = ?", (key, kind)).fetchone()
        if row is None:
            return None
        if sha256(row[0]) != key:
            raise BlobError(f"blob {key.hex()[:12]} is corrupt on disk")
        return row[0]

    def has(self, key: bytes, kind: str) -> bool:
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return pending[0] == kind
        return self._reader.execute("SELECT 1 FROM blobs WHERE hash = ? AND kind = ?", (key, kind)).fetchone() is not None

    def count(self, kind: str) -> int:
        """Committed blobs of ``kind`` (after :meth:`flush`, every one put)."""
        return self._reader.execute("SELECT COUNT(*) FROM blobs WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        """Finish the queued writes, then close."""
        self._hurry()
        self._writer.shutdown(wait=True)
        self._db.close()
        self._reader.close()
