"""Prometheus text exposition format (version 0.0.4), written by hand.

The format is small and stable, and the node only exports a few gauges and counters, so a
dependency on a client library would buy nothing. What matters is getting the details right:
valid metric and label names, escaped label values, one HELP/TYPE pair per family, and samples of
one family kept together (Prometheus rejects a family split across the page).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("gauge", "counter", "untyped")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Family:
    """One metric family: a name, a type, a help line and its labelled samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"invalid metric type {self.kind!r}")

    def add(self, value: float, **labels: str) -> "Family":
        for key in labels:
            if not _LABEL.match(key) or key.startswith("__"):
                raise ValueError(f"invalid label name {key!r}")
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            if labels:
                body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{self.name}{{{body}}} {_format_value(value)}")
            else:
                lines.append(f"{self.name} {_format_value(value)}")
        return "\n".join(lines)


class Registry:
    """An ordered set of families, rendered as one exposition page."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._families: dict[str, Family] = {}

    def family(self, name: str, kind: str, help: str) -> Family:
        """The family ``prefix + name``, created on first use; its type must not change."""
        full = self.prefix + name
        fam = self._families.get(full)
        if fam is None:
            fam = self._families[full] = Family(full, kind, help)
        elif fam.kind != kind:
            raise ValueError(f"metric {full} registered as {fam.kind}, not {kind}")
        return fam

    def gauge(self, name: str, help: str, value: float | None = None, **labels: str) -> Family:
        fam = self.family(name, "gauge", help)
        return fam if value is None else fam.add(value, **labels)

    def counter(self, name: str, help: str, value: float | None = None, **labels: str) -> Family:
        fam = self.family(name, "counter", help)
        return fam if value is None else fam.add(value, **labels)

    def render(self) -> str:
        return "".join(fam.render() + "\n" for fam in self._families.values())


def _split_counters(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """Engine counters are named ``group:reason`` or plain ``event``; group them for labels."""
    groups: dict[str, dict[str, int]] = {}
    for key, value in sorted(counters.items()):
        group, _, reason = key.partition(":")
        if reason:
            groups.setdefault(group, {})[reason] = value
        else:
            groups.setdefault("", {})[group] = value
    return groups


def node_metrics(engine: Any, gossip: Any, fl: Any = None, loop_lag: Any = None) -> Registry:
    """The node's metrics page: chain heights, peers, mempool, gossip traffic and every drop reason,
    plus federated learning (accuracy, updates, bytes, epsilon) and event-loop lag when given."""
    reg = Registry("fedchain_")
    status = engine.status()
    reg.gauge("height", "Height of the newest block this node holds.", status["height"])
    reg.gauge("final_height", "Height of the newest final block.", status["final_height"])
    reg.gauge("mempool_size", "Transactions waiting in the mempool.", status["mempool_size"])
    reg.gauge("is_delegate", "1 if this node is a delegate of the current height.", int(status["is_delegate"]))
    reg.gauge("syncing", "1 while catching up from peers.", int(status["syncing"]))
    gm = gossip.metrics()
    reg.gauge("peers", "Connected gossip peers.", gm.peers_connected)
    reg.gauge("peers_banned", "Peers currently kept out for misbehaviour.", gm.peers_banned)
    msgs = reg.counter("gossip_messages_total", "Gossip envelopes by topic and direction.")
    nbytes = reg.counter("gossip_bytes_total", "Gossip envelope bytes by topic and direction.")
    delivered = reg.counter("gossip_delivered_total", "Envelopes accepted by the topic validator.")
    for topic, c in sorted(gm.topics.items()):
        msgs.add(c.msgs_in, topic=topic, direction="in").add(c.msgs_out, topic=topic, direction="out")
        nbytes.add(c.bytes_in, topic=topic, direction="in").add(c.bytes_out, topic=topic, direction="out")
        delivered.add(c.delivered, topic=topic)
    reg.counter("gossip_control_bytes_total", "Handshake, peer-exchange and ping bytes.", gm.control_bytes_in,
                direction="in").add(gm.control_bytes_out, direction="out")
    dropped = reg.counter("gossip_dropped_total", "Gossip messages dropped, by reason.")
    for reason, count in sorted(gm.drops.items()):
        dropped.add(count, reason=reason)
    groups = _split_counters(engine.metrics_view())
    rejected = reg.counter("consensus_rejected_total", "Consensus messages refused, by reason.")
    for reason, count in groups.pop("rejected", {}).items():
        rejected.add(count, reason=reason)
    tx_rejected = reg.counter("tx_rejected_total", "Transactions refused by the mempool, by reason.")
    for reason, count in groups.pop("tx_rejected", {}).items():
        tx_rejected.add(count, reason=reason)
    events = reg.counter("consensus_events_total", "Other consensus counters (synced blocks, evidence...).")
    for group, counts in groups.items():
        for name, count in counts.items():
            events.add(count, event=f"{group}:{name}" if group else name)
    if loop_lag is not None:
        lag = reg.gauge("event_loop_lag_ms", "How late a 50 ms timer fires, over the recent window.")
        for q, value in loop_lag.summary().items():
            lag.add(value, quantile=q.removesuffix("_ms"))
    if fl is not None:
        _fl_metrics(reg, fl)
    return reg


def _fl_metrics(reg: Registry, fl: Any) -> None:
    values = fl.metrics()
    for key, help_text in (("val_accuracy", "Global model accuracy on this node's validation split."),
                           ("val_loss", "Global model loss on this node's validation split."),
                           ("test_accuracy", "Global model accuracy on the common test set."),
                           ("epsilon", "Differential privacy epsilon spent by this node.")):
        if key in values:
            reg.gauge(f"fl_{key}", help_text, values.pop(key))
    reg.gauge("fl_model_height", "Height of the newest final global model.", fl.app.model_height)
    rejected = reg.counter("fl_updates_rejected_total", "Gossiped updates refused at admission, by reason.")
    events = reg.counter("fl_events_total", "Federated-learning counters (updates sent, accepted, bytes...).")
    for key, value in sorted(values.items()):
        group, _, name = key.partition(":")
        if name.startswith("update_rejected:"):
            rejected.add(value, reason=name.split(":", 1)[1])
        else:
            events.add(value, event=name)
