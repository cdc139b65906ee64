"""FLSettings: the FL section of the genesis file must be read identically by every node, so
unknown keys, wrong types and out-of-range values are errors rather than silent defaults."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from node.fl.settings import FLSettings, SettingsError


def test_defaults_round_trip_through_the_app_state() -> None:
    state = FLSettings().to_app_state()
    assert state["kind"] == "fl"
    assert FLSettings.from_app_state(state) == FLSettings()


def test_non_default_settings_round_trip() -> None:
    custom = FLSettings(dataset="synthetic", rule="krum", rule_params={"f": 1}, topk_fraction=0.5, encoding="int8",
                        error_feedback=False, selection="pso", max_updates=8, lr=0.05, optimizer="adam")
    assert FLSettings.from_app_state(custom.to_app_state()) == custom


def test_missing_keys_take_defaults_and_kind_is_optional() -> None:
    settings = FLSettings.from_app_state({"rule": "median"})
    assert settings == dataclasses.replace(FLSettings(), rule="median")


def test_from_app_state_does_not_modify_its_input() -> None:
    state = {"kind": "fl", "seed": 3}
    FLSettings.from_app_state(state)
    assert state == {"kind": "fl", "seed": 3}


def test_unknown_keys_are_named() -> None:
    with pytest.raises(SettingsError, match="unknown FL setting\\(s\\): learning_rate, topK"):
        FLSettings.from_app_state({"learning_rate": 0.1, "topK": 0.2, "seed": 1})


def test_ints_are_accepted_for_floats() -> None:
    settings = FLSettings.from_app_state({"lr": 1, "dirichlet_alpha": 2})
    assert settings.lr == 1.0 and isinstance(settings.lr, float)
    assert isinstance(settings.dirichlet_alpha, float)


def test_keys_of_earlier_versions_name_their_new_names() -> None:
    with pytest.raises(SettingsError, match=r"unknown FL setting\(s\): clip \(now clip_norm\), topk \(now topk_fraction\)"):
        FLSettings.from_app_state({"topk": 0.1, "clip": 1.0})


def test_privacy_keys_of_earlier_versions_name_the_preset_keys() -> None:
    with pytest.raises(SettingsError, match=r"dp_delta \(now privacy.delta\), epsilon_budget \(now privacy.epsilon\)"):
        FLSettings.from_app_state({"epsilon_budget": 8.0, "dp_delta": 1e-5})


def test_the_default_privacy_preset_is_off() -> None:
    settings = FLSettings.from_app_state({})
    assert settings.privacy == {"preset": "off"} and not settings.privacy_preset.formal
    assert settings.privacy_preset.guarantee(settings.noise_multiplier).startswith("no formal privacy")


def test_a_local_dp_preset_is_pinned_in_genesis_with_its_defaults() -> None:
    app = {"privacy": {"preset": "local-dp", "epsilon": 8}}
    settings = FLSettings.from_app_state(app)
    preset = settings.privacy_preset
    assert (preset.preset, preset.epsilon, preset.delta, preset.noise_multiplier, preset.max_grad_norm) == \
        ("local-dp", 8.0, 1e-5, 1.0, 1.0)
    assert FLSettings.from_app_state(settings.to_app_state()) == settings
    assert preset.guarantee(0.01).startswith("record-level (8, 1e-05)-differential privacy")


@pytest.mark.parametrize("privacy, message", [
    ("off", "FL setting privacy must be dict, got 'off'"),
    ({}, "privacy must be an object naming a preset"),
    ({"preset": "on"}, "privacy.preset must be one of off, local-dp; got 'on'"),
    ({"preset": None}, "privacy.preset must be one of off, local-dp"),
    ({"preset": "off", "epsilon": 8}, "privacy preset off takes no epsilon"),
    ({"preset": "local-dp"}, "privacy preset local-dp needs an epsilon budget"),
    ({"preset": "local-dp", "epsilon": 8, "sigma": 1.0}, "privacy preset local-dp takes no sigma"),
    ({"preset": "local-dp", "epsilon": "8"}, "privacy.epsilon must be a finite number, got '8'"),
    ({"preset": "local-dp", "epsilon": True}, "privacy.epsilon must be a finite number"),
    ({"preset": "local-dp", "epsilon": float("inf")}, "privacy.epsilon must be a finite number"),
    ({"preset": "local-dp", "epsilon": 0}, "privacy.epsilon must be in (0, 10]"),
    ({"preset": "local-dp", "epsilon": 50}, "above it differential privacy bounds nothing"),
    ({"preset": "local-dp", "epsilon": 8, "delta": 0.1}, "privacy.delta must be in (0, 0.001]"),
    ({"preset": "local-dp", "epsilon": 8, "delta": 0}, "privacy.delta must be in (0, 0.001]"),
    ({"preset": "local-dp", "epsilon": 8, "noise_multiplier": 0}, "privacy.noise_multiplier must be > 0"),
    ({"preset": "local-dp", "epsilon": 8, "max_grad_norm": -1}, "privacy.max_grad_norm must be > 0"),
])
def test_bad_privacy_presets_are_refused_with_what_is_wrong(privacy: Any, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        FLSettings.from_app_state({"privacy": privacy})
    assert message in str(info.value)


def test_optional_settings_take_none_or_their_type() -> None:
    assert FLSettings.from_app_state({"batch_size": None}).batch_size is None
    with pytest.raises(SettingsError, match="FL setting batch_size must be int"):
        FLSettings.from_app_state({"batch_size": 3.5})
    assert FLSettings.from_app_state({"clip_norm": 2}).clip_norm == 2.0


@pytest.mark.parametrize("key, value", [
    ("seed", "0"), ("seed", 1.5), ("seed", True), ("max_updates", None), ("clip_norm", "1"),
    ("lr", "0.1"), ("lr", True), ("lr", [0.1]),
    ("error_feedback", 1), ("error_feedback", "yes"),
    ("rule", 3), ("dataset", None), ("rule_params", []), ("rule_params", "f=1"),
])
def test_wrong_types_are_refused(key: str, value: Any) -> None:
    with pytest.raises(SettingsError, match=f"FL setting {key} must be"):
        FLSettings.from_app_state({key: value})


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"partition": "natural"}, "only synthetic data has a natural partition"),
    ({"partition": "natural", "dataset": "synthetic"}, "a chain cannot use the natural partition"),
    ({"clip_norm": None, "noise_multiplier": 0.0}, "a chain needs clip_norm"),
    ({"topk_fraction": None}, "a chain needs topk_fraction"),
    ({"partition": "bogus"}, "partition must be one of"),
    ({"model": "resnet50"}, "model must be one of"),
    ({"rule": "average"}, "rule must be one of"),
    ({"encoding": "int4"}, "encoding must be one of"),
    ({"selection": "best"}, "selection must be one of"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"lr_schedule": "cosine"}, "lr_schedule must be one of"),
    ({"topk_fraction": 0.0}, "topk_fraction must be in (0, 1]"),
    ({"topk_fraction": 1.5}, "topk_fraction must be in (0, 1]"),
    ({"clip_norm": 0.0}, "clip_norm must be > 0"),
    ({"noise_multiplier": -0.1}, "noise_multiplier must be >= 0"),
    ({"max_staleness": -1}, "max_staleness and staleness_a must be >= 0"),
    ({"staleness_a": -0.5}, "max_staleness and staleness_a must be >= 0"),
    ({"max_updates": 0}, "max_updates, local_epochs and batch_size must be >= 1"),
    ({"local_epochs": 0}, "max_updates, local_epochs and batch_size must be >= 1"),
    ({"batch_size": 0}, "max_updates, local_epochs and batch_size must be >= 1"),
    ({"lr": 0.0}, "lr and server_lr must be > 0"),
    ({"server_lr": -1.0}, "lr and server_lr must be > 0"),
    ({"reward_accepted": -1}, "rewards and penalties must be >= 0"),
    ({"penalty_rejected": -1}, "rewards and penalties must be >= 0"),
    ({"penalty_bad_block": -1}, "rewards and penalties must be >= 0"),
    ({"clients": -1}, "clients and eval_samples must be >= 0"),
    ({"eval_samples": -1}, "clients and eval_samples must be >= 0"),
    ({"val_fraction": 1.0}, "val_fraction must be in [0, 1)"),
    ({"val_fraction": -0.1}, "val_fraction must be in [0, 1)"),
    ({"dirichlet_alpha": 0.0}, "dirichlet_alpha > 0"),
    ({"momentum": -0.5}, "momentum and prox_mu must be >= 0"),
])
def test_each_invalid_range_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        FLSettings.from_app_state(overrides)
    assert message in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        FLSettings.from_app_state({"topk_fraction": 2.0, "lr": -1.0, "dataset": "x"})
    text = str(info.value)
    assert "topk_fraction" in text and "lr and server_lr" in text and "dataset" in text
    assert text.count("; ") == 2


def test_validate_catches_settings_built_in_code() -> None:
    with pytest.raises(SettingsError, match="max_updates"):
        FLSettings(max_updates=0).validate()


def test_unknown_rule_params_are_refused() -> None:
    with pytest.raises(SettingsError, match="radius_typo"):
        FLSettings.from_app_state({"rule": "clustering", "rule_params": {"radius_typo": 2.0}})


@pytest.mark.parametrize("params, message", [
    ({"feature_clip": 0.5}, "feature_clip must be 0 (off) or finite and >= 1"),
    ({"direction": 1.0}, "direction must be in [0, 1)"),
    ({"guard": -0.01}, "guard must be finite and >= 0"),
    ({"radius_candidates": []}, "radius multipliers must be positive"),
    ({"min_cluster_size": 0}, "must be >= 1"),
    ({"weight_cap": 0.5}, "weight_cap must be None or a finite number >= 1"),
    ({"f": -1}, "f must be a non-negative integer"),
])
def test_rule_parameter_values_the_rule_cannot_take_are_refused(params: dict, message: str) -> None:
    """Checked only when a round runs, such a value would skip every round of the chain's life
    (the rule raises, the round is skipped): the genesis is refused instead, with the rule's reason."""
    with pytest.raises(SettingsError) as info:
        FLSettings.from_app_state({"rule": "clustering", "rule_params": params})
    assert message in str(info.value)


