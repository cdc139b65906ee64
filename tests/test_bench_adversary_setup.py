"""The adversary benchmark's CNN rows run what a Fashion-MNIST device runs."""

from __future__ import annotations

import pytest

from bench.adversary import FMNIST, _assignments, _config
from cli.data import PRESET_MODELS, preset_settings
from learning.settings import FLSettings
from learning.sim import SimConfig


def test_cnn_runs_take_every_fl_setting_from_the_fashion_mnist_preset() -> None:
    """The clip moves both clean accuracy and backdoor success, so a CNN row measured with the
    genesis clip sized for the MLP says nothing about the preset devices run: every FL setting of a
    CNN run (attacked or not) equals the one ``fedchain testnet create --dataset fashion_mnist``
    writes into the genesis, apart from the run's seed."""
    preset = FLSettings.from_app_state(preset_settings("fashion_mnist", {"dataset": "fashion_mnist",
                                                                          "model": PRESET_MODELS["fashion_mnist"]}))
    for label, fraction in ((None, 0.0), ("backdoor", 0.4)):
        run = SimConfig.of(**_config(FMNIST, "cnn", label, fraction, 0, 10)).fl
        assert run == preset
    mlp = SimConfig.of(**_config(FMNIST, "tabular_mlp", None, 0.0, 0, 10)).fl
    assert (mlp.model, mlp.clip_norm, mlp.batch_size) == ("tabular_mlp", 1.0, 64)   # the MLP keeps the bench task


@pytest.mark.parametrize("model", ["tabular_mlp", "cnn"])
def test_async_rows_run_the_synchronous_pipeline_with_arrivals_and_staleness(model: str) -> None:
    """Each model's asynchronous rows differ from its synchronous ones only in how updates arrive:
    the same FL settings (clip, top-k, rule, staleness limit; the CNN's from its preset),
    asynchronous mode with a buffer of half the nodes, and twice the aggregations, so every node
    runs as many local jobs as in the synchronous rows; a sybil burst still joins halfway through."""
    sync = SimConfig.of(**_config(FMNIST, model, "sybil", 0.4, 0, 10))
    run = SimConfig.of(**_config(FMNIST, f"{model}/async", "sybil", 0.4, 0, 10))
    assert run.fl == sync.fl
    assert (sync.mode, run.mode, run.clients_per_round) == ("sync", "async", run.num_nodes // 2)
    assert (run.rounds, run.byzantine_from_round) == (2 * sync.rounds, 2 * sync.byzantine_from_round)


def test_a_skipped_round_neither_scores_nor_penalizes_anyone() -> None:
    """The validation guard skips a round: nobody is rejected or penalized and nobody scored, so
    the round counts apart (rounds skipped per run), not as honest rejections, lost stake or
    detection ties at the top of the ranking."""
    from bench.adversary import _auc, _honest_cost

    decided = {"byzantine": [True, False, False], "scores": [2.0, 0.5, 0.1], "fp": 0, "skipped": False}
    skipped = {"byzantine": [True, False, False], "scores": [None, None, None], "fp": 2, "skipped": True}
    runs = [{"rounds": [decided, skipped]}]
    assert _auc(runs) == 1.0
    cost = _honest_cost(runs, penalty=5)
    assert (cost["rejected_per_round"]["mean"], cost["stake_lost"]["mean"], cost["skipped_rounds"]["mean"]) == (0, 0, 1)


def test_honest_cost_says_whose_data_the_rejections_held() -> None:
    """One rejection of four honest updates is a quarter of the updates, but the share of the
    honest samples it held depends on the device: the benchmark reports both (a skipped round
    counts for neither), so a rule that rejects the largest devices shows it."""
    from bench.adversary import _honest_cost

    rnd = {"byzantine": [True, False, False, False, False], "scores": [2.0, 1.2, 0.5, 0.4, 0.3], "fp": 1,
           "skipped": False, "verdicts": [False, False, True, True, True], "claims": [100.0, 500.0, 100.0, 200.0, 200.0]}
    skipped = {**rnd, "verdicts": [False] * 5, "fp": 5, "skipped": True}
    cost = _honest_cost([{"rounds": [rnd, skipped]}], penalty=5)
    assert cost["updates_rejected"]["mean"] == 0.25
    assert cost["data_rejected"]["mean"] == 0.5
    assert "data_rejected" not in _honest_cost([{"rounds": [{k: v for k, v in rnd.items() if k != "claims"}]}], 5)


def test_set_and_rule_options_reach_every_run_of_the_rule_and_refuse_what_is_not_key_equals_json() -> None:
    """``--set standing=true --rule feature_clip=1.0`` measure a configuration a genesis can choose:
    the values arrive typed (JSON) in the run's FL settings; a malformed option stops the benchmark
    before any run with the option named, instead of a worker failing halfway through."""
    pipeline = _assignments(["standing=true", "clip_norm=3"], "--set")
    rule = _assignments(["feature_clip=1.0"], "--rule")
    assert pipeline == {"standing": True, "clip_norm": 3} and rule == {"feature_clip": 1.0}
    fl = SimConfig.of(**_config(FMNIST, "cnn", "backdoor", 0.4, 0, 10, rule, pipeline)).fl
    assert (fl.standing, fl.clip_norm, fl.rule_params) == (True, 3.0, {"feature_clip": 1.0})
    for bad in ("standing", "=1", "feature_clip=one"):
        with pytest.raises(SystemExit, match="--rule"):
            _assignments([bad], "--rule")


@pytest.mark.parametrize("option", [["--rule", "feature_clip=0.5"], ["--rule", "radius_typo=2"],
                                    ["--set", "standing=\"yes\""], ["--set", "no_such_setting=1"]])
def test_options_no_run_could_take_stop_the_benchmark_before_its_first_run(option: list[str]) -> None:
    """A value the genesis would refuse stops ``python -m bench adversary`` at once, naming it, rather
    than an hour later when the first worker configures its run (or, for a rule value, by skipping
    every round of every run)."""
    from bench.adversary import main

    with pytest.raises(SystemExit, match="--set/--rule: .*(feature_clip|radius_typo|standing|no_such_setting)"):
        main(["--models", "cnn", "--no-ablation", "--workers", "1", *option])
