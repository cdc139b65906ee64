"""Read-only views of the chain for the HTTP API, as JSON-ready dicts.

The API layer stays a thin translation of requests into these calls and never reaches into the
engine's parts; reads go to the store's read connection and never wait for its writer.
"""

from __future__ import annotations

from typing import Any

from consensus.block import Block
from consensus.messages import Commit
from consensus.schedule import slot_start_ms
from consensus.statejson import account_json, delegates_json


class ChainView:
    """What the node's API may use of a running engine: reads, a transaction in, events out."""

    def __init__(self, engine: Any) -> None:
        self._e = engine
        self.genesis = engine.genesis
        self.store = engine.store
        self.mempool = engine.mempool

    @property
    def state(self) -> Any:
        return self._e.executor.state

    def status(self) -> dict:
        g, e = self.genesis, self._e
        latest = e.executor.parent
        genesis_hash = self.state.genesis_hash.hex()
        return {
            "node_id": e.me,
            "chain_id": g.chain_id,
            "genesis_hash": genesis_hash,
            "height": self.state.height,
            "final_height": self.state.height,
            "latest_block_hash": latest.hash.hex() if latest else genesis_hash,
            "latest_block_time_ms": latest.header.timestamp_ms if latest else g.genesis_time_ms,
            "epoch": self.state.epoch,
            "current_slot": e.current_slot(),
            "round": e.machine.round,
            "is_delegate": e.is_voter,
            "syncing": e.syncer.active,
            "needs_checkpoint": e.syncer.stale_trust,
            "mempool_size": len(self.mempool),
            "app_hash": e.executor.app.app_hash().hex(),
            "clock": e.clock_check.summary(),
        }

    def block(self, height: int) -> Block | None:
        if height < 1 or height > self.state.height:
            return None
        return self.store.block(height)

    def latest_block(self) -> Block | None:
        return self._e.executor.parent

    def blocks(self, from_height: int, limit: int) -> list[Block]:
        return self.store.blocks(max(1, from_height), limit)

    def commit(self, height: int) -> Commit | None:
        if height == self.state.height:
            return self._e.executor.last_commit
        return self.store.commit(height)

    def delegates_view(self) -> dict:
        st, ex = self.state, self._e.executor
        epoch_len = self.genesis.epoch_length
        return {
            "height": st.height,
            "epoch": st.epoch,
            "next_election_height": (st.height // epoch_len + 1) * epoch_len,
            "quorum": ex.quorum,
            "active": len(ex.voters),
            "voters": ex.voters,
            "proposers": ex.schedule.active,
            "delegates": delegates_json(st),
        }

    def schedule_view(self, count: int) -> dict:
        g, ex = self.genesis, self._e.executor
        now_slot = self._e.current_slot()
        first = max(now_slot, ex.parent_slot + 1)
        return {
            "height": ex.height,
            "slot_ms": g.slot_ms,
            "current_slot": now_slot,
            "slots": [{"slot": s, "proposer": p, "start_ms": slot_start_ms(s, g.genesis_time_ms, g.slot_ms)}
                      for s, p in ex.schedule.upcoming(first, count)],
        }

    def account_view(self, node_id: str) -> dict | None:
        acct = self.state.account(node_id)
        if acct is None:
            return None
        return account_json(self.state, node_id)

    def tx_view(self, hash_hex: str) -> dict | None:
        found = self.store.tx(bytes.fromhex(hash_hex))
        if found is not None:
            height, index, tx = found
            return {"status": "committed", "height": height, "index": index, "tx": tx.to_json()}
        pending = self.mempool.get(bytes.fromhex(hash_hex))
        if pending is not None:
            return {"status": "pending", "tx": pending.to_json()}
        return None

    def mempool_view(self) -> dict:
        return {"size": len(self.mempool), "txs": self.mempool.list()}

    def metrics_view(self) -> dict[str, int]:
        return dict(self._e.metrics)

    # the two ways in: a transaction to gossip, and a stream of the engine's events
    async def submit_tx(self, tx: Any) -> str:
        return await self._e.submit_tx(tx)

    def subscribe(self) -> Any:
        return self._e.events.subscribe()

    def unsubscribe(self, queue: Any) -> None:
        self._e.events.unsubscribe(queue)
