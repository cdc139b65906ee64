"""The chain benchmark's transaction-admission measurement runs the node's real admission path
(decode, signature, state checks, the mempool with its default per-sender bound)."""

from __future__ import annotations

import pytest

from bench.chain import measure_tx_validation
from consensus.mempool import Mempool


def test_tx_validation_admits_more_transactions_than_one_sender_may_hold() -> None:
    count = 3 * Mempool().max_per_sender + 5  # four senders, the last with five transactions
    result = measure_tx_validation(count)
    assert result["txs"] == count
    assert result["raw_verify_per_s"] > 0 and result["node_admission_per_s"] > 0
    assert result["ratio_to_raw"] == pytest.approx(result["node_admission_per_s"] / result["raw_verify_per_s"])
