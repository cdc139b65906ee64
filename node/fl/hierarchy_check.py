"""Verifying a hierarchical round (:mod:`learning.hierarchy`) with bounded work per delegate.

A verifier does not re-run every cluster. It checks, for all of them, what is cheap: that the
clusters are the assignment of this height, that the weights are the updates' own, that a
partial's weight is the weight of the members its cluster accepted, that no member of a partial
set aside is accepted, and that the clusters' evaluations add up. It re-runs the ``verify``
clusters :func:`learning.hierarchy.verifier_clusters` assigns it (the delegates, ranked by a hash
of the height and their ids, deal themselves the clusters in turn; nobody picks its own) and compares decisions, scores,
weight and the partial's hash; every other partial it takes by hash (from its blob store or a
peer, checked against the hash; a partial it cannot obtain it re-runs). Then it re-runs the
combination and compares the model hash.

So a proposer that lies about one cluster's partial is caught by the delegates assigned that
cluster (a fault: the partial's hash is provably wrong); the others accept it. Every cluster is
watched when the delegates times ``verify`` reach the number of clusters, but a block needs only
2/3 of the votes, so the watchers refuse a lie alone only when they hold more than a third of
them (``docs/decisions.md``).
Differences a CPU could cause (decisions, scores, evaluations) are "not agreed", as in a flat
round (:mod:`node.fl.verify`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

import numpy as np

from consensus.app import BlockContext
from gossip.crypto import sha256
from learning.aggregation import WitnessRows, aggregate
from learning.aggregation.exact import total
from learning.hierarchy import Hierarchy, assign, combine, global_cap, run_cluster, verifier_clusters
from learning.round import round_weights
from learning.standing import round_factors
from node.fl.blobs import BlobError, model_bytes, model_hash, parse_model
from node.fl.round import Payload, PartialRecord, RoundResult, scores_agree
from node.fl.update import ModelUpdate
from node.fl.verify import BadPayload, Disagreement, EvalReplay, PayloadChecks


def set_aside_reason(cluster: int) -> str:
    return f"hierarchy: cluster {cluster}'s partial set aside"


@dataclass(frozen=True)
class _Round:
    """What every cluster check needs: the round's capped weights, trust and rule parameters."""

    capped: np.ndarray
    effective: np.ndarray
    trust: np.ndarray
    params: dict


