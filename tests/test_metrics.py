"""``/metrics`` of a real node, read the way Prometheus reads it: parsed by the client library's
own parsers (text format 0.0.4 and OpenMetrics), and checked against the naming conventions."""

from __future__ import annotations

import re

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.apinode import Node

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


async def scrape(node: Node, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with node.session.get(node.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.text()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family, **labels) -> float:
    for s in family.samples:
        if s.labels == labels and not s.name.endswith(("_bucket", "_created")):
            return s.value
    raise KeyError(f"{family.name}{labels}")


async def test_exposition_parses_with_the_prometheus_client_parser(node: Node):
    await node.wait_height(8)
    content_type, text = await scrape(node)
    assert content_type.startswith("text/plain; version=0.0.4")
    fams = families(text)
    me = node.home.keypair.node_id
    assert value(fams["fedchain_final_height"]) >= 8
    assert value(fams["fedchain_info"], node_id=me, chain_id="api-test", moniker="node0", version="0.1.0",
                 app="counter") == 1
    assert fams["fedchain_mempool_transactions"].type == "gauge"
    assert value(fams["fedchain_delegate_stake"], delegate=me) > 0
    assert value(fams["fedchain_delegate_trust_ratio"], delegate=me) == pytest.approx(1.0)
    assert value(fams["fedchain_delegate_produced_blocks"], delegate=me) >= 8
    assert value(fams["fedchain_quorum"]) == 1
    assert fams["fedchain_gossip_dropped"].type == "counter"
    assert value(fams["fedchain_gossip_dropped"], reason="bad_signature") == 0
    # histograms of what the node saw: one observation per block it finalized live
    for name in ("fedchain_block_interval_seconds", "fedchain_finality_latency_seconds"):
        fam = fams[name]
        assert fam.type == "histogram"
        count = next(s.value for s in fam.samples if s.name == name + "_count")
        inf = next(s.value for s in fam.samples if s.name == name + "_bucket" and s.labels["le"] == "+Inf")
        assert count >= 5 and inf == count
    # the event-loop lag is a summary: window quantiles in seconds, and a count since start
    lag = fams["fedchain_event_loop_lag_seconds"]
    assert lag.type == "summary"
    assert {s.labels.get("quantile") for s in lag.samples} >= {"0.5", "0.99", "1"}
    assert next(s.value for s in lag.samples if s.name.endswith("_count")) > 0
    # the client library's process collector: resident memory and CPU of this process
    assert value(fams["process_resident_memory_bytes"]) > 10 * 2**20
    assert fams["process_cpu_seconds"].type == "counter"
    # a counter chain exports no federated-learning metrics
    assert not [name for name in fams if name.startswith("fedchain_fl_")]


async def test_names_follow_the_prometheus_conventions(node: Node):
    _, text = await scrape(node)
    for fam in families(text).values():
        assert NAME.match(fam.name), fam.name
        assert not re.search(r"_(ms|millis|milliseconds|kb|mb|percent)(_|$)", fam.name), f"{fam.name}: base units"
        if fam.type == "counter":
            assert all(s.name == fam.name + "_total" for s in fam.samples), fam.name
        else:
            assert not fam.name.endswith("_total"), f"{fam.name} is a {fam.type}"
        if fam.name.startswith("fedchain_"):
            assert fam.documentation, f"{fam.name} has no help text"


async def test_openmetrics_on_request(node: Node):
    content_type, text = await scrape(node, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in openmetrics_families(text)}
    assert fams["fedchain_final_height"].samples[0].value >= 1
    assert fams["fedchain_block_interval_seconds"].type == "histogram"
