"""The genesis file: the chain's identity, its initial accounts and every protocol number.

Every node of a chain must start from byte-identical genesis content, so the genesis hash (over a
canonical msgpack form, not the JSON text) is checked by the store on open and by peers on sync.
Validation is strict and reports every bad field at once: an operator fixing a hand-edited file
should not have to iterate one error at a time, and a typo in a key must not silently fall back
to a default (unknown keys are errors).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gossip.codec import DEFAULT_MAX_MESSAGE, pack
from gossip.crypto import is_node_id, sha256

MAX_AMOUNT = 2**63 - 1
"""Largest amount or counter a msgpack uint in fedchain may carry."""

VOTE_ID_BYTES = 66
"""Encoded size of one node id inside a vote transaction (msgpack str8 header + 64 chars)."""

TX_OVERHEAD_BYTES = 256
"""Upper bound on a transaction's encoded size without its arguments."""

ENVELOPE_ROOM = 64 * 1024
"""Room a block leaves in one gossip message for the signed envelope around it."""

_CHAIN_ID = re.compile(r"[A-Za-z0-9._-]{1,50}")
_ACCOUNT_KEYS = {"id", "balance", "stake", "name"}
_REQUIRED = ("chain_id", "genesis_time_ms")
_ADMISSIONS = ("permissioned", "open")
_MAX_APP_DEPTH = 32

# field -> (minimum, maximum) for every integer setting.
_INT_LIMITS: dict[str, tuple[int, int]] = {
    "genesis_time_ms": (0, MAX_AMOUNT),
    "slot_ms": (10, 3_600_000),
    "epoch_length": (1, 1_000_000),
    "max_delegates": (1, 1024),  # a Commit carries at most 1024 signatures
    "min_delegates": (1, 1024),
    "max_votes": (1, 1024),
    "unbonding_blocks": (1, 1_000_000_000),  # evidence needs a window of at least one block
    "block_reward": (0, 10**12),
    "slash_bps": (0, 10_000),
    "missed_turns_to_jail": (1, 1_000_000),
    "missed_slot_penalty": (0, 10**12),
    "jail_blocks": (1, 1_000_000_000),
    "min_candidate_stake": (1, MAX_AMOUNT),
    "member_bond": (0, MAX_AMOUNT),
    "max_block_txs": (1, 100_000),
    "max_block_bytes": (1024, DEFAULT_MAX_MESSAGE - ENVELOPE_ROOM),
    "max_tx_bytes": (256, 1024 * 1024),
    "max_clock_drift_ms": (0, 3_600_000),
}


class GenesisError(ValueError):
    """A genesis that cannot start a chain; ``problems`` lists every bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid genesis: " + "; ".join(problems))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def canonical(obj: Any) -> Any:
    """Maps become arrays of ``[key, value]`` sorted by key, recursively, for canonical msgpack."""
    if isinstance(obj, dict):
        return [[k, canonical(obj[k])] for k in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def _app_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON data that hashes the same everywhere, or None."""
    if depth > _MAX_APP_DEPTH:
        return f"{path} is nested deeper than {_MAX_APP_DEPTH} levels"
    if value is None or isinstance(value, (bool, str)):
        return None
    if _is_int(value):
        return None if -(2**63) <= value <= MAX_AMOUNT else f"{path} is an integer out of the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is not a finite number"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (p := _app_problem(item, f"{path}[{i}]", depth + 1)) is not None:
                return p
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-string key {k!r}"
            if (p := _app_problem(item, f"{path}.{k}", depth + 1)) is not None:
                return p
        return None
    return f"{path} has a value of type {type(value).__name__}, which JSON cannot hold"


