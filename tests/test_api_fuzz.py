"""Every route of the API fuzzed from its OpenAPI document against a real federated-learning node.

Schemathesis generates each operation's parameters and bodies, valid and invalid, from the
document that the route table generates; the node must never answer 500, every error must be
the JSON error shape, and every status must be one the document lists for that operation. The
node runs as its own process (``fedchain node start``) with limits wide enough not to throttle
the fuzzer, which is not what is under test here (``tests/hostile/test_http_limits.py`` is).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from node.api import openapi_document
from tests.hostile.webattack import configure_api
from tests.integration import harness
from tests.integration.harness import get_json

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())
schemathesis.serializer.alias("application/msgpack", "application/octet-stream")  # POST /txs bodies: raw bytes


@pytest.fixture(scope="module")
def fl_node(tmp_path_factory) -> str:
    """A one-node FL chain that has made a global model and considered some updates."""
    net = harness.Testnet(tmp_path_factory.mktemp("fuzz"), 1, slot_ms=1000, app="fl")
    configure_api(net, requests_per_s=100_000, request_burst=100_000, answer_bytes_per_s=1 << 30,
                  txs_per_s=100_000, tx_burst=100_000)
    net.start_all()
    try:
        net.wait_height(2, timeout=90)
        yield net.url(0)
    finally:
        net.stop_all()


def assert_error_shape(response: Any) -> None:
    """The JSON error shape, on a ``requests`` or a schemathesis response (lower-case header lists)."""
    content_type = response.headers.get("Content-Type") or response.headers.get("content-type")
    assert "application/json" in str(content_type), response.headers
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == response.status_code, body
    assert "Traceback" not in body["error"]["message"]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_fails_on_any_parameter(case, fl_node):
    response = case.call(base_url=fl_node, timeout=30)
    assert response.status_code != 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
    if response.status_code >= 400:
        assert_error_shape(response)
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance])


def test_an_id_that_names_a_model_is_no_update(fl_node):
    model = get_json(fl_node + "/fl/model")
    for query in ("", "?raw=1"):
        response = requests.get(f"{fl_node}/fl/updates/{model['hash']}{query}", timeout=10)
        assert response.status_code == 404, response.text
        assert_error_shape(response)
    assert requests.get(fl_node + model["blob"], timeout=10).status_code == 200  # it is a model
