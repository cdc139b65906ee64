"""The JSON views of the chain state the HTTP API serves."""

from __future__ import annotations

import json

from consensus.statejson import account_json, delegates_json
from tests.consensus.helpers import IDS, OUTSIDER, history, state


def test_json_views():
    st = history(state())
    view = account_json(st, IDS[0])
    assert view["id"] == IDS[0] and view["delegate"] and view["member"]
    assert isinstance(view["trust"], float) and view["jailed"] is False
    assert account_json(st, OUTSIDER.node_id)["balance"] == 30
    assert account_json(st, "ab" * 32) is None
    dj = delegates_json(st)
    assert [d["id"] for d in dj] == st.delegates and dj[3]["jailed"] is True
    json.dumps([view, dj])
