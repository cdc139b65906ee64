"""Genesis: JSON round trip, the hash, make_genesis, and one test per validation rule."""

from __future__ import annotations

import json

import pytest

from consensus.genesis import Genesis, GenesisError, canonical, make_genesis
from tests.consensus.helpers import CHAIN, IDS, genesis


def test_save_load_round_trip(tmp_path):
    g = genesis(4, app={"rule": "median", "lr": 0.05, "layers": [784, 10]})
    path = tmp_path / "sub" / "genesis.json"
    g.save(path)
    loaded = Genesis.load(path)
    assert loaded == g
    assert loaded.hash == g.hash
    text = path.read_text()
    assert text == json.dumps(g.to_dict(), sort_keys=True, indent=2) + "\n"
    assert not (tmp_path / "sub" / "genesis.json.tmp").exists()


def test_dict_round_trip_and_defaults():
    g = genesis(4)
    assert Genesis.from_dict(g.to_dict()) == g
    assert g.jail_blocks == g.epoch_length == 20
    assert (g.slot_ms, g.max_delegates, g.min_delegates, g.slash_bps) == (2000, 21, 4, 1000)
    assert g.max_block_bytes == 4 * 1024 * 1024 and g.max_tx_bytes == 16 * 1024
    assert genesis(4, epoch_length=7).jail_blocks == 7
    assert genesis(4, epoch_length=7, jail_blocks=3).jail_blocks == 3


def test_to_dict_is_a_copy():
    g = genesis(4)
    d = g.to_dict()
    d["accounts"][0]["stake"] = 999
    assert g.accounts[0]["stake"] == 100


def test_hash_is_canonical_and_covers_every_field():
    g = genesis(4)
    reordered = json.loads(json.dumps(g.to_dict(), sort_keys=False))
    reordered = dict(reversed(list(reordered.items())))
    assert Genesis.from_dict(reordered).hash == g.hash
    assert genesis(4, slot_ms=2001).hash != g.hash
    assert genesis(4, app={"x": 1}).hash != genesis(4, app={"x": 2}).hash
    assert len(g.hash) == 32


