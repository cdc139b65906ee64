"""Read-only views of the chain for the HTTP API, as JSON-ready dicts.

Mixed into :class:`consensus.engine.Engine`, so the API layer stays a thin translation of
requests into these calls and never reaches into engine internals.
"""

from __future__ import annotations

from consensus.schedule import slot_at, slot_start_ms
from consensus.types import Block, Commit


class ChainQueries:
    """Requires the engine's ``state``, ``store``, ``mempool``, ``proposers``, ``votes``... attributes."""

    def status(self) -> dict:
        g = self.genesis
        latest = self.parent
        return {
            "node_id": self.me,
            "chain_id": g.chain_id,
            "genesis_hash": g.hash.hex(),
            "height": self.state.height,
            "final_height": self.state.height,
            "latest_block_hash": latest.hash.hex() if latest else g.hash.hex(),
            "latest_block_time_ms": latest.header.timestamp_ms if latest else g.genesis_time_ms,
            "epoch": self.state.epoch,
            "current_slot": slot_at(self.now_ms(), g.genesis_time_ms, g.slot_ms),
            "is_delegate": self.is_voter,
            "syncing": self.syncer.busy,
            "mempool_size": len(self.mempool),
            "app_hash": self.app.app_hash().hex(),
        }

    def block(self, height: int) -> Block | None:
        if height < 1 or height > self.state.height:
            return None
        return self.store.block(height)

    def latest_block(self) -> Block | None:
        return self.parent

    def blocks(self, from_height: int, limit: int) -> list[Block]:
        return self.store.blocks(max(1, from_height), limit)

    def commit(self, height: int) -> Commit | None:
        if height == self.state.height:
            return self.last_commit
        return self.store.commit(height)

    def delegates_view(self) -> dict:
        st = self.state
        epoch_len = self.genesis.epoch_length
        return {
            "height": st.height,
            "epoch": st.epoch,
            "next_election_height": (st.height // epoch_len + 1) * epoch_len,
            "quorum": self.votes.quorum,
            "active": len(self.voters),
            "delegates": st.delegates_json(),
        }

    def schedule_view(self, count: int) -> dict:
        g = self.genesis
        now_slot = slot_at(self.now_ms(), g.genesis_time_ms, g.slot_ms)
        return {
            "height": self.height,
            "slot_ms": g.slot_ms,
            "current_slot": now_slot,
            "slots": [{"slot": s, "proposer": p, "start_ms": slot_start_ms(s, g.genesis_time_ms, g.slot_ms)}
                      for s, p in self.proposers.upcoming(now_slot, count)],
        }

    def account_view(self, node_id: str) -> dict | None:
        acct = self.state.account(node_id)
        if acct is None:
            return None
        return self.state.account_json(node_id)

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
        return dict(self.metrics)
