"""Accounts of the chain state and the arithmetic on their stake.

Every amount and counter is a non-negative int that fits a msgpack uint. Deductions (missed-slot
penalties, application penalties, slashing) are floored at zero and return what was actually
taken, so the totals an account reports always reconcile with its balance sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossip.crypto import is_node_id

BPS = 10_000
"""Basis points in one whole (``slash_bps`` is a fraction of this)."""

_COUNTERS = ("nonce", "jailed_until", "missed_in_row", "missed_total", "produced",
             "rewards_total", "penalties_total", "slashed_total")
_MAX_UINT = 2**63 - 1


def is_amount(v: Any) -> bool:
    """A non-negative int (not a bool) that fits a msgpack uint."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_UINT


def slash_amount(amount: int, bps: int) -> int:
    """``floor(amount * bps / 10000)``, at least 1 when both are positive (a slash always bites)."""
    if amount <= 0 or bps <= 0:
        return 0
    return max(1, amount * bps // BPS)


class AccountDecodeError(ValueError):
    """An account record in a state snapshot that is not well formed."""


@dataclass
class Account:
    """One node's balance sheet and its record as a (would-be) delegate.

    ``unbonding`` holds ``[amount, release_height]`` pairs in the order they were created;
    ``votes`` is the sorted approval list (empty: the account approves itself, see election.py).
    The account is jailed while ``height < jailed_until``.
    """

    balance: int = 0
    stake: int = 0
    unbonding: list[list[int]] = field(default_factory=list)
    nonce: int = 0
    votes: list[str] = field(default_factory=list)
    jailed_until: int = 0
    missed_in_row: int = 0
    missed_total: int = 0
    produced: int = 0
    rewards_total: int = 0
    penalties_total: int = 0
    slashed_total: int = 0
    name: str = ""

    def copy(self) -> "Account":
        """An independent copy (the lists are copied too)."""
        twin = Account(**self.__dict__)
        twin.unbonding = [list(entry) for entry in self.unbonding]
        twin.votes = list(self.votes)
        return twin

    def is_jailed(self, height: int) -> bool:
        return height < self.jailed_until

    @property
    def unbonding_total(self) -> int:
        return sum(amount for amount, _ in self.unbonding)

    @property
    def holdings(self) -> int:
        """Everything the account owns: balance + stake + unbonding (for supply accounting)."""
        return self.balance + self.stake + self.unbonding_total

    def reward(self, amount: int) -> None:
        """Add a reward to the stake (stake is trust, DESIGN section 3)."""
        self.stake += amount
        self.rewards_total += amount

    def penalize(self, amount: int) -> int:
        """Take up to ``amount`` from the stake; returns what was taken."""
        taken = min(self.stake, amount)
        self.stake -= taken
        self.penalties_total += taken
        return taken

    def slash(self, bps: int, offence_height: int, unbonding_blocks: int) -> int:
        """Slash the stake and every unbonding entry begun at or after ``offence_height``.

        Stake unbonded after the offence was at stake when the offence happened, so it cannot be
        used to escape the slash (the reason evidence is accepted for ``unbonding_blocks``).
        Returns the total taken.
        """
        taken = slash_amount(self.stake, bps)
        self.stake -= taken
        for entry in self.unbonding:
            amount, release = entry
            if release - unbonding_blocks >= offence_height:
                cut = slash_amount(amount, bps)
                entry[0] = amount - cut
                taken += cut
        self.unbonding = [e for e in self.unbonding if e[0] > 0]
        self.slashed_total += taken
        return taken

    def release_unbonded(self, height: int) -> int:
        """Move every unbonding entry due at or before ``height`` to the balance; returns the sum."""
        due = sum(amount for amount, release in self.unbonding if release <= height)
        if due:
            self.unbonding = [e for e in self.unbonding if e[1] > height]
            self.balance += due
        return due

    # -- canonical encoding ---------------------------------------------------------------------

    def to_wire(self, node_id: str) -> list:
        """Fixed-order array: ``[id, name, balance, stake, unbonding, votes, *counters]``."""
        return [node_id, self.name, self.balance, self.stake, [list(e) for e in self.unbonding],
                list(self.votes), *(getattr(self, c) for c in _COUNTERS)]

    @classmethod
    def from_wire(cls, obj: Any) -> tuple[str, "Account"]:
        """Inverse of :meth:`to_wire`; raises :class:`AccountDecodeError` on any bad field."""
        if not (isinstance(obj, list) and len(obj) == 6 + len(_COUNTERS)):
            raise AccountDecodeError("account must be a fixed-length array")
        node_id, name, balance, stake, unbonding, votes, *counters = obj
        if not is_node_id(node_id):
            raise AccountDecodeError("account id is not a node id")
        who = node_id[:12]
        if not isinstance(name, str):
            raise AccountDecodeError(f"account {who}: name is not a string")
        if not all(is_amount(v) for v in (balance, stake, *counters)):
            raise AccountDecodeError(f"account {who}: amounts and counters must be uints")
        if not (isinstance(unbonding, list) and all(
                isinstance(e, list) and len(e) == 2 and is_amount(e[0]) and is_amount(e[1]) for e in unbonding)):
            raise AccountDecodeError(f"account {who}: unbonding must be [amount, release_height] pairs")
        if not (isinstance(votes, list) and all(is_node_id(v) for v in votes) and votes == sorted(set(votes))):
            raise AccountDecodeError(f"account {who}: votes must be sorted distinct node ids")
        acc = cls(balance=balance, stake=stake, unbonding=unbonding, votes=votes, name=name)
        for attr, value in zip(_COUNTERS, counters):
            setattr(acc, attr, value)
        return node_id, acc

    def to_json(self, node_id: str, height: int) -> dict:
        """JSON-ready view for the HTTP API (jailed as of ``height``)."""
        return {
            "id": node_id,
            "name": self.name,
            "balance": self.balance,
            "stake": self.stake,
            "unbonding": [{"amount": a, "release_height": r} for a, r in self.unbonding],
            "nonce": self.nonce,
            "votes": list(self.votes),
            "jailed": self.is_jailed(height),
            **{c: getattr(self, c) for c in _COUNTERS if c != "nonce"},
        }
