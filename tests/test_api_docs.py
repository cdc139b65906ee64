"""The OpenAPI document and the Prometheus exposition writer, checked without a node."""

from __future__ import annotations

import math

import pytest

from node.api import ROUTES, openapi_document
from node.prometheus import Family, Registry


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


def test_exposition_format():
    reg = Registry("fedchain_")
    reg.gauge("height", "Newest height.", 12)
    fam = reg.counter("dropped_total", 'Drops "by" reason\\ here.')
    fam.add(3, reason="bad_signature").add(1, reason='we"ird\\\nlabel')
    reg.gauge("ratio", "A float.", 0.25)
    reg.gauge("nan", "Not a number.", math.nan)
    text = reg.render()
    assert text.endswith("\n")
    assert text.splitlines() == [
        "# HELP fedchain_height Newest height.",
        "# TYPE fedchain_height gauge",
        "fedchain_height 12",
        '# HELP fedchain_dropped_total Drops "by" reason\\\\ here.',
        "# TYPE fedchain_dropped_total counter",
        'fedchain_dropped_total{reason="bad_signature"} 3',
        'fedchain_dropped_total{reason="we\\"ird\\\\\\nlabel"} 1',
        "# HELP fedchain_ratio A float.",
        "# TYPE fedchain_ratio gauge",
        "fedchain_ratio 0.25",
        "# HELP fedchain_nan Not a number.",
        "# TYPE fedchain_nan gauge",
        "fedchain_nan NaN",
    ]


def test_family_samples_stay_together():
    reg = Registry()
    reg.counter("a_total", "a", 1, k="x")
    reg.gauge("b", "b", 2)
    reg.counter("a_total", "a", 3, k="y")
    lines = [line for line in reg.render().splitlines() if not line.startswith("#")]
    assert lines == ['a_total{k="x"} 1', 'a_total{k="y"} 3', "b 2"]


def test_labels_are_sorted():
    assert Family("m", "gauge", "h").add(1, z="1", a="2").render().splitlines()[-1] == 'm{a="2",z="1"} 1'


@pytest.mark.parametrize("bad", [
    lambda: Family("1bad", "gauge", "h"),
    lambda: Family("ok", "histogram", "h"),
    lambda: Family("ok", "gauge", "h").add(1, **{"bad-label": "x"}),
    lambda: Family("ok", "gauge", "h").add(1, __reserved="x"),
])
def test_invalid_names_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_a_family_keeps_its_type():
    reg = Registry()
    reg.gauge("x", "h", 1)
    with pytest.raises(ValueError, match="registered as gauge"):
        reg.counter("x", "h", 1)
