"""Pending transactions, kept in an order that applies cleanly to the chain state.

The pool simulates its own contents: alongside the last final state (the *base*) it keeps a
*check state*, the base with every pending transaction applied in arrival order (as CometBFT's
mempool keeps a check state). A new transaction is judged against the check state, so a sender
may queue nonce+1, nonce+2, ... and two transfers that together overspend are caught at entry.
Because every pending transaction was accepted against the pool's own earlier contents, arrival
order is a valid block order. After a final block the pool drops what was committed and
re-simulates the rest against the new state, dropping whatever no longer applies (a stale
nonce, a spent balance) and everything queued behind it.

Signature checks are the expensive part and never depend on state: each transaction's
stateless verdict is computed once and cached by hash (bounded LRU), and it comes after every
cheap refusal (duplicate, size, the pool's and the sender's quota, an unknown sender, a nonce
out of reach). Each sender may hold at most ``max_per_sender`` pending transactions, so one
account cannot fill the pool, and there are no free accounts: a sender needs one on chain.

A refusal's reason starts with its category, which tells gossip whom to blame:
``invalid:`` (forged or malformed: the forwarding peer relayed junk) versus ``duplicate:``,
``full:`` and ``stale:`` (nobody's fault: a full pool, or a transaction our state has moved past).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from consensus.state import ChainState
from consensus.tx import Tx

REGOSSIP_FIRST = 2
"""Final blocks a pending transaction waits before it is gossiped again; the wait doubles each time."""
REGOSSIP_LONGEST = 64
"""The longest wait between two gossips of one pending transaction, in final blocks."""


@dataclass(slots=True)
class _Entry:
    tx: Tx
    size: int
    due: int  # the height from which it is gossiped again
    wait: int  # blocks until the gossip after that


class Mempool:
    """At most ``max_txs`` transactions and ``max_bytes`` encoded bytes, by arrival."""

    def __init__(self, max_txs: int = 5000, max_bytes: int = 32 * 1024 * 1024, verdict_cache: int = 20_000,
                 max_per_sender: int = 16) -> None:
        if min(max_txs, max_bytes, verdict_cache, max_per_sender) < 1:
            raise ValueError("mempool limits must be positive")
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender
        self._per_sender: Counter[str] = Counter()
        self._verdict_cap = verdict_cache
        self._pending: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._verdicts: OrderedDict[bytes, str | None] = OrderedDict()
        self._view: tuple[ChainState, ChainState] | None = None  # (base, check state)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._pending

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def get(self, tx_hash: bytes) -> Tx | None:
        entry = self._pending.get(tx_hash)
        return entry.tx if entry is not None else None

    def list(self) -> list[dict]:
        """JSON-ready pending transactions in the order they would be reaped."""
        return [{**e.tx.to_json(), "size": e.size} for e in self._pending.values()]

    def is_verified(self, tx_hash: bytes) -> bool:
        """True if this exact transaction already passed the stateless checks (signature included)."""
        return tx_hash in self._verdicts and self._verdicts[tx_hash] is None

    def _signature(self, tx: Tx, tx_hash: bytes) -> str | None:
        """The signature's verdict, checked once per transaction (:meth:`add` has checked the rest
        of the stateless rules just before: they are cheap, the signature is not)."""
        if tx_hash in self._verdicts:
            self._verdicts.move_to_end(tx_hash)
            return self._verdicts[tx_hash]
        verdict = None if tx.verify_signature() else "bad signature"
        self._verdicts[tx_hash] = verdict
        if len(self._verdicts) > self._verdict_cap:
            self._verdicts.popitem(last=False)
        return verdict

    def _sync(self, state: ChainState, force: bool = False) -> ChainState:
        """Rebase on ``state`` if it is newer than the base; returns the check state."""
        view = self._view
        if force or view is None or (view[0].height, view[0].last_block_hash) != (state.height, state.last_block_hash):
            base = state.copy()
            check = base.copy()
            for tx_hash, entry in list(self._pending.items()):
                if check.check_tx(entry.tx, verify_signature=False) is None:
                    check.apply_tx(entry.tx)
                else:
                    self._drop(tx_hash)
            view = self._view = (base, check)
        return view[1]

    def _drop(self, tx_hash: bytes) -> None:
        entry = self._pending.pop(tx_hash, None)
        if entry is not None:
            self._bytes -= entry.size
            self._per_sender[entry.tx.sender] -= 1
            if self._per_sender[entry.tx.sender] <= 0:
                del self._per_sender[entry.tx.sender]

    def add(self, tx: Tx, state: ChainState) -> str | None:
        """Admit ``tx`` on top of ``state`` (the last final state); returns why not, or None."""
        try:
            tx_hash = tx.hash
            size = len(tx.encoded)
        except (AttributeError, ValueError) as exc:
            return f"invalid: transaction cannot be encoded: {exc}"
        if tx_hash in self._pending:
            return "duplicate: already in the mempool"
        limit = state.genesis.max_tx_bytes
        if size > limit:
            return f"invalid: {size} bytes exceeds max_tx_bytes ({limit})"
        if len(self._pending) >= self.max_txs or self._bytes + size > self.max_bytes:
            return f"full: {len(self._pending)} transactions, {self._bytes} bytes pending"
        if self._per_sender[tx.sender] >= self.max_per_sender:
            return f"full: the sender already has {self.max_per_sender} pending transactions"
        if (reason := state.check_tx_stateless(tx, verify_signature=False)) is not None:
            return f"invalid: {reason}"
        check = self._sync(state)  # the final state with every pending tx applied
        account = check.account(tx.sender)
        if account is None:
            return "stale: the sender has no account"
        nxt = account.nonce + 1
        if tx.nonce < nxt:
            return f"stale: nonce {tx.nonce} is not the sender's next nonce {nxt} (replayed or out of order)"
        if tx.nonce >= nxt + self.max_per_sender:
            return f"stale: nonce {tx.nonce} is more than {self.max_per_sender} ahead of the sender's next nonce {nxt}"
        reason = self._signature(tx, tx_hash)
        if reason is not None:
            return f"invalid: {reason}"
        reason = check.check_tx_state(tx)
        if reason is not None:
            return f"stale: {reason}"
        check.apply_tx(tx, stateless_checked=True)
        self._pending[tx_hash] = _Entry(tx, size, state.height + REGOSSIP_FIRST, 2 * REGOSSIP_FIRST)
        self._bytes += size
        self._per_sender[tx.sender] += 1
        return None

    def reap(self, max_txs: int, max_bytes: int) -> list[Tx]:
        """Up to ``max_txs`` transactions of at most ``max_bytes`` in total that apply in order.

        Arrival order, skipping what does not fit; once a sender's transaction is skipped, its
        later ones are too (their nonces would leave a gap), and anything that would not apply
        without a skipped transaction is left out by a simulation on a copy of the base.
        """
        if self._view is None or max_txs <= 0:
            return []
        sim = self._view[0].copy()
        out: list[Tx] = []
        used = 0
        blocked: set[str] = set()
        for entry in self._pending.values():
            if len(out) >= max_txs:
                break
            tx = entry.tx
            if tx.sender in blocked or used + entry.size > max_bytes or sim.check_tx(tx, verify_signature=False):
                blocked.add(tx.sender)
                continue
            sim.apply_tx(tx)
            out.append(tx)
            used += entry.size
        return out

    def due_for_gossip(self, height: int, max_txs: int, max_bytes: int) -> list[Tx]:
        """Pending transactions to gossip again at ``height``, oldest first, within the limits.

        A transaction is gossiped once when it arrives; a peer that was not connected then, or that
        refused it as early or over quota, never gets it, and a transaction held by a node that never
        proposes would wait forever (CometBFT sends a new peer its whole mempool for the same
        reason). Each pending transaction is therefore sent again after 2, 4, 8, ... up to 64 final
        blocks: peers that hold it ignore the copy at no cost to anyone, and the bytes per block
        stay bounded by the limits whatever the pool holds.
        """
        out: list[Tx] = []
        used = 0
        for entry in self._pending.values():
            if len(out) >= max_txs or used + entry.size > max_bytes:
                break
            if entry.due <= height:
                out.append(entry.tx)
                used += entry.size
                entry.due = height + entry.wait
                entry.wait = min(2 * entry.wait, REGOSSIP_LONGEST)
        return out

    def update(self, committed_txs: list[Tx], state: ChainState) -> None:
        """After a final block: drop its transactions, then everything ``state`` no longer accepts."""
        for tx in committed_txs:
            self._drop(tx.hash)
        self._sync(state, force=True)
