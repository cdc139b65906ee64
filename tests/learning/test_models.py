"""Models: deterministic initialisation, flat-vector round trips, shapes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from learning.models import MODEL_NAMES, build_model, get_flat, num_params, set_flat

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
    out = model(torch.rand(5, int(np.prod(shape))))
    assert out.shape == (5, 10)


def test_flat_round_trip_and_aliasing() -> None:
    model = build_model("mlp", (20,), 3, seed=1)
    vec = np.random.default_rng(0).standard_normal(num_params(model)).astype(np.float32)
    set_flat(model, vec)
    out = get_flat(model)
    assert np.array_equal(out, vec)
    out[0] += 1.0                       # a copy: the model must not change
    assert get_flat(model)[0] == vec[0]
    first = next(model.parameters())
    assert float(first.detach().view(-1)[0]) == vec[0]   # parameters really hold the loaded values


def test_flat_survives_deepcopy_and_state_dict_assign() -> None:
    model = build_model("tabular_mlp", (10,), 4, seed=2)
    clone = copy.deepcopy(model)
    vec = np.arange(num_params(model), dtype=np.float32) / 1000
    set_flat(clone, vec)
    assert np.array_equal(get_flat(clone), vec)
    assert not np.array_equal(get_flat(model), vec)
    fresh = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(fresh, assign=True)
    assert np.allclose(get_flat(model), np.concatenate([v.reshape(-1).numpy() for v in fresh.values()]))


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
