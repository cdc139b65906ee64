"""Models: deterministic initialisation, flat-vector round trips, shapes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.models import MODEL_NAMES, build_model, get_flat, num_params, set_flat

ROOT = Path(__file__).resolve().parents[2]
PINNED_TABULAR_MLP = "cfe33305e7624d8eb8abb784103187f759065c727299171a59c370219b55c8c0"

SHAPES = {"logreg": (64,), "mlp": (784,), "tabular_mlp": (60,), "cnn": (1, 28, 28)}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_weights_and_rng_untouched(name: str) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = get_flat(build_model(name, SHAPES[name], 10, seed=7))
    assert torch.equal(torch.rand(3), before)          # caller's RNG stream is not consumed
    b = get_flat(build_model(name, SHAPES[name], 10, seed=7))
    c = get_flat(build_model(name, SHAPES[name], 10, seed=8))
    assert a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fedavg_2nn_parameter_count() -> None:
    # 784*200+200 + 200*200+200 + 200*10+10, the FedAvg paper's 2NN
    assert num_params(build_model("mlp", (784,), 10)) == 199_210


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_cnn_accepts_flat_images(shape: tuple[int, int, int]) -> None:
    model = build_model("cnn", shape, 10)
    out = model.logits(np.random.default_rng(0).random((5, int(np.prod(shape))), dtype=np.float32))
    assert out.shape == (5, 10)


@pytest.mark.parametrize("name,shape", [("mlp", (20,)), ("cnn", (1, 8, 8))])
def test_flat_round_trip_and_aliasing(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 3, seed=1)
    vec = np.random.default_rng(0).standard_normal(num_params(model)).astype(np.float32)
    set_flat(model, vec)
    out = get_flat(model)
    assert np.array_equal(out, vec)
    out[0] += 1.0                       # a copy: the model must not change
    assert get_flat(model)[0] == vec[0]
    assert model.logits(np.zeros((1, int(np.prod(shape))), np.float32)).shape == (1, 3)
    if name == "cnn":                   # the torch module's parameters really hold the loaded values
        assert float(next(model.module.parameters()).detach().view(-1)[0]) == vec[0]


def test_the_dense_models_initialise_alike_everywhere_and_without_torch() -> None:
    """The genesis model is built by every node: its bytes are pinned (a numpy or CPU that drew
    other weights would start another chain), and torch's default ranges hold: U(+-1/sqrt(in))."""
    model = build_model("tabular_mlp", (64,), 10, seed=0)
    assert hashlib.sha256(model.flat.tobytes()).hexdigest() == PINNED_TABULAR_MLP
    w1, b1 = model.layers[0]
    w2, b2 = model.layers[1]
    assert np.abs(w1).max() <= 1 / 8 and np.abs(b1).max() <= 1 / 8 and np.abs(w2).max() <= 1 / 8
    assert np.abs(w1).max() > 0.12 and abs(float(w1.mean())) < 0.005
    code = ("import sys; from learning.models import build_model; build_model('tabular_mlp', (64,), 10); "
            "assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_set_flat_rejects_bad_vectors() -> None:
    model = build_model("logreg", (4,), 2)
    with pytest.raises(ValueError, match="shape"):
        set_flat(model, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        set_flat(model, np.full(num_params(model), np.nan, np.float32))


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", (4,), 2)
    with pytest.raises(ValueError, match="image input"):
        build_model("cnn", (64,), 10)
    with pytest.raises(ValueError, match="too small"):
        build_model("cnn", (1, 2, 2), 10)
    with pytest.raises(ValueError, match="2 classes"):
        build_model("logreg", (4,), 1)