def test_canonical_sorts_maps_into_pairs():
    assert canonical({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": None}}) == \
        [["a", [["c", None], ["d", [1, [["y", 1], ["z", 0]]]]]], ["b", 1]]


def test_make_genesis_testnet_defaults():
    g = make_genesis("net", IDS[:3], stake=5, balance=7)
    assert g.admin == IDS[0]
    assert g.members == IDS[:3]
    assert [a["id"] for a in g.accounts] == IDS[:3]
    assert all(a["stake"] == 5 and a["balance"] == 7 for a in g.accounts)
    assert g.min_delegates == 3  # fewer than four nodes can still start a chain
    assert make_genesis("net", IDS[:6]).min_delegates == 4
    assert make_genesis("net", IDS[:4], admin=IDS[2]).admin == IDS[2]
    assert make_genesis("solo", IDS[:1]).min_delegates == 1


def _problems(**changes) -> str:
    data = genesis(4).to_dict()
    data.update(changes)
    with pytest.raises(GenesisError) as info:
        Genesis.from_dict(data)
    return str(info.value)


@pytest.mark.parametrize("field,bad,expected", [
    ("chain_id", "", "chain_id must be 1-50 characters"),
    ("chain_id", "has space", "chain_id must be 1-50 characters"),
    ("chain_id", "x" * 51, "chain_id must be 1-50 characters"),
    ("chain_id", 5, "chain_id must be 1-50 characters"),
    ("genesis_time_ms", -1, "genesis_time_ms must be an integer"),
    ("slot_ms", "2000", "slot_ms must be an integer"),
    ("slot_ms", 5, "slot_ms must be an integer in [10,"),
    ("epoch_length", 0, "epoch_length must be an integer"),
    ("max_delegates", 1025, "max_delegates must be an integer"),
    ("min_delegates", 0, "min_delegates must be an integer"),
    ("max_votes", 0, "max_votes must be an integer"),
    ("unbonding_blocks", 0, "unbonding_blocks must be an integer"),
    ("block_reward", -1, "block_reward must be an integer"),
    ("slash_bps", 10001, "slash_bps must be an integer"),
    ("missed_turns_to_jail", 0, "missed_turns_to_jail must be an integer"),
    ("missed_slot_penalty", 1.5, "missed_slot_penalty must be an integer"),
    ("jail_blocks", 0, "jail_blocks must be an integer"),
    ("min_candidate_stake", 0, "min_candidate_stake must be an integer"),
    ("member_bond", True, "member_bond must be an integer"),
    ("max_block_txs", 0, "max_block_txs must be an integer"),
    ("max_block_bytes", 100, "max_block_bytes must be an integer"),
    ("max_tx_bytes", 10, "max_tx_bytes must be an integer"),
    ("max_clock_drift_ms", None, "max_clock_drift_ms must be an integer"),
    ("admission", "anyone", "admission must be one of permissioned, open"),
    ("admin", "not-hex", "admin must be a node id"),
    ("admin", "ab" * 32, "admin has no account"),
    ("accounts", {}, "accounts must be a list"),
    ("accounts", ["x"], "accounts[0] must be an object"),
    ("members", "x", "members must be a list of node ids"),
    ("members", ["zz"], "members[0] must be a node id"),
    ("members", [IDS[0], IDS[0]], "members[1]"),
    ("app", [], "app must be a JSON object"),
    ("app", {"x": float("nan")}, "app.x is not a finite number"),
    ("app", {"x": {1: 2}}, "app.x has a non-string key"),
    ("app", {"x": [b"raw"]}, "app.x[0] has a value of type bytes"),
    ("app", {"x": 2**64}, "app.x is an integer out of the 64-bit range"),
])
def test_every_bad_field_is_named(field, bad, expected):
    assert expected in _problems(**{field: bad})


@pytest.mark.parametrize("mutate,expected", [
    (lambda a: a.update(color="red"), "accounts[1] has unknown field(s) color"),
    (lambda a: a.pop("stake"), "accounts[1] is missing stake"),
    (lambda a: a.update(id="AB" * 32), "accounts[1].id must be a node id"),
    (lambda a: a.update(id=IDS[0]), "appears twice"),
    (lambda a: a.update(balance=-5), "accounts[1].balance must be an integer >= 0"),
    (lambda a: a.update(stake=False), "accounts[1].stake must be an integer >= 0"),
    (lambda a: a.update(name=7), "accounts[1].name must be a string"),
    (lambda a: a.update(balance=2**63 - 1), "total supply"),
])
def test_every_bad_account_field_is_named(mutate, expected):
    accounts = genesis(4).to_dict()["accounts"]
    mutate(accounts[1])
    assert expected in _problems(accounts=accounts)


def test_cross_field_rules():
    assert "min_delegates (5) exceeds max_delegates (4)" in _problems(min_delegates=5, max_delegates=4)
    assert "max_tx_bytes (8192) exceeds max_block_bytes (4096)" in _problems(max_tx_bytes=8192, max_block_bytes=4096)
    assert "a vote for max_votes (300) candidates" in _problems(max_votes=300)


def test_too_few_candidates_for_the_first_election():
    accounts = genesis(4).to_dict()["accounts"]
    accounts[0]["stake"] = 0
    assert "only 3 account(s) have stake >= min_candidate_stake" in _problems(accounts=accounts)
    assert "only 0 account(s)" in _problems(min_candidate_stake=101)


def test_unknown_and_missing_keys():
    assert "unknown field 'slot_time'" in _problems(slot_time=3)
    data = genesis(4).to_dict()
    del data["chain_id"]
    with pytest.raises(GenesisError, match="missing field 'chain_id'"):
        Genesis.from_dict(data)
    with pytest.raises(GenesisError, match="genesis must be a JSON object"):
        Genesis.from_dict([1, 2])


def test_all_problems_reported_at_once():
    with pytest.raises(GenesisError) as info:
        Genesis.from_dict({**genesis(4).to_dict(), "slot_ms": 0, "admission": "?", "chain_id": "a b"})
    assert len(info.value.problems) == 3


def test_validate_catches_in_place_edits_and_save_refuses(tmp_path):
    g = genesis(4)
    g.slash_bps = 20000
    with pytest.raises(GenesisError, match="slash_bps"):
        g.validate()
    with pytest.raises(GenesisError):
        g.save(tmp_path / "genesis.json")
    assert not (tmp_path / "genesis.json").exists()


def test_load_reports_unreadable_files(tmp_path):
    with pytest.raises(GenesisError, match="cannot read genesis file"):
        Genesis.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenesisError, match="is not valid JSON"):
        Genesis.load(bad)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GenesisError, match="is not valid JSON"):
        Genesis.load(bad)


def test_open_admission_without_admin_is_valid():
    g = make_genesis(CHAIN, IDS[:4], admission="open", admin=None)
    assert g.admin is None and g.admission == "open"
