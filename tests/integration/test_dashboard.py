"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright)
loads the page a real 4-node federated-learning testnet serves, one of whose nodes sends
sign-flipped updates, and watches it update live.

Set ``FEDCHAIN_DASHBOARD_PNG=PATH`` to keep the screenshot (``bench/results/dashboard.png`` was
made this way); it is always saved in the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import harness
from tests.integration.harness import wait_for
from tests.test_deploy import grafana_metric_names

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ATTACKER = 3


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("SKIPPED LOUDLY: Debian's `chromium` package is not installed and `make test` could not "
                    "install it (apt-get install chromium); the dashboard's browser test did not run")
    return path


@pytest.fixture
def browser(tmp_path):
    """A fresh headless Chromium profile; the page's console errors (CSP violations among them)
    and uncaught exceptions are collected in ``page.errors``, except the 503 that ``/fl/privacy``
    answers until the node's trainer has started (the page expects it)."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        page.errors = []
        page.on("console", lambda msg: msg.type == "error" and "status of 503" not in msg.text
                and page.errors.append(msg.text))
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()


@pytest.fixture(scope="module")
def fl_net(tmp_path_factory):
    net = harness.Testnet(tmp_path_factory.mktemp("dashboard"), 4, slot_ms=2000, app="fl")
    net.edit_config(ATTACKER, 'attack = ""', 'attack = "sign_flip"')
    net.start_all()
    try:
        yield net
    finally:
        net.stop_all()


def text_int(page, selector: str) -> int | None:
    text = page.inner_text(selector).strip()
    return int(text) if text.isdigit() else None


@pytest.mark.timeout(240)
def test_dashboard_of_a_federated_learning_testnet_in_a_browser(fl_net, browser, tmp_path):
    began = time.monotonic()
    net, page = fl_net, browser
    net.wait_height(1, timeout=60)
    page.goto(net.url(0) + "/")
    assert page.url == net.url(0) + "/dashboard"
    # heights advance on screen (pushed by /subscribe)
    first = wait_for(lambda: text_int(page, "#height"), 20, "a height on screen")
    wait_for(lambda: (text_int(page, "#height") or 0) >= first + 2, 30, "the height on screen to advance")
    assert page.inner_text("#live") == "live"
    # the delegate table: the 4 delegates of the testnet
    wait_for(lambda: page.locator("#delegates tbody tr").count() == 4, 10, "4 delegate rows")
    ids = {page.locator("#delegates tbody tr td").nth(6 * i).get_attribute("title") for i in range(4)}
    assert ids == {net.node_id(i) for i in range(4)}
    # the accuracy chart gets a point per evaluated global model
    wait_for(lambda: int(page.get_attribute("#accuracy-chart", "data-points")) >= 3, 90,
             "3 points on the accuracy chart")
    assert page.locator("#accuracy-chart canvas").count() >= 1
    # the attacker's sign-flipped update appears, rejected, with the rule's reason
    attacker = net.node_id(ATTACKER)
    row = page.locator("#rejections tbody tr").filter(has=page.locator(f'td[title="{attacker}"]')).first
    row.wait_for(timeout=90_000)
    height, reason = int(row.locator("td").nth(0).inner_text()), row.locator("td").nth(2).inner_text()
    decided = {u["sender"]: u for u in net.get(0, f"/fl/updates?height={height}")["updates"]}
    assert decided[attacker]["accepted"] is False and reason == decided[attacker]["reason"] != ""
    assert page.locator("#timeline .cell.no").count() >= 1
    # peers with their measured round trip, and privacy spent against the budget for every node
    wait_for(lambda: page.locator("#peers tbody tr").count() == 3
             and all(t.endswith(" ms") for t in page.locator("#peers tbody tr td:nth-child(5)").all_inner_texts()),
             30, "3 peers with a round trip")
    wait_for(lambda: page.locator("#privacy tbody tr").count() == 4, 40, "privacy of 4 nodes")
    assert page.locator("#privacy progress").count() == 4
    # this node's resources
    assert page.inner_text("#rss").endswith("MiB") or page.inner_text("#rss").endswith("GiB")
    assert page.inner_text("#loop-lag").endswith(" ms")
    assert page.locator("#block-chart").get_attribute("data-points") not in ("0", None)
    assert not page.errors, page.errors
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("FEDCHAIN_DASHBOARD_PNG"):
        shutil.copyfile(shot, Path(os.environ["FEDCHAIN_DASHBOARD_PNG"]))
    print(f"dashboard browser test: {time.monotonic() - began:.1f} s after the testnet started")


@pytest.mark.timeout(120)
def test_dashboard_of_a_counter_chain_hides_the_learning_sections(tmp_path, browser):
    net = harness.Testnet(tmp_path / "net", 1, slot_ms=500, app="counter")
    net.start_all()
    try:
        net.wait_height(1, timeout=30)
        page = browser
        page.goto(net.url(0) + "/dashboard")
        first = wait_for(lambda: text_int(page, "#height"), 20, "a height on screen")
        wait_for(lambda: (text_int(page, "#height") or 0) > first, 20, "the height on screen to advance")
        wait_for(lambda: page.inner_text("#app-kind") == "counter application", 10, "the application named")
        assert all(not s.is_visible() for s in page.locator("section.fl").all())
        assert page.locator("#delegates tbody tr").count() == 1
        wait_for(lambda: int(page.get_attribute("#block-chart", "data-points")) >= 2, 20, "block chart points")
        assert not page.errors, page.errors
    finally:
        net.stop_all()


@pytest.mark.timeout(120)
def test_fl_histograms_and_every_grafana_metric_on_a_live_node(fl_net):
    """The FL node observes its update-to-final and aggregation histograms, and exports every
    metric the Grafana dashboard (deploy/grafana) queries."""
    net = fl_net
    net.wait_height(4, timeout=90)

    def scrape() -> list:
        return list(text_string_to_metric_families(
            urllib.request.urlopen(net.url(0) + "/metrics", timeout=5).read().decode()))

    def samples() -> dict[str, float]:
        return {s.name: s.value for f in scrape() for s in f.samples}

    got = wait_for(lambda: (s := samples())["fedchain_fl_update_to_final_seconds_count"] > 0
                   and s["fedchain_fl_aggregation_seconds_count"] > 0 and s, 60, "FL histograms observed")
    assert 0 < got["fedchain_fl_update_to_final_seconds_sum"] / got["fedchain_fl_update_to_final_seconds_count"] < 120
    # a labelled counter with nothing counted yet (no reason seen) has a family but no sample
    series = {f.name + suffix for f in scrape() for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    missing = grafana_metric_names() - series
    assert not missing, f"the Grafana dashboard queries metrics no node exports: {sorted(missing)}"
