"""ChainStore: atomic block commits, reopening, genesis checks, corruption, the signing record."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.state import ChainState
from consensus.store import ChainStore, StoreError
from tests.consensus.helpers import (
    IDS,
    KEYS,
    commit_for,
    finalize,
    genesis,
    make_block,
    state,
    tx,
)

REPO = Path(__file__).resolve().parents[2]


class Chain:
    """A tiny chain built with real signed blocks and commits, block by block."""

    def __init__(self, n: int = 4) -> None:
        self.genesis = genesis(n)
        self.state = ChainState.from_genesis(self.genesis)
        self.nonce = 0

    def next(self, with_tx: bool = True):
        txs = ()
        if with_tx:
            self.nonce += 1
            txs = (tx(KEYS[1], "stake", [1], nonce=self.nonce), tx(KEYS[2], "vote", [[IDS[0]]], nonce=self.nonce))
        block = make_block(self.state, KEYS[self.state.height % 4], txs, payload=b"p%d" % self.state.height)
        self.state = finalize(self.state, block)
        return block, commit_for(block, KEYS[:3]), self.state


@pytest.fixture
def chain():
    return Chain()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "data" / "chain.db"


def test_fresh_store_is_empty(db, chain):
    with ChainStore(db, chain.genesis) as store:
        assert store.latest_height() == 0
        assert store.load_state() is None
        assert store.block(1) is None and store.commit(1) is None and store.tx(b"\x00" * 32) is None
        assert store.last_signed("precommit") is None
        assert store.blocks(1, 10) == [] and store.voters(1) == []
        mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_commit_block_and_reads(db, chain):
    with ChainStore(db, chain.genesis) as store:
        written = []
        for _ in range(3):
            block, commit, st = chain.next()
            store.commit_block(block, commit, st, voters=IDS[:4])
            written.append((block, commit))
        assert store.latest_height() == 3
        for block, commit in written:
            assert store.block(block.height).encode() == block.encode()
            assert store.commit(block.height) == commit
            assert store.voters(block.height) == IDS[:4]
            for i, t in enumerate(block.txs):
                assert store.tx(t.hash) == (block.height, i, t)
        assert [b.height for b in store.blocks(2, 10)] == [2, 3]
        assert [b.height for b in store.blocks(1, 2)] == [1, 2]
        assert store.load_state().root() == chain.state.root()


def test_failure_inside_app_writes_writes_nothing(db, chain):
    with ChainStore(db, chain.genesis) as store:
        block, commit, st = chain.next()
        store.commit_block(block, commit, st, [(b"k", b"v1"), (b"gone", b"x")])
        block2, commit2, st2 = chain.next()
        # the database refuses the application's last write: the block's whole transaction rolls back
        store._conn.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON app_kv WHEN NEW.key = x'626164' "
                            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        with pytest.raises(StoreError, match="disk on fire"):
            store.commit_block(block2, commit2, st2, [(b"k", b"v2"), (b"gone", None), (b"bad", b"v")])
        assert store.latest_height() == 1
        assert store.block(2) is None and store.commit(2) is None
        assert store.tx(block2.txs[0].hash) is None
        assert (store.app_get(b"k"), store.app_get(b"gone")) == (b"v1", b"x")
        assert store.load_state().height == 1
        store._conn.execute("DROP TRIGGER refuse")
        store.commit_block(block2, commit2, st2, [(b"k", b"v2"), (b"gone", None)])  # goes in cleanly now
        assert store.latest_height() == 2
        assert dict(store.app_records()) == {b"k": b"v2"}


def test_commit_block_refuses_mismatched_input(db, chain):
    with ChainStore(db, chain.genesis) as store:
        block, commit, st = chain.next()
        block2, commit2, st2 = chain.next()
        with pytest.raises(StoreError, match="next height is 1"):
            store.commit_block(block2, commit2, st2)
        with pytest.raises(ValueError, match="the commit is not for this block"):
            store.commit_block(block, commit2, st)
        with pytest.raises(ValueError, match="the state is not the result of this block"):
            store.commit_block(block, commit, st2)
        with pytest.raises(TypeError, match="app_writes must be"):
            store.commit_block(block, commit, st, IDS[:4])
        with pytest.raises(TypeError, match="app_writes must be"):
            store.commit_block(block, commit, st, [(b"k", "not bytes")])
        store.commit_block(block, commit, st)
        with pytest.raises(StoreError, match="next height is 2"):
            store.commit_block(block, commit, st)


def test_reopen_resumes(db, chain):
    with ChainStore(db, chain.genesis) as store:
        store.commit_block(*chain.next())
        store.commit_block(*chain.next(), [(b"model", b"\x01\x02")])
    with ChainStore(db, chain.genesis) as store:
        assert store.latest_height() == 2
        resumed = store.load_state()
        assert resumed.root() == chain.state.root()
        records = store.app_records()
        assert dict(records) == {b"model": b"\x01\x02"} and len(records) == 1
        assert records[b"model"] == b"\x01\x02" and records.get(b"other") is None and b"other" not in records
        store.commit_block(*chain.next())
        assert store.latest_height() == 3


def test_last_signed_survives_reopen(db, chain):
    with ChainStore(db, chain.genesis) as store:
        store.record_signing("prevote", 5, 7, b"\x01" * 32)
        store.record_signing("precommit", 5, 7, b"\x02" * 32)
        store.record_signing("precommit", 6, 9, b"\x03" * 32)
        with pytest.raises(ValueError, match="signing kind"):
            store.record_signing("vote", 1, 1, b"\x00" * 32)
    with ChainStore(db, chain.genesis) as store:
        assert store.last_signed("prevote") == (5, 7, b"\x01" * 32)
        assert store.last_signed("precommit") == (6, 9, b"\x03" * 32)
        assert store.last_signed("proposal") is None


def test_wrong_genesis_is_refused(db, chain):
    ChainStore(db, chain.genesis).close()
    with pytest.raises(StoreError, match="was created from a different genesis"):
        ChainStore(db, genesis(4, slot_ms=3000))
    other = genesis(4)
    other.chain_id = "other-chain"
    with pytest.raises(StoreError, match="belongs to chain 'test-chain', not 'other-chain'"):
        ChainStore(db, other)
    with ChainStore(db, chain.genesis) as store:  # the refusals changed nothing
        assert store.latest_height() == 0


def test_garbage_file_is_reported_corrupt_not_recreated(db, chain):
    db.parent.mkdir(parents=True)
    garbage = os.urandom(8192)
    db.write_bytes(garbage)
    with pytest.raises(StoreError, match=r"data dir is corrupt: .*move it away to resync from peers"):
        ChainStore(db, chain.genesis)
    assert db.read_bytes() == garbage


def test_damaged_database_is_reported_corrupt(db, chain):
    with ChainStore(db, chain.genesis) as store:
        for _ in range(3):
            store.commit_block(*chain.next())
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // 4096):
        data[page * 4096 + 8: page * 4096 + 200] = os.urandom(192)  # smash every page's b-tree header
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="data dir is corrupt"):
        ChainStore(db, chain.genesis)


def test_corrupt_state_snapshot_is_reported(db, chain):
    with ChainStore(db, chain.genesis) as store:
        store.commit_block(*chain.next())
        store._conn.execute("UPDATE state SET data = ? WHERE id = 1", (b"\x93\x01\x02",))
        with pytest.raises(StoreError, match="data dir is corrupt: chain state snapshot is corrupt"):
            store.load_state()
        store._conn.execute("UPDATE blocks SET data = ? WHERE height = 1", (b"\xc1",))
        with pytest.raises(StoreError, match="block 1 cannot be decoded"):
            store.block(1)


def test_foreign_sqlite_database_is_refused(db, chain):
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos(id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a fedchain chain store"):
        ChainStore(db, chain.genesis)


def test_a_directory_path_is_refused(tmp_path, chain):
    with pytest.raises(StoreError, match="is a directory"):
        ChainStore(tmp_path, chain.genesis)


def test_second_process_is_locked_out(db, chain):
    code = ("import sys\nfrom consensus.store import ChainStore, StoreError\n"
            "from tests.consensus.helpers import genesis\n"
            "try:\n    ChainStore(sys.argv[1], genesis(4))\nexcept StoreError as exc:\n    print(exc)\n")
    with ChainStore(db, chain.genesis):
        out = subprocess.run([sys.executable, "-c", code, str(db)], cwd=REPO, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "is in use" in out.stdout, out.stderr
    ChainStore(db, chain.genesis).close()  # released on close


def test_state_of_a_real_history_round_trips_through_the_store(db):
    st = state(4)
    g = st.genesis
    with ChainStore(db, g) as store:
        block = make_block(st, KEYS[0], (tx(KEYS[0], "transfer", [IDS[5], 50]),))
        nxt = finalize(st, block)
        store.commit_block(block, commit_for(block, KEYS[:3]), nxt)
    with ChainStore(db, g) as store:
        back = store.load_state()
        assert back.account(IDS[5]).balance == 50 and back.root() == nxt.root()


def test_schema_version_and_missing_tables_are_checked(db, chain):
    with ChainStore(db, chain.genesis) as store:
        store._conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="has schema version 99; this version of fedchain reads version 2"):
        ChainStore(db, chain.genesis)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    conn.execute("DROP TABLE signing")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="data dir is corrupt: missing table.s. signing"):
        ChainStore(db, chain.genesis)
