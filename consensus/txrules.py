"""Shape rules of transactions: what a transaction must look like whatever the chain state.

They need no state, so the mempool runs them (and verifies the signature, last, since it is the
expensive part) once per transaction, and a block's validation runs them again on a copy of the
state only for transactions it has not seen.
"""

from __future__ import annotations

from typing import Any

from consensus.account import is_amount
from consensus.tx import TX_KINDS, Tx
from gossip.crypto import is_node_id


def _positive(v: Any) -> bool:
    return is_amount(v) and v > 0


def _args_problem(kind: str, args: list, max_votes: int) -> str | None:
    """Why ``args`` has the wrong shape for ``kind``, or None."""
    if kind == "transfer":
        if len(args) != 2:
            return "transfer args must be [to, amount]"
        if not is_node_id(args[0]):
            return "transfer recipient must be a node id"
        return None if _positive(args[1]) else f"transfer amount must be a positive integer (got {args[1]!r})"
    if kind in ("stake", "unstake"):
        if len(args) != 1:
            return f"{kind} args must be [amount]"
        return None if _positive(args[0]) else f"{kind} amount must be a positive integer (got {args[0]!r})"
    if kind == "vote":
        if len(args) != 1 or not isinstance(args[0], list):
            return "vote args must be [[candidate, ...]]"
        cands = args[0]
        if len(cands) > max_votes:
            return f"vote names {len(cands)} candidates, more than max_votes ({max_votes})"
        if not all(is_node_id(c) for c in cands):
            return "every vote candidate must be a node id"
        return None if len(set(cands)) == len(cands) else "vote candidates must be distinct"
    if not 1 <= len(args) <= 2 or not is_node_id(args[0]):
        return "register args must be [member_id] or [member_id, declared_samples] with a node id"
    if len(args) == 2 and not _positive(args[1]):
        return f"register declared_samples must be a positive integer (got {args[1]!r})"
    return None


def tx_shape_problem(tx: Any, chain_id: str, max_tx_bytes: int, max_votes: int,
                     verify_signature: bool = True) -> str | None:
    """Why ``tx`` is unacceptable on ``chain_id`` whatever the state, or None.

    Checks field types (a ``Tx`` built in code rather than decoded may hold anything), the chain
    id, the encoded size, the arguments of its kind and, if asked, the signature (last: it is
    the expensive part).
    """
    if not isinstance(tx, Tx):
        return "not a transaction"
    if tx.chain_id != chain_id:
        return f"wrong chain id {tx.chain_id!r} (this chain is {chain_id!r})"
    if tx.kind not in TX_KINDS:
        return f"unknown transaction kind {tx.kind!r}"
    if not is_node_id(tx.sender):
        return "sender must be a node id"
    if not _positive(tx.nonce):
        return f"nonce must be a positive integer (got {tx.nonce!r})"
    if not isinstance(tx.args, list) or not isinstance(tx.signature, bytes):
        return "args must be a list and the signature bytes"
    try:
        size = len(tx.encoded)
    except ValueError as exc:
        return f"transaction cannot be encoded: {exc}"
    if size > max_tx_bytes:
        return f"transaction of {size} bytes exceeds max_tx_bytes ({max_tx_bytes})"
    if (problem := _args_problem(tx.kind, tx.args, max_votes)) is not None:
        return problem
    if verify_signature and not tx.verify_signature():
        return "bad signature"
    return None
