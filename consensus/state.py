"""The chain state machine: accounts, members, delegates, jailing and slashing.

Pure and deterministic: no I/O, no clock, no randomness, no float in anything that is hashed. Two
nodes that apply the same final blocks through the same calls hold byte-identical states, which
:meth:`ChainState.root` proves (the root is the SHA-256 of the canonical snapshot, whose layout is
:mod:`consensus.snapshot`'s). Who is elected, and who of the elected votes and proposes while some
are jailed, are the pure functions of :mod:`consensus.election`; the API's JSON views of the state
are :mod:`consensus.statejson`.

The engine applies a final block as ``begin_block`` -> ``apply_evidence``* and ``apply_tx``* (in
one fixed order, the same when validating and when applying) -> ``apply_stake_changes`` ->
``end_block``; it validates a block on a :meth:`ChainState.copy` first, so a block that fails
halfway never touches the live state. ``apply_tx``,
``apply_evidence`` and ``apply_stake_changes`` also work with no block open (they then act at
``height + 1``), which lets the mempool simulate pending transactions on a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consensus.account import Account
from consensus.election import approvals, elect, proposer_set, voter_set
from consensus.equivocation import Evidence
from consensus.genesis import MAX_AMOUNT, Genesis
from consensus.snapshot import Snapshot, decode_snapshot, encode_snapshot
from consensus.tx import Tx
from consensus.txrules import tx_shape_problem
from gossip.crypto import is_node_id, sha256


class InvalidTx(ValueError):
    """A transaction the state refuses; ``reason`` says why (the state is unchanged)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class _OpenBlock:
    height: int
    block_hash: bytes
    producer: str


