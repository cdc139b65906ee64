"""learning.client.Client: the pipeline every node runs (a daemon's trainer and the simulator alike):
train, clip, noise, top-k with error feedback within the norm bound, claim at most the cap."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from learning.bounds import l2_norm, sparse_norm
from learning.client import Client, Release, norm_bound
from learning.compression import densify
from learning.data import load_digits
from learning.models import build_model, get_flat
from learning.privacy import PrivacyBudgetExhausted
from learning.settings import FLSettings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shard():
    train, _ = load_digits(seed=0)
    return train.x[:120], train.y[:120]


def client_and_net(shard, rng_seed: int = 0, **settings):
    s = dataclasses.replace(FLSettings(), **settings)
    x, y = shard
    net = build_model(s.model, (64,), 10, s.seed)
    return Client(s, x, y, len(get_flat(net)), np.random.default_rng(rng_seed)), net, get_flat(net)


LOCAL_DP = {"preset": "local-dp", "epsilon": 8.0, "delta": 1e-5, "noise_multiplier": 1.5, "max_grad_norm": 1.0}


def test_a_release_is_clipped_then_noised_and_counted(shard) -> None:
    quiet, net, start = client_and_net(shard, noise_multiplier=0.0, clip_norm=0.05)
    release = quiet.release(net, start)
    assert math.isclose(l2_norm(release.vector), 0.05, rel_tol=1e-5)  # 4 epochs at lr 0.3 move far more
    assert quiet.steps == 1 and release.num_samples == 120
    noisy, net, start = client_and_net(shard, noise_multiplier=1.0, clip_norm=0.05)
    release = noisy.release(net, start)
    assert l2_norm(release.vector) > 0.05 * math.sqrt(noisy.dim) * 0.9  # N(0, (zC)^2) per coordinate
    # the off preset claims nothing for its update noise: no accountant, no epsilon
    assert noisy.accountant is None and noisy.epsilon() is None and noisy.steps == 1
    assert noisy.send(release, 10_000).loss == release.loss > 0


def test_local_dp_trains_with_dp_sgd_and_accounts_every_step_as_opacus_does(shard) -> None:
    client, net, start = client_and_net(shard, privacy=LOCAL_DP)
    # 120 records, batches of 32: Poisson rate 1/4, 4 steps an epoch, 4 epochs
    assert (client.sample_rate, client.dp_steps) == (0.25, 16)
    release = client.release(net, start)
    ref = RDPAccountant()
    for _ in range(16):
        ref.step(noise_multiplier=1.5, sample_rate=0.25)
    assert client.epsilon() == ref.get_epsilon(delta=1e-5) and client.accountant.steps == 16
    assert client.send(release, 10_000).loss == 0.0  # the raw training loss would leak the records
    assert math.isfinite(release.loss) and release.num_samples == 120


def test_dp_sgd_clips_every_example(shard) -> None:
    """One full-batch step (q = 1) with a tiny per-example clip C moves the model by at most
    lr * (C + noise), the noise being N(0, (zC)^2) per coordinate over 120 records; plain training
    moves it far more."""
    tiny = {**LOCAL_DP, "max_grad_norm": 1e-4}
    common = {"batch_size": None, "local_epochs": 1, "lr": 0.3, "lr_schedule": "constant", "clip_norm": 10.0,
              "noise_multiplier": 0.0}
    dp, net, start = client_and_net(shard, privacy=tiny, **common)
    moved = l2_norm(dp.release(net, start).vector)
    plain, net, start = client_and_net(shard, **common)
    noise = 1.5 * 1e-4 * math.sqrt(dp.dim) / 120
    assert moved <= 0.3 * (1e-4 + 1.2 * noise) < l2_norm(plain.release(net, start).vector) / 100


def test_training_and_noise_are_reproducible_from_the_seed_and_the_update_count(shard) -> None:
    a, net_a, start = client_and_net(shard, rng_seed=3)
    b, net_b, _ = client_and_net(shard, rng_seed=3)
    assert np.array_equal(a.release(net_a, start).vector, b.release(net_b, start).vector)
    # the learning rate and the batch order follow the node's own update count
    assert not np.array_equal(a.release(net_a, start).vector, client_and_net(shard, rng_seed=3)[0].release(net_b, start).vector)


def test_sending_keeps_what_it_does_not_send_in_the_residual(shard) -> None:
    client, net, start = client_and_net(shard, noise_multiplier=0.0)
    release = client.release(net, start)
    sent = client.send(release, 10_000)
    assert sent.sparse is not None and sent.sparse.indices.size == round(0.1 * client.dim)
    assert np.array_equal(sent.vector, densify(sent.sparse))
    np.testing.assert_allclose(sent.vector + client.compressor.residual, release.vector, atol=1e-6)
    assert sent.wire_bytes < 4 * client.dim / 5


def test_the_sent_norm_stays_within_what_every_node_admits(shard) -> None:
    client, net, start = client_and_net(shard)
    release = client.release(net, start)
    huge = release.vector * np.float32(1e4)  # what an attacker would like to send
    sent = client.send(release, 10_000, huge)
    assert client.bound == norm_bound(client.settings, client.dim) < l2_norm(huge)
    assert sparse_norm(sent.sparse) <= client.bound
    # nothing is lost: what was cut waits in the residual
    np.testing.assert_allclose(sent.vector + client.compressor.residual, huge, rtol=1e-4, atol=1e-2)


def test_the_claim_is_capped(shard) -> None:
    client, net, start = client_and_net(shard)
    release = client.release(net, start)
    assert client.send(release, 7).num_samples == 7
    assert client.send(Release(release.vector, 120, 0.1), 10_000).num_samples == 120


def test_dense_and_unclipped_sends_are_for_simulation_baselines(shard) -> None:
    client, net, start = client_and_net(shard, topk_fraction=None, clip_norm=None, noise_multiplier=0.0)
    release = client.release(net, start)
    sent = client.send(release, 10_000)
    assert sent.sparse is None and np.array_equal(sent.vector, release.vector)
    assert client.bound == math.inf and sent.wire_bytes == 4 * client.dim
    with pytest.raises(ValueError, match="chain needs clip_norm"):
        client.settings.validate(chain=True)


def test_a_spent_budget_stops_releases(shard) -> None:
    client, net, start = client_and_net(shard, privacy={**LOCAL_DP, "epsilon": 4.0, "noise_multiplier": 3.0},
                                        local_epochs=1)
    while client.can_release():
        client.release(net, start)
    assert 2 <= client.steps <= 40 and client.epsilon() <= 4.0 < client.accountant.epsilon_after(client.dp_steps)
    spent, history = client.epsilon(), client.accountant.history
    with pytest.raises(PrivacyBudgetExhausted, match="epsilon budget 4 reached"):
        client.release(net, start)
    assert client.epsilon() == spent and client.accountant.history == history  # a refusal spends nothing


def test_state_survives_a_restart(shard) -> None:
    client, net, start = client_and_net(shard, privacy=LOCAL_DP)
    client.send(client.release(net, start), 10_000)
    again, _, _ = client_and_net(shard, privacy=LOCAL_DP)
    again.load_state(client.state_dict())
    assert again.steps == 1 and again.accountant.history == client.accountant.history
    assert again.epsilon() == client.epsilon() > 0
    assert np.array_equal(again.compressor.residual, client.compressor.residual)
    off, _, _ = client_and_net(shard)
    off.load_state(client.state_dict())  # an off node keeps no spending, whatever a file says
    assert off.accountant is None and off.epsilon() is None


@pytest.mark.parametrize("privacy", [{"preset": "off"}, {"preset": "local-dp", "epsilon": 4.0}])
def test_a_node_without_records_has_a_client_that_never_spends(privacy: dict) -> None:
    """A node with no [data] source follows and verifies the chain; its client used to fail to
    be built ("need records and epochs >= 1"), and the daemon with it."""

    s = FLSettings.from_app_state({"privacy": privacy})
    client = Client(s, np.zeros((0, 64), np.float32), np.zeros(0, np.int64), 100, np.random.default_rng(0))
    assert (client.sample_rate, client.dp_steps, client.epsilon()) == (0.0, 0, None)
