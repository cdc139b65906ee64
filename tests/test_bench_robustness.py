"""The aggregator adapters of the robustness benchmarks: exact conversion, bookkeeping, the hook."""

from __future__ import annotations

import numpy as np
import pytest

from bench.ablation import FixedThreshold, Unregistered
from bench.detection import Panel
from bench.flower import LABELS, Paired, effective_f, to_flower
from bench.robustness import mean_std, thin_curve
from learning.aggregation import aggregate
from learning.sim import SimConfig, Simulator

SHAPES = [(4, 3), (4,), (2, 4), (2,)]          # 12 + 4 + 8 + 2 = 26 values


def _updates(n: int = 11, d: int = 26, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:2] = 25.0                                   # two blatant outliers
    return x, rng.integers(5, 50, n).astype(np.float64)


def test_to_flower_splits_rows_into_layer_views_exactly() -> None:
    x, w = _updates()
    results = to_flower(x, w, SHAPES)
    assert len(results) == len(x)
    for row, (layers, count) in zip(x, results):
        assert [a.shape for a in layers] == SHAPES and isinstance(count, int)
        assert np.array_equal(np.concatenate([a.ravel() for a in layers]), row)
    assert [c for _, c in results] == w.astype(int).tolist()


def test_to_flower_rejects_fractional_counts_and_wrong_shapes() -> None:
    x, w = _updates()
    with pytest.raises(ValueError, match="integer"):
        to_flower(x, w + 0.5, SHAPES)
    with pytest.raises(ValueError, match="layer shapes"):
        to_flower(x, w, SHAPES[:-1])


def test_effective_f_follows_each_rules_requirement() -> None:
    assert effective_f("krum", 9, 20) == 8 and effective_f("bulyan", 9, 20) == 4
    assert effective_f("trimmed_mean", 12, 20) == 9 and effective_f("fedavg", 3, 20) == 3
    assert effective_f("median", None, 20) == 0


@pytest.mark.parametrize("rule", list(LABELS))
def test_flower_and_fedchain_agree_on_the_same_updates(rule: str) -> None:
    pytest.importorskip("flwr")
    x, w = _updates()
    for follow in ("fedchain", "flower"):
        paired = Paired(rule, follow)
        paired.shapes = SHAPES
        res = paired(rule, x, w, f=2, seed=0)
        assert res.vector.shape == (26,) and res.accepted.shape == (11,)
        report = paired.report()
        assert len(report["ms"]["fedchain"]) == len(report["ms"]["flower"]) == 1
        assert report["rel_diff"][0] < 1e-5, (rule, report["rel_diff"])
    ours = aggregate(rule, x, w, f=effective_f(rule, 2, 11), weight_cap=None)
    assert np.allclose(res.vector, ours.vector, rtol=1e-5, atol=1e-6)


def test_paired_refuses_a_rule_it_was_not_built_for() -> None:
    with pytest.raises(ValueError):
        Paired("clustering", "flower")
    paired = Paired("krum", "fedchain")
    with pytest.raises(ValueError, match="called for"):
        paired("median", *_updates(), f=1)


def test_unregistered_updates_join_the_rule_but_not_the_verdicts() -> None:
    x, w = _updates()
    extra = Unregistered(6, "sign_flip")
    res = extra("fedavg", x, w, f=2, seed=3)
    assert res.accepted.shape == (11,) and res.scores.shape == (11,)
    assert not np.allclose(res.vector, aggregate("fedavg", x, w).vector)
    assert extra.report() == {"unregistered_submitted": 6, "unregistered_accepted": 6}
    with pytest.raises(ValueError):
        Unregistered(0, "sign_flip")


def test_fixed_threshold_withholds_the_validation_callback() -> None:
    x, w = _updates()
    calls: list[int] = []

    def evaluate(vec: np.ndarray) -> float:
        calls.append(1)
        return 0.0

    fixed = FixedThreshold()("clustering", x, w, f=2, seed=0, evaluate=evaluate)
    assert not calls and fixed.info["radius"] == 3.0
    aggregate("clustering", x, w, f=2, seed=0, evaluate=evaluate)
    assert calls


def test_panel_follows_the_lead_rule_and_records_every_rule() -> None:
    x, w = _updates()
    panel = Panel(("krum", "median"))
    res = panel("multikrum", x, w, f=2, seed=0, evaluate=lambda v: 0.5)
    assert np.array_equal(res.vector, aggregate("multikrum", x, w, f=2).vector)
    assert np.array_equal(panel("multikrum", x, w, f=2, seed=0).vector, res.vector)   # a query: not recorded
    (record,) = panel.report()
    assert list(record) == ["multikrum", "krum", "median"]
    assert record["krum"]["accepted"].count(True) == 1 and len(record["median"]["scores"]) == 11


def test_simulator_runs_the_given_aggregator() -> None:
    panel = Panel(("median",))
    cfg = SimConfig.of(dataset="digits", model="logreg", num_nodes=8, rounds=2, rule="krum", attack="sign_flip",
                       byzantine_fraction=0.25)
    result = Simulator(cfg, aggregator=panel).run()
    assert len(panel.report()) == 2
    assert [r.num_accepted for r in result.rounds] == [1, 1]
    assert all(len(rec["median"]["scores"]) == 8 for rec in panel.report())


def test_panel_records_rounds_not_the_adaptive_attackers_queries() -> None:
    panel = Panel(("median",))
    cfg = SimConfig.of(dataset="digits", model="logreg", num_nodes=8, rounds=2, attack="adaptive",
                       byzantine_fraction=0.25)
    result = Simulator(cfg, aggregator=panel).run()
    assert len(panel.report()) == len(result.rounds) == 2
    assert [rec["clustering"]["accepted"].count(True) for rec in panel.report()] == [r.num_accepted for r in result.rounds]


def test_helpers() -> None:
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2}
    assert mean_std([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        mean_std([])
    xs, ys = thin_curve(list(range(1000)), list(range(1000)), points=50)
    assert len(xs) <= 50 and xs[0] == 0 and xs[-1] == 999 and xs == ys