@dataclass
class Genesis:
    """Chain id, protocol numbers (DESIGN section 3), initial accounts and members, app state."""

    chain_id: str
    genesis_time_ms: int
    slot_ms: int = 2000
    epoch_length: int = 20
    max_delegates: int = 21
    min_delegates: int = 4
    max_votes: int = 30
    unbonding_blocks: int = 43_200  # one day of 2 s slots: the window for evidence and the sync horizon
    block_reward: int = 10
    slash_bps: int = 1000
    missed_turns_to_jail: int = 3
    missed_slot_penalty: int = 1
    jail_blocks: int | None = None  # None: one epoch (resolved in __post_init__)
    min_candidate_stake: int = 1
    admission: str = "permissioned"
    admin: str | None = None
    member_bond: int = 100
    max_block_txs: int = 500
    max_block_bytes: int = 4 * 1024 * 1024
    max_tx_bytes: int = 16 * 1024
    max_clock_drift_ms: int = 1000
    accounts: list[dict] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    app: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.jail_blocks is None:
            self.jail_blocks = self.epoch_length

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-ready content (a deep copy); what the hash covers."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Genesis":
        """Build and validate a genesis from parsed JSON; unknown or missing keys are errors."""
        if not isinstance(data, dict):
            raise GenesisError([f"genesis must be a JSON object, not {type(data).__name__}"])
        names = {f.name for f in fields(cls)}
        problems = [f"unknown field {k!r}" for k in sorted(map(str, set(data) - names))]
        problems += [f"missing field {k!r}" for k in _REQUIRED if k not in data]
        if problems:
            raise GenesisError(problems)
        genesis = cls(**copy.deepcopy(data))
        genesis.validate()
        return genesis

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Genesis":
        """Read and validate a genesis JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise GenesisError([f"cannot read genesis file {path}: {exc.strerror or exc}"]) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GenesisError([f"genesis file {path} is not valid JSON: {exc}"]) from exc
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (sorted keys, indented), atomically so a crash never leaves half a file."""
        self.validate()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical msgpack of :meth:`to_dict` (independent of JSON formatting)."""
        return sha256(pack(canonical(self.to_dict())))

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`GenesisError` listing every field that cannot start a chain."""
        problems: list[str] = []
        if not (isinstance(self.chain_id, str) and _CHAIN_ID.fullmatch(self.chain_id)):
            problems.append(f"chain_id must be 1-50 characters of [A-Za-z0-9._-] (got {self.chain_id!r})")
        ints_ok = True
        for name, (lo, hi) in _INT_LIMITS.items():
            value = getattr(self, name)
            if not (_is_int(value) and lo <= value <= hi):
                problems.append(f"{name} must be an integer in [{lo}, {hi}] (got {value!r})")
                ints_ok = False
        if ints_ok:
            problems += self._cross_field_problems()
        if self.admission not in _ADMISSIONS:
            problems.append(f"admission must be one of {', '.join(_ADMISSIONS)} (got {self.admission!r})")
        if self.admin is not None and not is_node_id(self.admin):
            problems.append(f"admin must be a node id (64 lowercase hex characters) or null (got {self.admin!r})")
        account_ids, account_problems = self._account_problems()
        problems += account_problems
        if self.admin is not None and is_node_id(self.admin) and self.admin not in account_ids:
            problems.append("admin has no account, so it could not sign register transactions")
        problems += self._member_problems()
        if not isinstance(self.app, dict):
            problems.append(f"app must be a JSON object (got {type(self.app).__name__})")
        elif (p := _app_problem(self.app, "app")) is not None:
            problems.append(p)
        if ints_ok and not account_problems:
            candidates = sum(1 for a in self.accounts if a["stake"] >= self.min_candidate_stake)
            if candidates < self.min_delegates:
                problems.append(f"only {candidates} account(s) have stake >= min_candidate_stake "
                                f"({self.min_candidate_stake}); the first election needs min_delegates "
                                f"({self.min_delegates})")
        if problems:
            raise GenesisError(problems)

    def _cross_field_problems(self) -> list[str]:
        problems = []
        if self.min_delegates > self.max_delegates:
            problems.append(f"min_delegates ({self.min_delegates}) exceeds max_delegates ({self.max_delegates})")
        if self.max_tx_bytes > self.max_block_bytes:
            problems.append(f"max_tx_bytes ({self.max_tx_bytes}) exceeds max_block_bytes ({self.max_block_bytes})")
        vote_bytes = VOTE_ID_BYTES * self.max_votes + TX_OVERHEAD_BYTES
        if vote_bytes > self.max_tx_bytes:
            problems.append(f"a vote for max_votes ({self.max_votes}) candidates needs about {vote_bytes} bytes, "
                            f"more than max_tx_bytes ({self.max_tx_bytes})")
        return problems

    def _account_problems(self) -> tuple[set[str], list[str]]:
        if not isinstance(self.accounts, list):
            return set(), [f"accounts must be a list (got {type(self.accounts).__name__})"]
        problems: list[str] = []
        ids: set[str] = set()
        supply = 0
        for i, acc in enumerate(self.accounts):
            where = f"accounts[{i}]"
            if not isinstance(acc, dict):
                problems.append(f"{where} must be an object with id, balance, stake")
                continue
            if unknown := sorted(map(str, set(acc) - _ACCOUNT_KEYS)):
                problems.append(f"{where} has unknown field(s) {', '.join(unknown)}")
            missing = [k for k in ("id", "balance", "stake") if k not in acc]
            if missing:
                problems.append(f"{where} is missing {', '.join(missing)}")
                continue
            if not is_node_id(acc["id"]):
                problems.append(f"{where}.id must be a node id (64 lowercase hex characters)")
            elif acc["id"] in ids:
                problems.append(f"{where}.id {acc['id'][:12]}... appears twice")
            else:
                ids.add(acc["id"])
            for key in ("balance", "stake"):
                if not (_is_int(acc[key]) and 0 <= acc[key] <= MAX_AMOUNT):
                    problems.append(f"{where}.{key} must be an integer >= 0 (got {acc[key]!r})")
                else:
                    supply += acc[key]
            if "name" in acc and not (isinstance(acc["name"], str) and len(acc["name"]) <= 64):
                problems.append(f"{where}.name must be a string of at most 64 characters")
        if supply > MAX_AMOUNT:
            problems.append(f"total supply {supply} exceeds {MAX_AMOUNT}")
        return ids, problems

    def _member_problems(self) -> list[str]:
        if not isinstance(self.members, list):
            return [f"members must be a list of node ids (got {type(self.members).__name__})"]
        problems = []
        seen: set[str] = set()
        for i, member in enumerate(self.members):
            if not is_node_id(member):
                problems.append(f"members[{i}] must be a node id (got {member!r})")
            elif member in seen:
                problems.append(f"members[{i}] {member[:12]}... appears twice")
            seen.add(member)
        return problems


def make_genesis(chain_id: str, node_ids: list[str], stake: int = 100, balance: int = 1000,
                 **overrides: Any) -> Genesis:
    """A testnet genesis: every node an account with ``stake`` and ``balance`` and a member.

    ``admin`` defaults to the first node; ``min_delegates`` to ``min(4, len(node_ids))`` so that
    a testnet of fewer than four nodes can start. ``genesis_time_ms`` defaults to 0; callers that
    run a live chain pass the current time (this function reads no clock).
    """
    accounts = [{"id": nid, "balance": balance, "stake": stake, "name": f"node{i}"}
                for i, nid in enumerate(node_ids)]
    settings: dict[str, Any] = {
        "chain_id": chain_id,
        "genesis_time_ms": 0,
        "accounts": accounts,
        "members": list(node_ids),
        "admin": node_ids[0] if node_ids else None,
        "min_delegates": max(1, min(4, len(node_ids))),
    }
    settings.update(overrides)
    return Genesis.from_dict(settings)
