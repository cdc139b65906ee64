"""Persistence of the chain in one SQLite database (WAL): blocks, commits, tx index, the state
snapshot, the last-signed record and the application's small records.

Crash safety rests on two rules. A final block, its commit, its tx index, the state it produces
and the application's writes go to disk in ONE transaction, so after a crash the block and the
state never disagree. The last-signed record is written and synced BEFORE the caller signs, so a
restarted delegate cannot sign a second, different block or vote in a round it already signed
(the double sign that evidence would slash). ``synchronous=FULL`` holds for every write.

Writes never run on the event loop: every write goes through one writer thread (in order, so a
signing record and a block commit can never overtake each other), with its own connection;
``*_async`` methods hand the work to it and await the result. Reads use a second connection on
the caller's thread; WAL lets them proceed while the writer commits. Every query is by primary
or unique key, so reads stay cheap however long the chain grows.

A lock file (``flock``) next to the database refuses a second daemon pointed at the same data
dir, instead of letting it share a signing record with the first.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from consensus.block import Block
from consensus.genesis import Genesis
from consensus.messages import Commit
from consensus.snapshot import StateError
from consensus.state import ChainState
from consensus.tx import Tx
from gossip.codec import DEFAULT_MAX_MESSAGE, DecodeError, pack, unpack
from gossip.crypto import is_node_id

SCHEMA_VERSION = 2
SIGNING_KINDS = ("block", "proposal", "prevote", "precommit", "lock")
T = TypeVar("T")
AppWrites = Sequence[tuple[bytes, bytes | None]]
"""An application's writes for one block: ``(key, value)`` puts and ``(key, None)`` deletes."""

_TABLES = {
    "meta": "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "blocks": "CREATE TABLE blocks(height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, data BLOB NOT NULL)",
    "commits": "CREATE TABLE commits(height INTEGER PRIMARY KEY, data BLOB NOT NULL, voters BLOB NOT NULL)",
    "txs": "CREATE TABLE txs(hash BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL) WITHOUT ROWID",
    "state": "CREATE TABLE state(id INTEGER PRIMARY KEY CHECK (id = 1), height INTEGER NOT NULL, data BLOB NOT NULL)",
    "signing": ("CREATE TABLE signing(kind TEXT PRIMARY KEY, height INTEGER NOT NULL, slot INTEGER NOT NULL, "
                "hash BLOB NOT NULL)"),
    "app_kv": "CREATE TABLE app_kv(key BLOB PRIMARY KEY, value BLOB NOT NULL)",
}


class StoreError(RuntimeError):
    """The data dir cannot be used as it is: corrupt, in use, or from another chain."""