class HierarchyChecks(PayloadChecks):
    """Mixin of :class:`node.fl.app.FLApp`: a hierarchical payload is checked cluster by cluster."""

    async def rerun(self, ctx: BlockContext, p: Payload, updates: list[ModelUpdate]) -> RoundResult:
        hierarchy = self.settings.hierarchy_rule
        if hierarchy is None or not hierarchy.applies(len(updates)) or p.skipped:
            return await super().rerun(ctx, p, updates)
        return await self._check_clusters(ctx, p, updates, hierarchy)

    async def _check_clusters(self, ctx: BlockContext, p: Payload, updates: list[ModelUpdate],
                              hierarchy: Hierarchy) -> RoundResult:
        s = self.settings
        labels = assign(ctx.height, [u.sender for u in updates], hierarchy.cluster_size)
        k = int(labels.max()) + 1
        if [(r.cluster, r.members) for r in p.partials] != [(c, tuple(np.flatnonzero(labels == c).tolist()))
                                                             for c in range(k)]:
            raise BadPayload(f"the payload's clusters are not the assignment of height {ctx.height}")
        weights = round_weights([u.num_samples for u in updates], [self.model_height - u.base_height for u in updates],
                                s.staleness_a, round_factors(s, self.window.standing, [u.sender for u in updates]))
        if weights.tolist() != [c.weight for c in p.considered]:
            raise Disagreement("round not agreed: re-running the aggregation reaches other decisions")
        trust_of = self.trust_of(ctx.state, updates)
        trust = np.array([trust_of[u.sender] for u in updates], dtype=np.float64)
        live = (weights * trust if s.rule == "trust" else weights) > 0
        capped, params = global_cap(weights, live, s.rule_params)
        rnd = _Round(capped, capped * trust if s.rule == "trust" else capped, trust, params)
        offsets = np.cumsum([0] + [r.evaluations for r in p.partials]).tolist()
        if offsets[-1] > len(p.evals):
            raise BadPayload("the clusters claim more evaluations than the payload records")
        for r in p.partials:
            self._check_record(p, r, rnd)
        mine = set(verifier_clusters(ctx.height, self.node_id, k, hierarchy.verify, ctx.state.delegates))
        vectors: dict[int, np.ndarray] = {}
        for r in p.partials:
            if r.cluster not in mine and r.hash:
                vector = await self._vector(r.hash)
                if vector is None:
                    mine.add(r.cluster)          # not obtainable: re-run it instead
                else:
                    vectors[r.cluster] = vector
        self.metrics["clusters_rerun"] += len(mine)
        self.metrics["partials_fetched"] += len(vectors)
        reference = await self.round_reference()
        held = np.array([u.sender in self.window.held for u in updates], dtype=bool)
        witness = await self.round_witness(updates, ctx.producer)
        model = await asyncio.to_thread(self._rerun_clusters, ctx, p, updates, rnd, sorted(mine), vectors, offsets,
                                        hierarchy, reference, held, witness)
        if model is not self.model:
            await self.blobs.put_durable("model", model_bytes(model), ctx.height)
        return RoundResult(p, model)

    @staticmethod
    def _check_record(p: Payload, r: PartialRecord, rnd: _Round) -> None:
        """What a cluster's record must say whoever re-runs it: its weight is that of the members
        its cluster accepted, and no member of a partial set aside is accepted."""
        rows = [p.considered[i] for i in r.members]
        took = np.array([c.accepted or c.reason == set_aside_reason(r.cluster) for c in rows], dtype=bool)
        if not r.kept and any(c.accepted for c in rows):
            raise BadPayload(f"the payload accepts a member of cluster {r.cluster}, whose partial was set aside")
        if r.kept and any(c.reason == set_aside_reason(r.cluster) for c in rows):
            raise BadPayload(f"the payload sets aside members of cluster {r.cluster}, whose partial was used")
        if r.weight != total(rnd.effective[np.array(r.members, dtype=np.int64)][took]):
            raise BadPayload(f"the weight of cluster {r.cluster} is not the weight of the members it accepted")

    async def _vector(self, digest: bytes) -> np.ndarray | None:
        """A model-sized vector (a partial aggregate, a past model) by its hash, from this node's
        blobs or a peer; None if unobtainable."""
        vector = self._local_vector(digest)
        if vector is not None or self.fetch_model is None:
            return vector
        return self._parsed(await self.fetch_model(digest), digest)

    def _local_vector(self, digest: bytes) -> np.ndarray | None:
        """A model-sized vector by its hash from this node's blobs; None if it is not there."""
        return self._parsed(self.blobs.get(digest, "model"), digest)

    def _parsed(self, raw: bytes | None, digest: bytes) -> np.ndarray | None:
        """``raw`` as a model-sized vector if it is the blob ``digest`` names, else None."""
        if raw is None or sha256(raw) != digest:
            return None
        try:
            vector = parse_model(raw, self.max_message)
        except BlobError:
            return None
        return vector if vector.size == self.dim else None

    def _rerun_clusters(self, ctx: BlockContext, p: Payload, updates: list[ModelUpdate], rnd: _Round,
                        clusters: list[int], vectors: dict[int, np.ndarray], offsets: list[int],
                        hierarchy: Hierarchy, reference: np.ndarray | None, held: np.ndarray,
                        witness: WitnessRows | None) -> np.ndarray:
        """Re-run ``clusters`` and compare them; then the combination; the new model (worker thread)."""
        s, model = self.settings, self.model
        rule_fn = partial(aggregate, groups=self.groups, reference=reference)  # as the proposer's round ran it
        lr = np.float32(s.server_lr)
        evaluator = self.model_evaluator()
        set_size = len(self.data.public_eval)
        for c in clusters:
            r = p.partials[c]
            members = np.array(r.members, dtype=np.int64)
            replay = EvalReplay(evaluator, p.evals[offsets[c]:offsets[c + 1]], set_size)
            x = np.stack([updates[i].dense() for i in r.members])
            part = run_cluster(rule_fn, s.rule, rnd.params, c, np.arange(members.size), x, rnd.capped[members],
                               rnd.trust[members], ctx.height, lambda delta: replay(model + lr * delta), held[members],
                               None if witness is None else witness.subset(members))
            replay.check()
            rows = [p.considered[i] for i in r.members]
            reasons = [set_aside_reason(c) if ok and not r.kept else why for ok, why in zip(part.accepted, part.reasons)]
            if part.accepted.tolist() != [c_.accepted or c_.reason == set_aside_reason(c) for c_ in rows] \
                    or reasons != [c_.reason for c_ in rows] or part.evaluations != r.evaluations:
                raise Disagreement(f"round not agreed: re-running cluster {c} reaches other decisions")
            if (b"" if part.vector is None else model_hash(part.vector)) != r.hash:
                raise BadPayload(f"the partial aggregate of cluster {c} is wrong")
            if not all(scores_agree(a, b.score) for a, b in zip(part.scores.tolist(), rows)):
                raise Disagreement("round not agreed: suspicion scores differ beyond the tolerance")
            if part.vector is not None:
                vectors[c] = part.vector
        used = [r for r in p.partials if r.hash and r.weight > 0]
        tail = EvalReplay(evaluator, p.evals[offsets[-1]:], set_size)
        try:
            vector, kept = combine(rule_fn, hierarchy.combine, s.rule, rnd.params,
                                   np.stack([vectors[r.cluster] for r in used]), np.array([r.weight for r in used]),
                                   ctx.height, lambda delta: tail(model + lr * delta))
        except ValueError as exc:
            raise Disagreement(f"round not agreed: the combination fails here ({exc})") from exc
        tail.check()
        if kept.tolist() != [r.kept for r in used]:
            raise Disagreement("round not agreed: re-running the combination sets aside other partials")
        with np.errstate(over="ignore", invalid="ignore"):
            new_model = (model + lr * vector).astype(np.float32)
        if not np.isfinite(new_model).all() or model_hash(new_model) != p.new_hash:
            raise BadPayload("re-running the aggregation gives a different model hash")
        return new_model
