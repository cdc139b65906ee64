"""A relay on the path between honest nodes: it forwards their connections, and injects frames.

The relay sits in front of one node, X: X advertises the relay's address, has no bootstrap URLs
of its own and the others have the relay as X's bootstrap URL, so every connection between X and
another node goes through the relay while it runs. Afterwards X dials the URLs it learned."""

import threading
import tomllib

import pytest
import tomli_w

from tests.apinode import free_port
from tests.hostile.attacks import relay
from tests.hostile.harness import Bounds, Victims, run_hostile

pytestmark = pytest.mark.integration


def edit_config(path, change) -> None:
    config = tomllib.loads(path.read_text())
    change(config["network"])
    path.write_text(tomli_w.dumps(config))


@pytest.mark.timeout(240)
def test_relay_cannot_inject_or_get_honest_nodes_banned(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    x = net.n - 1
    port = free_port()
    real, fake = net.url(x), f"http://127.0.0.1:{port}"
    for i in range(net.n):
        if i == x:
            edit_config(net.home(i) / "config.toml", lambda n: n.update(advertised_url=fake, bootstrap=[]))
        else:
            edit_config(net.home(i) / "config.toml",
                        lambda n: n.update(bootstrap=[fake if u == real else u for u in n["bootstrap"]]))
    result: dict = {}
    attacker = threading.Thread(target=lambda: result.update(
        run_hostile(relay, port, net.base_port + x, 30.0, 2.0, 12, timeout=60)))
    attacker.start()
    try:
        net.start_all()
        victims = Victims(net)
        net.wait_height(2, timeout=60)
        with victims.monitor() as monitor:
            attacker.join(timeout=70)
            print(result, monitor.summary())
            victims.check(monitor, Bounds())
    finally:
        attacker.join(timeout=70)
    # Posing as X with X's own identity payload but its own key: the dialler refused (bad_auth).
    assert result["impersonation"] == 4004, result["impersonation"]
    assert result["injected"] >= 1, "no session went through the relay"
    # Every connection the relay injected into was closed at once by the honest ends.
    assert len(result["survived_s"]) == result["injected"]
    assert max(result["survived_s"]) < 2.0
