"""The node's Prometheus metrics (``GET /metrics``), produced with the official client library.

Every node has a registry of its own (never the library's global one, so two nodes in one process,
as in the API tests, never mix their numbers). It holds three kinds of metrics:

* the state of the node's parts, read at scrape time by :class:`StateCollector` from what they
  already count (the engine's counters, gossip's snapshot, the FL service's counters, the API
  limiter's refusals, the loop-lag window): the way an exporter exposes another component;
* histograms of things this node sees happen, observed by :mod:`node.telemetry`: block interval,
  finality latency (slot start to final here), update-to-final latency and aggregation time;
* the client library's process, platform and garbage-collector collectors (resident memory, CPU
  seconds, open file descriptors, Python version).

Names follow the Prometheus conventions: a ``fedchain_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_ratio``), ``_total`` on counters, one label per dimension. The text
format is chosen by the scraper's ``Accept`` header (0.0.4 by default, OpenMetrics on request).
``docs/operations.md`` lists every metric.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

PREFIX = "fedchain_"

# Buckets in seconds. Slots are 2-3 s, so block intervals and finality sit around there; an update
# waits for training, gossip and the next slot; aggregation of a round takes milliseconds to seconds.
SLOT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0, 60.0)
UPDATE_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
AGGREGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# FL counters that have a unit or are not counters get a family of their own; the rest of the FL
# service's counters go to fedchain_fl_events_total{event=...}.
FL_COUNTERS = {
    "trainer:train_seconds_total": ("fl_train_seconds", "Seconds spent training local updates."),
    "trainer:update_bytes_sent": ("fl_update_sent_bytes", "Bytes of the updates this node sent (compressed)."),
    "trainer:dense_bytes_equivalent": ("fl_update_dense_equivalent_bytes",
                                       "Bytes the same updates would take as dense float32 vectors."),
}
FL_GAUGES = {
    "val_accuracy": ("fl_val_accuracy_ratio", "Global model accuracy on this node's validation split."),
    "val_loss": ("fl_val_loss", "Global model loss on this node's validation split."),
    "test_accuracy": ("fl_test_accuracy_ratio", "Global model accuracy on the common test set."),
    "test_loss": ("fl_test_loss", "Global model loss on the common test set."),
    "trainer:waiting_for_registration": ("fl_waiting_for_registration",
                                         "1 while this node's trainer waits to be a registered member."),
}


def _gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value, labels=labels or None)


def _counter(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value, labels=labels or None)


def _grouped(counters: dict[str, float]) -> dict[str, dict[str, float]]:
    """Counters named ``group:reason`` (or plain ``event``, group "") grouped for labels."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in sorted(counters.items()):
        group, _, reason = key.partition(":")
        if reason:
            groups.setdefault(group, {})[reason] = value
        else:
            groups.setdefault("", {})[group] = value
    return groups


