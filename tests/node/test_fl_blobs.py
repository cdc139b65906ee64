"""BlobStore (content-addressed models and updates in SQLite) and the canonical model bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gossip.codec import encode_array, pack
from gossip.crypto import sha256
from node.fl import blobs
from node.fl.blobs import BlobError, BlobStore, model_bytes, model_hash, parse_model
from tests.integration.harness import wait_for


@pytest.fixture
def store(tmp_path: Path):
    s = BlobStore(tmp_path / "blobs.sqlite")
    yield s
    s.close()


def test_put_get_has(store: BlobStore) -> None:
    key = store.put("model", b"weights", 3)
    assert key == sha256(b"weights")
    assert store.has(key, "model") and store.get(key, "model") == b"weights"
    assert not store.has(sha256(b"other"), "model") and store.get(sha256(b"other"), "model") is None
    # a blob is what it was stored as: the model is not served to one asking for an update
    assert not store.has(key, "update") and store.get(key, "update") is None
    store.flush()
    assert not store.has(key, "update") and store.get(key, "update") is None
    assert store.get(key, "model") == b"weights"


def test_put_is_idempotent(store: BlobStore) -> None:
    assert store.put("update", b"u", 1) == store.put("update", b"u", 5)
    store.flush()
    assert store.count("update") == 1 and store.count("model") == 0


def test_storing_a_blob_again_later_keeps_it_longer(store: BlobStore) -> None:
    key = store.put("model", b"unchanged model", 0)
    store.put("model", b"unchanged model", 6)
    store.put("model", b"unchanged model", 2)  # an older height never shortens its life
    store.prune("model", 5)
    store.flush()
    assert store.has(key, "model")
    store.prune("model", 7)
    store.flush()
    assert not store.has(key, "model")


def test_prune_by_kind_and_height(store: BlobStore) -> None:
    models = [store.put("model", b"m%d" % h, h) for h in range(5)]
    update = store.put("update", b"u0", 0)
    store.prune("model", 3)  # queued after the writes: it sees them
    store.flush()
    assert [store.has(k, "model") for k in models] == [False, False, False, True, True]
    assert store.has(update, "update")  # another kind is untouched
    assert store.count("model") == 2 and store.count("update") == 1


def test_a_stalled_disk_does_not_stall_the_caller(tmp_path: Path, store: BlobStore) -> None:
    """Another connection holds the write lock (as a disk that does not answer would): a put
    returns at once and its blob is readable, and it reaches the disk once the lock is gone."""
    blocker = sqlite3.connect(tmp_path / "blobs.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        key = store.put("update", b"arrived while the disk was busy", 4)
        assert store.get(key, "update") == b"arrived while the disk was busy" and store.has(key, "update")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.flush()
    assert store.count("update") == 1 and store.get(key, "update") == b"arrived while the disk was busy"


def test_a_burst_of_puts_commits_in_one_transaction(tmp_path: Path, store: BlobStore) -> None:
    """While the disk is busy with one commit, the blobs put meanwhile (and a prune, in its
    place in the order) wait for the next commit together: two fsyncs for 50 blobs, not 50."""
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None)
    blocker = sqlite3.connect(tmp_path / "blobs.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        keys = [store.put("update", b"burst 0", 5)]
        # the writer has taken the first put and waits for the disk (on a busy machine it may
        # start only after the whole burst was queued, and then commits it all at once)
        wait_for(lambda: not store._queue, 30, "the writer to take the first put", interval=0.005)
        keys += [store.put("update", b"burst %d" % i, 5) for i in range(1, 50)]
        store.prune("update", 5)  # after the puts: removes nothing of height 5
        old = store.put("update", b"an old one", 2)  # after the prune: kept
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.flush()
    assert len(commits) == 2
    assert all(store.has(k, "update") for k in keys) and store.has(old, "update") and store.count("update") == 51


async def test_the_writer_gathers_a_burst_until_a_write_is_awaited(monkeypatch, tmp_path: Path) -> None:
    """Once handed a write, the writer gathers more before it commits (updates come in bursts); a
    write someone waits for ends the gathering at once, and everything gathered commits with it
    in one transaction. (A gathering window longer than the test's time limit: only the awaited
    write can end it.)"""
    monkeypatch.setattr(blobs, "GATHER_S", 3600.0)
    store = BlobStore(tmp_path / "blobs.sqlite")
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None)
    try:
        keys = [store.put("update", b"gathered %d" % i, 5) for i in range(20)]
        assert all(store.get(k, "update") == b"gathered %d" % i for i, k in enumerate(keys))  # served meanwhile
        assert store.count("update") == 0 and commits == []
        model = await store.put_durable("model", b"needed by a final block", 5)
        assert len(commits) == 1 and store.count("update") == 20 and store.has(model, "model")
        store.put("update", b"after the commit", 6)
        store.flush()  # waits too, so it ends the next gathering as well
        assert len(commits) == 2 and store.count("update") == 21
    finally:
        store.close()


async def test_put_durable_returns_once_committed(tmp_path: Path, store: BlobStore) -> None:
    key = await store.put_durable("model", b"needed by a final block", 9)
    with sqlite3.connect(tmp_path / "blobs.sqlite") as other:  # another process would see it
        assert other.execute("SELECT height FROM blobs WHERE hash = ?", (key,)).fetchone() == (9,)


def test_blobs_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "blobs.sqlite"
    first = BlobStore(path)
    key = first.put("model", b"persisted", 1)
    first.close()
    again = BlobStore(path)
    assert again.get(key, "model") == b"persisted"
    again.close()


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "blobs.sqlite"
    path.write_bytes(b"this is not an SQLite database " * 200)
    with pytest.raises(BlobError, match="is not a usable blob store .*move it away to refetch from peers"):
        BlobStore(path)


def test_a_blob_altered_on_disk_is_detected(tmp_path: Path, store: BlobStore) -> None:
    key = store.put("model", b"original", 1)
    store.flush()
    with sqlite3.connect(tmp_path / "blobs.sqlite") as db:
        db.execute("UPDATE blobs SET data = ? WHERE hash = ?", (b"tampered", key))
    with pytest.raises(BlobError, match=f"blob {key.hex()[:12]} is corrupt on disk"):
        store.get(key, "model")


def test_model_bytes_are_canonical() -> None:
    vec = np.linspace(-1, 1, 33, dtype=np.float32)
    assert model_hash(vec) == sha256(model_bytes(vec))
    assert model_bytes(vec.astype(np.float64)) == model_bytes(vec)            # any input dtype -> float32
    strided = np.repeat(vec, 2)[::2]
    assert not strided.flags["C_CONTIGUOUS"] and model_bytes(strided) == model_bytes(vec)
    assert model_hash(vec) != model_hash(vec + np.float32(1e-6))


def test_parse_model_round_trip() -> None:
    vec = np.random.default_rng(0).normal(size=257).astype(np.float32)
    parsed = parse_model(model_bytes(vec), 1 << 20)
    assert parsed.dtype == np.float32 and np.array_equal(parsed, vec)


@pytest.mark.parametrize("array", [
    np.zeros(4, dtype=np.float64),
    np.zeros(4, dtype=np.int32),
    np.zeros((2, 2), dtype=np.float32),
    np.array([0.0, np.nan], dtype=np.float32),
    np.array([np.inf, 0.0], dtype=np.float32),
])
def test_parse_model_rejects_anything_but_a_finite_flat_float32_vector(array: np.ndarray) -> None:
    with pytest.raises(BlobError, match="finite 1-D float32 vector"):
        parse_model(pack(encode_array(array)), 1 << 20)


@pytest.mark.parametrize("data, message", [
    (b"\xc1", "model blob malformed"),
    (pack(["float32", [4]]), "model blob malformed: array must be"),
    (pack(["float32", [4], b"\x00" * 15]), "model blob malformed: array byte length"),
])
def test_parse_model_rejects_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(BlobError, match=message):
        parse_model(data, 1 << 20)


def test_parse_model_enforces_the_size_cap() -> None:
    data = model_bytes(np.zeros(100, dtype=np.float32))
    with pytest.raises(BlobError, match="exceeds the cap"):
        parse_model(data, len(data) - 1)
