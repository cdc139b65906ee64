"""The OpenAPI document, checked without a node."""

from __future__ import annotations

import pytest

from node.api import ROUTES, openapi_document


def _refs(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_openapi_covers_the_route_table():
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    assert {(p, m) for p, ops in doc["paths"].items() for m in ops} == {(r.path, r.method.lower()) for r in ROUTES}
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    for ref in _refs(doc):
        name = ref.removeprefix("#/components/schemas/")
        assert name in doc["components"]["schemas"], ref


def test_openapi_parameters_and_errors():
    doc = openapi_document()
    block = doc["paths"]["/blocks/{height}"]["get"]
    height = block["parameters"][0]
    assert height == {"name": "height", "in": "path", "required": True, "description": height["description"],
                      "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
    assert {"200", "400", "404"} <= set(block["responses"])
    tx = doc["paths"]["/txs"]["post"]
    assert set(tx["requestBody"]["content"]) == {"application/msgpack", "application/json"}
    assert {"400", "413", "415", "422"} <= set(tx["responses"])
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_latest_is_registered_before_the_height_pattern():
    paths = [r.path for r in ROUTES]
    assert paths.index("/blocks/latest") < paths.index("/blocks/{height}")