class StateCollector:
    """The parts' own counters and snapshots as metric families, read when scraped.

    ``ctx`` is the API's context (:class:`node.api.ApiContext`): the engine's read side, gossip,
    the config, the FL service, the limiter and the telemetry (event-loop lag, peer round trips).
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        yield from self._chain()
        yield from self._delegates()
        yield from self._gossip()
        yield from self._engine_counters()
        yield from self._node()
        if self.ctx.fl is not None:
            yield from self._fl(self.ctx.fl)

    def _chain(self) -> Iterator[Metric]:
        ctx = self.ctx
        s = ctx.engine.status()
        info = _gauge("info", "Identity of this node (always 1).",
                      labels=("node_id", "chain_id", "moniker", "version", "app"))
        info.add_metric([s["node_id"], s["chain_id"], ctx.config.moniker, ctx.version,
                         ctx.genesis.app.get("kind", "counter")], 1)
        yield info
        yield _gauge("height", "Height of the newest block this node holds.", s["height"])
        yield _gauge("final_height", "Height of the newest final block.", s["final_height"])
        yield _gauge("latest_block_time_seconds", "Timestamp of the newest final block (Unix seconds).",
                     s["latest_block_time_ms"] / 1000)
        yield _gauge("epoch", "Current election epoch.", s["epoch"])
        yield _gauge("mempool_transactions", "Transactions waiting in the mempool.", s["mempool_size"])
        yield _gauge("is_delegate", "1 if this node is a delegate of the current height.", int(s["is_delegate"]))
        yield _gauge("syncing", "1 while catching up from peers.", int(s["syncing"]))

    def _delegates(self) -> Iterator[Metric]:
        d = self.ctx.engine.delegates_view()
        yield _gauge("delegates", "Delegates of the current epoch.", len(d["delegates"]))
        yield _gauge("quorum", "Precommits a block needs to be final.", d["quorum"])
        families = {
            "stake": _gauge("delegate_stake", "Stake of each delegate.", labels=("delegate",)),
            "trust": _gauge("delegate_trust_ratio", "Trust of each delegate: its share of all stake.",
                            labels=("delegate",)),
            "produced": _gauge("delegate_produced_blocks", "Blocks each delegate produced (chain state).",
                               labels=("delegate",)),
            "missed_total": _gauge("delegate_missed_slots", "Slots each delegate missed (chain state).",
                                   labels=("delegate",)),
            "jailed": _gauge("delegate_jailed", "1 while a delegate is jailed.", labels=("delegate",)),
        }
        for row in d["delegates"]:
            for key, family in families.items():
                family.add_metric([row["id"]], float(row[key]))
        yield from families.values()

    def _gossip(self) -> Iterator[Metric]:
        gm = self.ctx.gossip.metrics()
        yield _gauge("peers", "Connected gossip peers.", gm.peers_connected)
        yield _gauge("peers_banned", "Peers currently kept out for misbehaviour.", gm.peers_banned)
        rtt = _gauge("peer_rtt_seconds", "Round trip of GET /health to each connected peer (node/telemetry.py).",
                     labels=("peer",))
        for node_id, seconds in sorted(self.ctx.telemetry.peer_rtts().items()):
            rtt.add_metric([node_id], seconds)
        yield rtt
        msgs = _counter("gossip_messages", "Gossip envelopes by topic and direction.", labels=("direction", "topic"))
        nbytes = _counter("gossip_bytes", "Gossip envelope bytes by topic and direction.",
                          labels=("direction", "topic"))
        delivered = _counter("gossip_delivered", "Envelopes accepted by the topic validator.", labels=("topic",))
        for topic, c in sorted(gm.topics.items()):
            msgs.add_metric(["in", topic], c.msgs_in)
            msgs.add_metric(["out", topic], c.msgs_out)
            nbytes.add_metric(["in", topic], c.bytes_in)
            nbytes.add_metric(["out", topic], c.bytes_out)
            delivered.add_metric([topic], c.delivered)
        yield from (msgs, nbytes, delivered)
        control = _counter("gossip_control_bytes", "Handshake, peer-exchange and ping bytes.", labels=("direction",))
        control.add_metric(["in"], gm.control_bytes_in)
        control.add_metric(["out"], gm.control_bytes_out)
        yield control
        for name, doc, counts in (("gossip_dropped", "Gossip messages dropped, by reason.", gm.drops),
                                  ("gossip_handshake_failures", "Failed or refused peer handshakes, by reason.",
                                   gm.handshake_failures)):
            family = _counter(name, doc, labels=("reason",))
            for reason, count in sorted(counts.items()):
                family.add_metric([reason], count)
            yield family
        yield _counter("gossip_bans", "Peers banned since start.", gm.bans)

    def _engine_counters(self) -> Iterator[Metric]:
        groups = _grouped(self.ctx.engine.metrics_view())
        for group, name, doc in (("rejected", "consensus_rejected", "Consensus messages refused, by reason."),
                                 ("tx_rejected", "tx_rejected", "Transactions refused by the mempool, by reason.")):
            family = _counter(name, doc, labels=("reason",))
            for reason, count in groups.pop(group, {}).items():
                family.add_metric([reason], count)
            yield family
        events = _counter("consensus_events", "Other consensus counters (synced blocks, evidence...).",
                          labels=("event",))
        for group, counts in groups.items():
            for name, count in counts.items():
                events.add_metric([f"{group}:{name}" if group else name], count)
        yield events

    def _node(self) -> Iterator[Metric]:
        ctx = self.ctx
        lag = ctx.telemetry.loop_lag
        summary = Metric(PREFIX + "event_loop_lag_seconds",
                         "How late a 50 ms timer fires: quantiles over the recent window, sum and count since start.",
                         "summary")
        window = lag.summary()
        for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
            summary.add_sample(PREFIX + "event_loop_lag_seconds", {"quantile": q}, window[key] / 1000)
        summary.add_sample(PREFIX + "event_loop_lag_seconds_sum", {}, lag.total_ms / 1000)
        summary.add_sample(PREFIX + "event_loop_lag_seconds_count", {}, lag.count)
        yield summary
        refused = _counter("api_refused", "API requests answered 429, by the limit they hit.", labels=("reason",))
        cut = 0
        if ctx.limiter is not None:
            for reason, count in sorted(ctx.limiter.stats.refused.items()):
                refused.add_metric([reason], count)
            cut = ctx.limiter.stats.cut
        yield refused
        yield _counter("api_cut", "API answers not taken by their client in time (connection cut).", cut)
        yield _gauge("api_subscribers", "Open /subscribe WebSockets.", len(ctx.subscribers))
        if ctx.connections is not None:
            yield _gauge("api_connections", "Open TCP connections to the HTTP server (gossip sessions included).",
                         len(ctx.connections.conns))
            closed = _counter("api_connections_closed", "TCP connections the node refused or closed, by reason.",
                              labels=("reason",))
            for reason in ("refused", "evicted", "head_timeout"):
                closed.add_metric([reason], ctx.connections.stats[reason])
            yield closed

    def _fl(self, fl: Any) -> Iterator[Metric]:
        values = fl.metrics()
        yield _gauge("fl_model_height", "Height of the newest final global model.", fl.app.model_height)
        for key, (name, doc) in FL_GAUGES.items():
            if key in values:
                yield _gauge(name, doc, values.pop(key))
        if fl.trainer is not None:
            # under the off preset there is no epsilon to report: the families stay, with no sample
            yield _gauge("fl_privacy_epsilon", "Differential-privacy epsilon this node has spent (local-dp preset).",
                         values.pop("epsilon", None))
            yield _gauge("fl_privacy_epsilon_budget", "Epsilon this node's updates may spend (local-dp preset).",
                         fl.settings.privacy_preset.epsilon)
            yield _gauge("fl_privacy_exhausted", "1 once the privacy budget has stopped this node's updates.",
                         float(fl.trainer.exhausted))
        for key, (name, doc) in FL_COUNTERS.items():
            if key in values:
                yield _counter(name, doc, values.pop(key))
        rejected = _counter("fl_updates_rejected", "Gossiped updates refused at admission, by reason.",
                            labels=("reason",))
        events = _counter("fl_events", "Federated-learning counters (updates sent, accepted, rejected...).",
                          labels=("event",))
        for key, value in sorted(values.items()):
            _, _, name = key.partition(":")
            if name.startswith("update_rejected:"):
                rejected.add_metric([name.split(":", 1)[1]], value)
            else:
                events.add_metric([name or key], value)
        yield from (rejected, events)


class NodeMetrics:
    """One node's registry: the histograms observed as things happen (the FL ones on FL chains
    only), the process collectors, and (once the API context exists) the :class:`StateCollector`."""

    def __init__(self, fl: bool = False) -> None:
        # _created series would double every counter and histogram with a timestamp gauge that
        # nobody graphs (and that Prometheus ignores in the 0.0.4 text format).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self._process = ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, buckets=buckets, registry=self.registry)

        self.block_interval = histogram("block_interval_seconds",
                                        "Time between the timestamps of consecutive final blocks.", SLOT_BUCKETS)
        self.finality_latency = histogram("finality_latency_seconds",
                                          "From the start of a block's slot to this node holding it final.",
                                          SLOT_BUCKETS)
        self.update_to_final: Histogram | None = None
        self.aggregation: Histogram | None = None
        if fl:
            self.update_to_final = histogram("fl_update_to_final_seconds",
                                             "From an update's creation (its sender's clock) to the final block "
                                             "that decided it, as seen here.", UPDATE_BUCKETS)
            self.aggregation = histogram("fl_aggregation_seconds",
                                         "Time to run one aggregation round (proposing or verifying).",
                                         AGGREGATION_BUCKETS)

    def collect_state(self, ctx: Any) -> None:
        """Add the state of the node's parts, read through the API context at every scrape."""
        self.registry.register(StateCollector(ctx))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics page and its content type, in the format the scraper's ``Accept`` asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def process(self) -> dict[str, float]:
        """The process collector's values (resident memory, CPU seconds, open fds...) by sample name."""
        return {s.name: s.value for family in self._process.collect() for s in family.samples}