class ChainState:
    """Deterministic state of one chain; build it with :meth:`from_genesis` or :meth:`from_bytes`."""

    def __init__(self, genesis: Genesis, genesis_hash: bytes | None = None) -> None:
        self.genesis = genesis
        self.chain_id: str = genesis.chain_id
        self._genesis_hash = genesis_hash if genesis_hash is not None else genesis.hash
        self._accounts: dict[str, Account] = {}
        self._members: dict[str, int] = {}  # member -> declared samples (0: none, the app's cap applies)
        self._delegates: list[str] = []
        self._height = 0
        self._epoch = 0
        self._last_hash = self._genesis_hash
        self._punished: dict[bytes, tuple[str, int]] = {}  # evidence hash -> (offender, height)
        self._block: _OpenBlock | None = None

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> "ChainState":
        """Height 0: genesis accounts and members, delegates from a first election, epoch 0."""
        genesis.validate()
        state = cls(genesis)
        for acc in genesis.accounts:
            state._accounts[acc["id"]] = Account(balance=acc["balance"], stake=acc["stake"], name=acc.get("name", ""))
        state._members = dict.fromkeys(genesis.members, 0)
        state._delegates = elect(state._accounts, 0, genesis.max_delegates, genesis.min_candidate_stake)
        return state

    def copy(self) -> "ChainState":
        """An independent copy (the engine validates a block on one before applying it)."""
        twin = ChainState(self.genesis, self._genesis_hash)
        twin._accounts = {nid: acc.copy() for nid, acc in self._accounts.items()}
        twin._members = dict(self._members)
        twin._delegates = list(self._delegates)
        twin._height, twin._epoch, twin._last_hash = self._height, self._epoch, self._last_hash
        twin._punished = dict(self._punished)
        twin._block = self._block
        return twin

    # -- queries ---------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        """Height of the last applied block (0 at genesis)."""
        return self._height

    @property
    def epoch(self) -> int:
        """Number of elections held since genesis."""
        return self._epoch

    @property
    def genesis_hash(self) -> bytes:
        """The genesis hash, computed once (hashing the genesis serialises all of it: its accounts,
        members and app state; ``/status`` answers every peer's sync poll with it)."""
        return self._genesis_hash

    @property
    def last_block_hash(self) -> bytes:
        """Hash of the last applied block (the genesis hash at height 0)."""
        return self._last_hash

    @property
    def delegates(self) -> list[str]:
        """The elected delegates, sorted by id (the engine shuffles the schedule itself)."""
        return list(self._delegates)

    @property
    def members(self) -> list[str]:
        return sorted(self._members)

    @property
    def total_stake(self) -> int:
        return sum(acc.stake for acc in self._accounts.values())

    @property
    def total_supply(self) -> int:
        """Balances + stakes + unbonding: changes only by rewards, penalties and slashes."""
        return sum(acc.holdings for acc in self._accounts.values())

    def voters(self, height: int) -> list[str]:
        """Who votes at ``height``, sorted: the elected delegates that are not jailed, never fewer
        than ``min_delegates``, standby candidates stepping in first (see
        :func:`consensus.election.voter_set`). The set is never empty."""
        return voter_set(self._delegates, self._accounts, height, self.genesis.min_delegates,
                         self.candidate_approvals)

    def proposers(self, height: int) -> list[str]:
        """Who takes slots at ``height``: the voters that are not jailed (all voters if every
        one of them is, so that the chain always has a proposer)."""
        return proposer_set(self.voters(height), self._accounts, height)

    def could_vote(self, node_id: str) -> bool:
        """Whether ``node_id`` can be, or recently was, a voter: a delegate, or an account with at
        least the candidate stake. Evidence against anyone else is not worth checking: a key
        that never voted cannot have double-signed a vote that counts."""
        acc = self._accounts.get(node_id)
        return acc is not None and (node_id in self._delegates or acc.stake + acc.unbonding_total
                                    >= self.genesis.min_candidate_stake)

    def account(self, node_id: str) -> Account | None:
        """A copy of the account (mutating it does not change the state), or None."""
        acc = self._accounts.get(node_id)
        return acc.copy() if acc is not None else None

    def account_ids(self) -> list[str]:
        return sorted(self._accounts)

    def is_member(self, node_id: str) -> bool:
        return node_id in self._members

    def member_samples(self, node_id: str) -> int | None:
        """The sample count a member declared when it registered (0: it declared none, so the
        application's cap applies, as for genesis members), or None for a non-member."""
        return self._members.get(node_id)

    def trust(self, node_id: str) -> float:
        """Trust T_i = stake_i / total stake (paper eq. 9); 0.0 when nothing is staked."""
        total = self.total_stake
        acc = self._accounts.get(node_id)
        return acc.stake / total if acc is not None and total > 0 else 0.0

    def candidate_approvals(self) -> dict[str, int]:
        """Approval score of every candidate as the next election would count it."""
        return approvals(self._accounts, self._height, self.genesis.min_candidate_stake)

    # -- transactions ----------------------------------------------------------------------------

    def check_tx_stateless(self, tx: Tx, verify_signature: bool = True) -> str | None:
        """Chain id, field types, size, argument shapes and (optionally) the signature."""
        g = self.genesis
        return tx_shape_problem(tx, self.chain_id, g.max_tx_bytes, g.max_votes, verify_signature)

    def check_tx(self, tx: Tx, verify_signature: bool = True) -> str | None:
        """None if ``tx`` can be applied to the current state, else a clear reason."""
        return self.check_tx_stateless(tx, verify_signature) or self.check_tx_state(tx)

    def check_tx_state(self, tx: Tx) -> str | None:
        """The stateful half of :meth:`check_tx`, for a tx whose stateless checks already passed."""
        acc = self._accounts.get(tx.sender)
        if acc is None:
            return f"sender {tx.sender[:12]}... has no account"
        if tx.nonce != acc.nonce + 1:
            return f"nonce {tx.nonce} is not the sender's next nonce {acc.nonce + 1} (replayed or out of order)"
        g = self.genesis
        if tx.kind in ("transfer", "stake"):
            amount = tx.args[-1]
            return None if acc.balance >= amount else f"balance {acc.balance} is less than the amount {amount}"
        if tx.kind == "unstake":
            amount = tx.args[0]
            return None if acc.stake >= amount else f"stake {acc.stake} is less than the amount {amount}"
        if tx.kind == "vote":
            unknown = [c[:12] for c in tx.args[0] if c not in self._accounts]
            return f"vote for unknown account(s) {', '.join(unknown)}" if unknown else None
        member = tx.args[0]
        if member in self._members:
            return f"{member[:12]}... is already a member"
        if g.admission == "permissioned":
            if g.admin is None:
                return "registration is closed: the genesis names no admin"
            return None if tx.sender == g.admin else "only the admin may register members"
        if tx.sender != member:
            return "with open admission a node registers itself"
        return None if acc.stake >= g.member_bond else f"stake {acc.stake} is below the member bond {g.member_bond}"

    def apply_tx(self, tx: Tx, *, stateless_checked: bool = False) -> None:
        """Apply ``tx`` (signature not re-checked), or raise :class:`InvalidTx` leaving no trace.

        ``stateless_checked`` skips the shape checks a caller has just run on this very tx.
        """
        check = self.check_tx_state if stateless_checked else (lambda t: self.check_tx(t, verify_signature=False))
        if (reason := check(tx)) is not None:
            raise InvalidTx(reason)
        acc = self._accounts[tx.sender]
        if tx.kind == "transfer":
            to, amount = tx.args
            acc.balance -= amount
            self._accounts.setdefault(to, Account()).balance += amount
        elif tx.kind == "stake":
            acc.balance -= tx.args[0]
            acc.stake += tx.args[0]
        elif tx.kind == "unstake":
            acc.stake -= tx.args[0]
            acc.unbonding.append([tx.args[0], self._exec_height() + self.genesis.unbonding_blocks])
        elif tx.kind == "vote":
            acc.votes = sorted(tx.args[0])
        else:
            self._members[tx.args[0]] = tx.args[1] if len(tx.args) == 2 else 0
        acc.nonce += 1

    # -- blocks ----------------------------------------------------------------------------------

    def _exec_height(self) -> int:
        return self._block.height if self._block is not None else self._height + 1

    def begin_block(self, height: int, block_hash: bytes, producer: str, missed: list[str]) -> None:
        """Open block ``height``: charge the delegates in ``missed`` and credit the producer.

        Each missed slot costs ``missed_slot_penalty`` stake; ``missed_turns_to_jail`` in a row
        jail the delegate for ``jail_blocks``. Raises ValueError on a call the engine should never
        make (wrong height, unknown producer), before changing anything.
        """
        if self._block is not None:
            raise RuntimeError(f"block {self._block.height} is still open")
        if height != self._height + 1:
            raise ValueError(f"expected block {self._height + 1}, got {height}")
        if not (isinstance(block_hash, bytes) and len(block_hash) == 32):
            raise ValueError("block hash must be 32 bytes")
        unknown = [n for n in (producer, *missed) if n not in self._accounts]
        if unknown:
            raise ValueError(f"unknown producer or missed delegate {unknown[0]!r}")
        g = self.genesis
        for nid in missed:
            acc = self._accounts[nid]
            acc.missed_in_row += 1
            acc.missed_total += 1
            acc.penalize(g.missed_slot_penalty)
            if acc.missed_in_row >= g.missed_turns_to_jail:
                acc.jailed_until = max(acc.jailed_until, height + g.jail_blocks)
                acc.missed_in_row = 0
        prod = self._accounts[producer]
        prod.missed_in_row = 0
        prod.produced += 1
        self._block = _OpenBlock(height, block_hash, producer)

    def evidence_problem(self, ev: Evidence, *, verify: bool = True) -> str | None:
        """Why ``ev`` cannot be applied now (None if it can), without changing anything.

        The cheap checks (offender, window, already punished) come before the two signature
        checks; ``verify=False`` skips those for evidence whose signatures were checked before.
        """
        if not isinstance(ev, Evidence):
            return "not evidence"
        try:
            offender, ev_height, ev_hash = ev.offender, ev.height, ev.hash
        except (AttributeError, TypeError, ValueError):
            return "malformed evidence"
        g, height = self.genesis, self._exec_height()
        if offender not in self._accounts:
            return f"offender {str(offender)[:12]}... has no account"
        if not self.could_vote(offender):
            return f"offender {offender[:12]}... has no stake and is no delegate"
        if ev_height > height:
            return f"evidence from height {ev_height} is ahead of block {height}"
        if height - ev_height > g.unbonding_blocks:
            return f"evidence from height {ev_height} is older than unbonding_blocks ({g.unbonding_blocks})"
        if ev_hash in self._punished or (offender, ev_height) in self._punished.values():
            return f"{offender[:12]}... was already punished for height {ev_height}"
        return ev.check(self.chain_id) if verify else None

    def apply_evidence(self, ev: Evidence) -> str | None:
        """Slash and jail a double signer; returns why not when the evidence is not applicable."""
        if (reason := self.evidence_problem(ev)) is not None:
            return reason
        g = self.genesis
        acc = self._accounts[ev.offender]
        acc.slash(g.slash_bps, ev.height, g.unbonding_blocks)
        acc.jailed_until = max(acc.jailed_until, self._exec_height() + g.jail_blocks)
        self._punished[ev.hash] = (ev.offender, ev.height)
        return None

    def apply_stake_changes(self, changes: Iterable[tuple[str, int, str]]) -> None:
        """Application rewards (added to stake) and penalties (taken from stake, floored at 0).

        A reward to a node without an account opens one. Raises ValueError, before changing
        anything, if any change is malformed.
        """
        checked = []
        for change in changes:
            if not (isinstance(change, (tuple, list)) and len(change) == 3):
                raise ValueError(f"stake change must be (account, delta, reason), got {change!r}")
            nid, delta, reason = change
            if not (is_node_id(nid) and isinstance(delta, int) and not isinstance(delta, bool)
                    and abs(delta) <= MAX_AMOUNT and isinstance(reason, str)):
                raise ValueError(f"malformed stake change {change!r}")
            checked.append((nid, delta))
        for nid, delta in checked:
            if delta > 0:
                self._accounts.setdefault(nid, Account()).reward(delta)
            elif delta < 0 and nid in self._accounts:
                self._accounts[nid].penalize(-delta)

    def end_block(self) -> bool:
        """Reward the producer, release matured unbonding, advance the height; at an epoch
        boundary hold the election. Returns True if the delegate set changed."""
        blk = self._block
        if blk is None:
            raise RuntimeError("end_block without begin_block")
        g = self.genesis
        if g.block_reward:
            self._accounts[blk.producer].reward(g.block_reward)
        for acc in self._accounts.values():
            acc.release_unbonded(blk.height)
        self._drop_unbonded_members()
        # Evidence for these heights is now too old to be accepted, so its record can go.
        self._punished = {h: v for h, v in self._punished.items() if v[1] + g.unbonding_blocks > blk.height}
        self._height, self._last_hash, self._block = blk.height, blk.block_hash, None
        if self._height % g.epoch_length:
            return False
        self._epoch += 1
        new = elect(self._accounts, self._height, g.max_delegates, g.min_candidate_stake)
        if len(new) < g.min_delegates or new == self._delegates:
            return False  # too few candidates for BFT: the current set stays
        self._delegates = new
        return True

    def _drop_unbonded_members(self) -> None:
        """With open admission a membership lasts only while its bond does: a member whose stake
        fell below ``member_bond`` (unstaked, slashed, penalized) stops being one, so one bond
        never keeps several identities registered. Admin-registered members are unaffected."""
        g = self.genesis
        if g.admission != "open":
            return
        for member in sorted(self._members):
            acc = self._accounts.get(member)
            if acc is None or acc.stake < g.member_bond:
                del self._members[member]

    # -- snapshot and root -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Canonical msgpack snapshot (:mod:`consensus.snapshot`); the root hashes exactly this."""
        if self._block is not None:
            raise RuntimeError(f"cannot snapshot while block {self._block.height} is open")
        return encode_snapshot(Snapshot(self._genesis_hash, self._height, self._epoch, self._last_hash,
                                        self._accounts, self._members, self._delegates, self._punished))

    def root(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: equal states give equal roots on every machine."""
        return sha256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, genesis: Genesis) -> "ChainState":
        """Decode and check a snapshot of a chain started from ``genesis``; a corrupt one is a
        :class:`~consensus.snapshot.StateError` naming what is wrong."""
        state = cls(genesis)
        s = decode_snapshot(data, state._genesis_hash)
        state._accounts, state._members, state._delegates = s.accounts, s.members, s.delegates
        state._punished = s.punished
        state._height, state._epoch, state._last_hash = s.height, s.epoch, s.last_hash
        return state
