"""The byte layout of a chain state snapshot: what the state root hashes and the store keeps.

The layout is consensus: every node must encode equal states to identical bytes, or state roots
differ and blocks are refused. So it lives apart from the state machine that fills it, with its
version number, and decoding accepts exactly the canonical encoding (sorted, no duplicates, every
field checked), so that a corrupt snapshot is a clear :class:`StateError`, never a wrong state.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.account import Account, AccountDecodeError, is_amount
from gossip.codec import DecodeError, pack, unpack
from gossip.crypto import is_node_id

STATE_FORMAT = 2
"""Version of the snapshot layout; bumped on any change to :func:`encode_snapshot`
(2: members carry their declared sample counts)."""

MAX_STATE_BYTES = 256 * 1024 * 1024
"""Decoding cap for a snapshot (far above a few thousand accounts)."""


class StateError(ValueError):
    """A state snapshot that is corrupt or belongs to another chain."""


@dataclass
class Snapshot:
    """Everything a chain state holds between blocks."""

    genesis_hash: bytes
    height: int
    epoch: int
    last_hash: bytes
    accounts: dict[str, Account]
    members: dict[str, int]  # member -> declared samples (0: none, the app's cap applies)
    delegates: list[str]
    punished: dict[bytes, tuple[str, int]]  # evidence hash -> (offender, height)


def encode_snapshot(s: Snapshot) -> bytes:
    """Canonical msgpack snapshot (sorted fixed-order arrays); the root hashes exactly this."""
    return pack([
        STATE_FORMAT, s.genesis_hash, s.height, s.epoch, s.last_hash,
        [s.accounts[nid].to_wire(nid) for nid in sorted(s.accounts)],
        [[m, s.members[m]] for m in sorted(s.members)],
        list(s.delegates),
        [[h, off, ht] for h, (off, ht) in sorted(s.punished.items())],
    ])


def decode_snapshot(data: bytes, genesis_hash: bytes) -> Snapshot:
    """Decode and check a snapshot of the chain started from the genesis of ``genesis_hash``;
    :class:`StateError` names what is wrong with a corrupt one."""
    def fail(what: str) -> StateError:
        return StateError(f"chain state snapshot is corrupt: {what}")

    try:
        obj = unpack(data, MAX_STATE_BYTES)
    except DecodeError as exc:
        raise fail(str(exc)) from exc
    if not (isinstance(obj, list) and len(obj) == 9):
        raise fail("not a 9-element array")
    fmt, ghash, height, epoch, last_hash, accounts, members, delegates, punished = obj
    if fmt != STATE_FORMAT:
        raise fail(f"unsupported format {fmt!r} (expected {STATE_FORMAT})")
    if ghash != genesis_hash:
        raise StateError("chain state snapshot belongs to a different genesis")
    if not (is_amount(height) and is_amount(epoch) and isinstance(last_hash, bytes) and len(last_hash) == 32):
        raise fail("bad height, epoch or last block hash")
    if not (isinstance(accounts, list) and isinstance(members, list)
            and isinstance(delegates, list) and isinstance(punished, list)):
        raise fail("accounts, members, delegates and punished must be arrays")
    try:
        account_map = dict(Account.from_wire(a) for a in accounts)
    except AccountDecodeError as exc:
        raise fail(str(exc)) from exc
    if not all(isinstance(m, list) and len(m) == 2 and is_node_id(m[0]) and is_amount(m[1]) for m in members):
        raise fail("members must be [node id, declared samples] pairs")
    if not all(d in account_map for d in delegates):
        raise fail("a delegate has no account")
    punished_map: dict[bytes, tuple[str, int]] = {}
    for entry in punished:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], bytes)
                and len(entry[0]) == 32 and is_node_id(entry[1]) and is_amount(entry[2])):
            raise fail("punished entries must be [hash, offender, height]")
        punished_map[entry[0]] = (entry[1], entry[2])
    snapshot = Snapshot(genesis_hash, height, epoch, last_hash, account_map, {m: n for m, n in members},
                        list(delegates), punished_map)
    if encode_snapshot(snapshot) != bytes(data):
        raise fail("not in canonical form (unsorted or duplicate entries)")
    return snapshot
