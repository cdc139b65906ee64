"""The local-dp genesis preset on real daemons: each node trains with DP-SGD, spends epsilon with
every update, stops sending when one more would pass its budget, and says so (``/fl/privacy``,
``/metrics``, its log, ``fedchain model``), while the chain keeps finalizing blocks."""

import json
import urllib.request

import pytest

from tests.integration.harness import cli, wait_for

pytestmark = pytest.mark.integration

# a testnet node holds some 150-450 digits records: at noise 3 its first update costs an epsilon
# near 1, so it makes one or a few updates before one more would pass 1.6
PRIVACY = {"preset": "local-dp", "epsilon": 1.6, "delta": 1e-5, "noise_multiplier": 3.0, "max_grad_norm": 1.0}


@pytest.mark.timeout(300)
def test_local_dp_nodes_stop_at_their_budget_and_the_chain_goes_on(make_testnet):
    net = make_testnet(4, slot_ms=1000, app="fl", create_args=("--privacy", json.dumps(PRIVACY)))
    net.start_all()
    net.wait_height(1, timeout=60)

    def all_stopped():
        views = [net.get(i, "/fl/privacy") for i in range(4)]
        return all(v["exhausted"] for v in views) and views
    views = wait_for(all_stopped, 180, "every node to reach its privacy budget")
    for v in views:
        assert v["preset"] == "local-dp" and v["formal"] and v["epsilon_budget"] == 1.6 and v["delta"] == 1e-5
        assert v["epsilon"] <= 1.6 and v["guarantee"].startswith("record-level (1.6, 1e-05)-differential privacy")
        assert v["dp_sgd_steps"] == v["releases"] * v["dp_sgd"]["steps_per_update"]
    assert sum(v["releases"] for v in views) >= 2 and any(v["epsilon"] > 0 for v in views)

    # the chain goes on finalizing blocks with no more updates from anyone
    height = max(net.heights())
    net.wait_height(height + 5, timeout=60)
    assert [net.get(i, "/fl/privacy")["releases"] for i in range(4)] == [v["releases"] for v in views]
    assert all(net.get(0, f"/fl/updates?height={h}")["considered"] == 0 for h in range(height + 3, height + 6))

    text = urllib.request.urlopen(net.url(0) + "/metrics", timeout=5).read().decode()
    assert "fedchain_fl_privacy_exhausted 1.0" in text and "fedchain_fl_privacy_epsilon_budget 1.6" in text
    assert "privacy budget reached" in (net.home(0) / "daemon.out").read_text()
    res = cli("model", "--node", net.url(0))
    assert res.returncode == 0, res.stderr
    assert "record-level (1.6, 1e-05)" in res.stdout and "budget reached" in res.stdout
    shown = cli("genesis", "--node", net.url(1)).stdout  # what a joining operator is asked to trust
    assert '"preset": "local-dp"' in shown and '"epsilon": 1.6' in shown