@pytest.mark.parametrize("params, message", [
    ({"feature_clip": "1.5"}, "feature_clip must be float"),
    ({"drift": 1}, "drift must be bool"),
    ({"n_init": 2.5}, "n_init must be int"),
    ({"radius_candidates": ["2"]}, "radius_candidates must be a list of floats"),
])
def test_rule_parameters_of_the_wrong_type_are_refused(params: dict, message: str) -> None:
    """A parameter given as text would raise a TypeError from inside the rule in every round."""
    with pytest.raises(SettingsError) as info:
        FLSettings.from_app_state({"rule": "clustering", "rule_params": params})
    assert message in str(info.value)


def test_rule_parameters_in_json_form_are_taken() -> None:
    """A genesis is JSON: a tuple parameter arrives as a list and a float one may be written as an int."""
    s = FLSettings.from_app_state({"rule": "clustering", "rule_params": {"radius_candidates": [2, 3.5],
                                                                          "feature_clip": 1, "f": 3}})
    assert s.rule_params == {"radius_candidates": [2, 3.5], "feature_clip": 1, "f": 3}
    FLSettings.from_app_state({"rule": "multikrum", "rule_params": {"m": 5}})
    with pytest.raises(SettingsError, match="m must be"):
        FLSettings.from_app_state({"rule": "multikrum", "rule_params": {"m": 0}})
