"""The adversary benchmark's CNN rows run what a Fashion-MNIST device runs."""

from __future__ import annotations

from bench.adversary import FMNIST, _config
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