class ChainStore:
    """The chain database at ``path`` (a file), checked against the expected ``genesis``."""

    def __init__(self, path: str | os.PathLike, genesis: Genesis, *, writer: Executor | None = None) -> None:
        """``writer`` runs every write, one at a time and in order; by default a thread of its
        own. The network simulation passes one that runs writes at once on the caller's thread,
        since a thread's timing would make its runs irreproducible."""
        self.path = Path(path)
        self.genesis = genesis
        self._genesis_hash = genesis.hash
        self._cap = max(DEFAULT_MAX_MESSAGE, 2 * genesis.max_block_bytes)
        self._lock_fd = self._take_lock()
        self._writer = writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-store")
        try:
            self._conn = self._connect()  # the writer's connection, used only on the writer thread
            try:
                self._on_writer(self._check_or_init)
                self._reader = self._connect(readonly=True)
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            self._writer.shutdown()
            os.close(self._lock_fd)
            raise

    def _corrupt(self, detail: str) -> StoreError:
        return StoreError(f"chain database {self.path}: data dir is corrupt: {detail} "
                          "(move it away to resync from peers)")

    def _take_lock(self) -> int:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; the chain store needs a database file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(f"chain database {self.path} is in use (is another fedchain daemon running "
                             "on this data dir?)") from exc
        return fd

    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        # Explicit BEGIN/COMMIT below. The connections are shared between this object's two
        # threads under its own discipline (writes on the writer thread only), hence no
        # same-thread check.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if readonly:
                conn.execute("PRAGMA query_only=ON")
                return conn
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._corrupt(str(exc)) from exc
        if verdict != "ok":
            conn.close()
            raise self._corrupt(f"quick_check: {verdict}")
        return conn

    def _on_writer(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer thread and wait for it (for the synchronous API)."""
        return self._writer.submit(fn, *args, **kwargs).result()

    async def _on_writer_async(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer thread; the event loop stays free while it syncs to disk."""
        return await asyncio.wrap_future(self._writer.submit(fn, *args, **kwargs))

    def _check_or_init(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with self._transaction() as c:
                for ddl in _TABLES.values():
                    c.execute(ddl)
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                    ("schema_version", SCHEMA_VERSION), ("chain_id", self.genesis.chain_id),
                    ("genesis_hash", self._genesis_hash)])
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite database but not a fedchain chain store")
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"chain database {self.path} has schema version {meta.get('schema_version')!r}; "
                             f"this version of fedchain reads version {SCHEMA_VERSION}")
        if meta.get("chain_id") != self.genesis.chain_id:
            raise StoreError(f"chain database {self.path} belongs to chain {meta.get('chain_id')!r}, "
                             f"not {self.genesis.chain_id!r}")
        stored = meta.get("genesis_hash")
        if stored != self._genesis_hash:
            shown = stored.hex()[:16] if isinstance(stored, bytes) else repr(stored)
            raise StoreError(f"chain database {self.path} was created from a different genesis "
                             f"({shown}... != {self._genesis_hash.hex()[:16]}...) of chain {self.genesis.chain_id!r}")
        if missing := sorted(set(_TABLES) - tables):
            raise self._corrupt(f"missing table(s) {', '.join(missing)}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (then re-raised)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Finish queued writes, then close both connections and release the lock file."""
        self._writer.shutdown(wait=True)
        self._conn.close()
        self._reader.close()
        os.close(self._lock_fd)

    def __enter__(self) -> "ChainStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------------

    def commit_block(self, block: Block, commit: Commit, state: ChainState, app_writes: AppWrites = (), *,
                     voters: list[str] | None = None) -> None:
        """Persist a final block with its commit, tx index, resulting state and the application's
        key-value writes (``(key, value)`` puts, ``(key, None)`` deletes), all or nothing.
        ``voters`` (the delegates that could sign ``commit``) is kept so a restarted node can check
        the next block's last commit."""
        self._on_writer(self._write_block, *self._block_rows(block, commit, state, app_writes, voters))

    async def commit_block_async(self, block: Block, commit: Commit, state: ChainState,
                                 app_writes: AppWrites = (), *, voters: list[str] | None = None) -> None:
        """:meth:`commit_block` with the disk work on the writer thread (the event loop stays free)."""
        await self._on_writer_async(self._write_block, *self._block_rows(block, commit, state, app_writes, voters))

    @staticmethod
    def _block_rows(block: Block, commit: Commit, state: ChainState, app_writes: AppWrites,
                    voters: list[str] | None) -> tuple:
        """Check the arguments of a block commit and encode its rows (on the caller's thread, so the
        writer thread only writes, and the state is snapshotted before the caller moves on)."""
        if commit.height != block.height or commit.block_hash != block.hash:
            raise ValueError("the commit is not for this block")
        if state.height != block.height or state.last_block_hash != block.hash:
            raise ValueError("the state is not the result of this block")
        if not all(isinstance(w, tuple) and len(w) == 2 and isinstance(w[0], bytes)
                   and (w[1] is None or isinstance(w[1], bytes)) for w in app_writes):
            raise TypeError("app_writes must be (key bytes, value bytes or None) pairs (pass voters= by keyword)")
        if voters is not None and not all(is_node_id(v) for v in voters):
            raise ValueError("voters must be node ids")
        rows = [(tx.hash, block.height, i) for i, tx in enumerate(block.txs)]
        return block, commit, rows, state.to_bytes(), app_writes, voters

    def _write_block(self, block: Block, commit: Commit, rows: list, snapshot: bytes,
                     app_writes: AppWrites, voters: list[str] | None) -> None:
        expected = self._latest_height(self._conn) + 1
        if block.height != expected:
            raise StoreError(f"block {block.height} does not follow the stored chain (next height is {expected})")
        try:
            with self._transaction() as c:
                c.execute("INSERT INTO blocks(height, hash, data) VALUES (?, ?, ?)",
                          (block.height, block.hash, block.encode()))
                c.execute("INSERT INTO commits(height, data, voters) VALUES (?, ?, ?)",
                          (block.height, pack(commit.to_wire()), pack(list(voters or []))))
                c.executemany("INSERT INTO txs(hash, height, idx) VALUES (?, ?, ?)", rows)
                c.execute("INSERT OR REPLACE INTO state(id, height, data) VALUES (1, ?, ?)", (block.height, snapshot))
                c.executemany("INSERT OR REPLACE INTO app_kv(key, value) VALUES (?, ?)",
                              [w for w in app_writes if w[1] is not None])
                c.executemany("DELETE FROM app_kv WHERE key = ?", [(w[0],) for w in app_writes if w[1] is None])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store block {block.height}: {exc}") from exc

    def record_signing(self, kind: str, height: int, rnd: int, block_hash: bytes) -> None:
        """Durably record what this node is about to sign; call BEFORE signing."""
        if kind not in SIGNING_KINDS:
            raise ValueError(f"signing kind must be one of {', '.join(SIGNING_KINDS)}")
        self._on_writer(self._write_signing, kind, height, rnd, bytes(block_hash))

    async def record_signing_async(self, kind: str, height: int, rnd: int, block_hash: bytes) -> None:
        """:meth:`record_signing` with the fsync on the writer thread."""
        if kind not in SIGNING_KINDS:
            raise ValueError(f"signing kind must be one of {', '.join(SIGNING_KINDS)}")
        await self._on_writer_async(self._write_signing, kind, height, rnd, bytes(block_hash))

    def _write_signing(self, kind: str, height: int, rnd: int, block_hash: bytes) -> None:
        self._conn.execute(
            "INSERT INTO signing(kind, height, slot, hash) VALUES (?, ?, ?, ?) ON CONFLICT(kind) DO UPDATE "
            "SET height = excluded.height, slot = excluded.slot, hash = excluded.hash",
            (kind, height, rnd, block_hash))

    # -- reads -----------------------------------------------------------------------------------

    def last_signed(self, kind: str) -> tuple[int, int, bytes] | None:
        """(height, round, hash) of the last statement of ``kind`` this node signed."""
        row = self._reader.execute("SELECT height, slot, hash FROM signing WHERE kind = ?", (kind,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    @staticmethod
    def _latest_height(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT MAX(height) FROM blocks").fetchone()
        return row[0] or 0

    def latest_height(self) -> int:
        """Height of the newest stored block (0: only genesis)."""
        return self._latest_height(self._reader)

    def _decode(self, what: str, data: bytes) -> Any:
        try:
            return unpack(data, self._cap)
        except DecodeError as exc:
            raise self._corrupt(f"{what} cannot be decoded: {exc}") from exc

    def _block(self, row: tuple | None) -> Block | None:
        if row is None:
            return None
        try:
            return Block.from_wire(self._decode(f"block {row[0]}", row[1]))
        except DecodeError as exc:
            raise self._corrupt(f"block {row[0]} is malformed: {exc}") from exc

    def block(self, height: int) -> Block | None:
        return self._block(self._reader.execute("SELECT height, data FROM blocks WHERE height = ?", (height,)).fetchone())

    def blocks(self, from_height: int, limit: int) -> list[Block]:
        """Up to ``limit`` consecutive blocks from ``from_height`` upwards."""
        rows = self._reader.execute("SELECT height, data FROM blocks WHERE height >= ? ORDER BY height LIMIT ?",
                                  (from_height, max(0, limit))).fetchall()
        return [self._block(r) for r in rows]

    def commit(self, height: int) -> Commit | None:
        """The commit that made block ``height`` final."""
        row = self._reader.execute("SELECT data FROM commits WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        try:
            return Commit.from_wire(self._decode(f"commit {height}", row[0]))
        except DecodeError as exc:
            raise self._corrupt(f"commit {height} is malformed: {exc}") from exc

    def voters(self, height: int) -> list[str]:
        """The delegates that could sign block ``height``'s commit ([] if unknown)."""
        row = self._reader.execute("SELECT voters FROM commits WHERE height = ?", (height,)).fetchone()
        if row is None:
            return []
        voters = self._decode(f"voters of block {height}", row[0])
        if not (isinstance(voters, list) and all(is_node_id(v) for v in voters)):
            raise self._corrupt(f"voters of block {height} are malformed")
        return voters

    def tx(self, tx_hash: bytes) -> tuple[int, int, Tx] | None:
        """(height, index in block, tx) of a committed transaction."""
        row = self._reader.execute("SELECT height, idx FROM txs WHERE hash = ?", (bytes(tx_hash),)).fetchone()
        if row is None:
            return None
        height, idx = row
        block = self.block(height)
        if block is None or idx >= len(block.txs) or block.txs[idx].hash != tx_hash:
            raise self._corrupt(f"tx index points at a missing transaction (block {height}, index {idx})")
        return height, idx, block.txs[idx]

    def load_state(self) -> ChainState | None:
        """The state after the newest stored block, or None for a fresh store."""
        row = self._reader.execute("SELECT height, data FROM state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            state = ChainState.from_bytes(row[1], self.genesis)
        except StateError as exc:
            raise self._corrupt(str(exc)) from exc
        if state.height != row[0] or state.height != self.latest_height():
            raise self._corrupt(f"state at height {state.height} does not match the newest block "
                                f"{self.latest_height()}")
        return state

    def app_get(self, key: bytes) -> bytes | None:
        """One application record, or None."""
        row = self._reader.execute("SELECT value FROM app_kv WHERE key = ?", (bytes(key),)).fetchone()
        return row[0] if row else None

    def app_records(self) -> "AppRecords":
        """A read-only view of the application's records (what it restores itself from)."""
        return AppRecords(self)


class AppRecords(Mapping[bytes, bytes]):
    """The application's key-value records as a read-only mapping, read lazily: a restarting
    application looks up the few records it needs instead of loading every one (their number
    grows with the chain)."""

    def __init__(self, store: ChainStore) -> None:
        self._store = store

    def __getitem__(self, key: bytes) -> bytes:
        value = self._store.app_get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[bytes]:
        return (bytes(k) for (k,) in self._store._reader.execute("SELECT key FROM app_kv ORDER BY key").fetchall())

    def __len__(self) -> int:
        return self._store._reader.execute("SELECT COUNT(*) FROM app_kv").fetchone()[0]
