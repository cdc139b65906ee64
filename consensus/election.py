"""Stake-weighted approval voting (DESIGN section 3) and the BFT quorum size.

Each account approves a set of candidates with its whole bonded stake (approval voting, as in
EOS/BitShares DPoS: the stake is not split between the approved candidates). An account that has
cast no votes approves itself, so a fresh chain elects its biggest stakers without any vote
transaction; an explicit vote list replaces that implicit self-approval (an account that wants to
keep backing itself lists itself). Pure functions over the accounts: the result depends only on
the state, never on dict order, so every node elects the same set.

Jailing takes a delegate's slots but must not shrink the set of voters below ``min_delegates``:
:func:`voter_set` and :func:`proposer_set` say who of the elected votes and who proposes at a
height.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from consensus.account import Account


def quorum(n: int) -> int:
    """Signatures needed among ``n`` delegates: ``floor(2n/3) + 1`` (more than two thirds)."""
    return 2 * n // 3 + 1


def candidates(accounts: Mapping[str, Account], height: int, min_candidate_stake: int) -> set[str]:
    """Accounts that may be elected at ``height``: enough stake and not jailed."""
    return {nid for nid, acc in accounts.items()
            if acc.stake >= min_candidate_stake and not acc.is_jailed(height)}


def approvals(accounts: Mapping[str, Account], height: int, min_candidate_stake: int) -> dict[str, int]:
    """Approval of every candidate: the total stake of the accounts approving it."""
    eligible = candidates(accounts, height, min_candidate_stake)
    result = dict.fromkeys(eligible, 0)
    for nid, acc in accounts.items():
        if acc.stake == 0:
            continue
        for cand in acc.votes or (nid,):
            if cand in result:
                result[cand] += acc.stake
    return result


def elect(accounts: Mapping[str, Account], height: int, max_delegates: int,
          min_candidate_stake: int) -> list[str]:
    """The top ``min(max_delegates, #candidates)`` by (-score, id), returned sorted by id.

    Ties are broken by the smaller id. The caller decides what to do when the result is smaller
    than ``min_delegates`` (``ChainState`` keeps the current set).
    """
    ranked = sorted(approvals(accounts, height, min_candidate_stake).items(), key=lambda kv: (-kv[1], kv[0]))
    return sorted(nid for nid, _ in ranked[:max_delegates])


def voter_set(delegates: list[str], accounts: Mapping[str, Account], height: int, min_delegates: int,
              standby_approvals: Callable[[], dict[str, int]]) -> list[str]:
    """Who votes at ``height``, sorted: the elected delegates that are not jailed, never fewer
    than ``min_delegates`` (or all delegates, if fewer were elected).

    Jailing must not shrink the voter set until one key finalizes alone, so when too few
    delegates are free, standby candidates step in in election order (``standby_approvals``,
    asked only then), and if the candidates run out the jailed delegates keep their vote (they
    lose their slots, see :func:`proposer_set`). The set is never empty.
    """
    free = [d for d in delegates if not accounts[d].is_jailed(height)]
    floor = min(min_delegates, len(delegates))
    if len(free) >= floor:
        return free
    chosen = set(free)
    ranked = sorted(standby_approvals().items(), key=lambda kv: (-kv[1], kv[0]))
    for nid, _ in ranked:
        if len(chosen) >= floor:
            break
        chosen.add(nid)
    for nid in sorted(delegates, key=lambda d: (accounts[d].jailed_until, d)):
        if len(chosen) >= floor:
            break
        chosen.add(nid)
    return sorted(chosen)


def proposer_set(voters: list[str], accounts: Mapping[str, Account], height: int) -> list[str]:
    """Who takes slots at ``height``: the voters that are not jailed (all voters if every one of
    them is, so that the chain always has a proposer)."""
    free = [v for v in voters if not accounts[v].is_jailed(height)]
    return free or voters
