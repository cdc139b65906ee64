"""JSON views of the chain state for the HTTP API (``/accounts``, ``/delegates``).

They read the state through its public queries only; what a view shows (trust, flags, jailing as
of the next block) is presentation, kept out of the state machine that consensus hashes.
"""

from __future__ import annotations

from consensus.state import ChainState


def account_json(state: ChainState, node_id: str) -> dict | None:
    """The account with its trust, membership and delegate flags; jailed as of the next block."""
    acc = state.account(node_id)
    if acc is None:
        return None
    view = acc.to_json(node_id, state.height + 1)
    view.update(trust=state.trust(node_id), member=state.is_member(node_id),
                delegate=node_id in state.delegates)
    return view


def delegates_json(state: ChainState) -> list[dict]:
    """Each delegate with stake, trust, approval score and its production record."""
    approval = state.candidate_approvals()
    return [{"id": d, "name": a.name, "stake": a.stake, "trust": state.trust(d), "approval": approval.get(d, 0),
             "jailed": a.is_jailed(state.height + 1), "produced": a.produced, "missed_total": a.missed_total,
             "missed_in_row": a.missed_in_row}
            for d in state.delegates for a in (state.account(d),)]
