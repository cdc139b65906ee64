"""The benchmarks' "fedchain" is the product: the genesis defaults of FLSettings on a task, in one
place (bench.simruns), and the FedAvg baseline switches exactly the pipeline off."""

from __future__ import annotations

import dataclasses

import pytest

from bench.robustness import DIGITS, FMNIST
from bench.simruns import FEDAVG, PRODUCT, TASK_KEYS, fedavg, fedchain
from learning.settings import FLSettings
from learning.sim import SimConfig

TASK = {"dataset": "fashion_mnist", "model": "logreg", "lr": 0.3, "batch_size": 64, "num_nodes": 20, "rounds": 5}


def test_the_product_is_the_genesis_defaults_on_a_task() -> None:
    assert PRODUCT == FLSettings() == FLSettings.from_app_state(FLSettings().to_app_state())
    product = SimConfig.of(**fedchain(TASK)).fl
    assert product == dataclasses.replace(FLSettings(), dataset="fashion_mnist", model="logreg", lr=0.3, batch_size=64)
    for task in (DIGITS, FMNIST):  # the robustness benchmarks' tasks run the product pipeline too
        fl = SimConfig.of(**task).fl
        assert {f.name: getattr(fl, f.name) for f in dataclasses.fields(fl) if f.name not in TASK_KEYS} == \
            {f.name: getattr(PRODUCT, f.name) for f in dataclasses.fields(PRODUCT) if f.name not in TASK_KEYS}


def test_a_task_may_not_change_the_pipeline() -> None:
    with pytest.raises(ValueError, match=r"pipeline settings \['clip_norm', 'topk_fraction'\]"):
        fedchain({**TASK, "topk_fraction": 0.05, "clip_norm": 2.0})


def test_the_fedavg_baseline_turns_the_pipeline_off() -> None:
    fl = SimConfig.of(**fedavg(TASK)).fl
    assert (fl.rule, fl.topk_fraction, fl.clip_norm, fl.noise_multiplier, fl.lr_schedule) == \
        ("fedavg", None, None, 0.0, "constant")
    assert set(FEDAVG) <= {f.name for f in dataclasses.fields(FLSettings)} and not set(FEDAVG) & TASK_KEYS
