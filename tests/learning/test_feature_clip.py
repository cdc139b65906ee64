"""The default rule's feature clip, the model layout it reads and the exact group norms it uses."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.aggregation.exact import group_norms
from learning.models import build_model, feature_groups, num_params


def test_group_norms_match_float64_and_do_not_depend_on_the_order_of_entries() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5000)).astype(np.float32)
    groups = rng.integers(0, 40, 5000)
    norms = group_norms(x, groups, 40)
    naive = np.sqrt(np.stack([np.bincount(groups, weights=row.astype(np.float64) ** 2, minlength=40) for row in x]))
    np.testing.assert_allclose(norms, naive, rtol=1e-3)   # values rounded to 2^-17 of each row's peak
    perm = rng.permutation(5000)
    assert group_norms(x[:, perm], groups[perm], 40).tobytes() == norms.tobytes()


def _round(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """12 honest updates on entries 0-149 (groups 0-14), steps in one common direction under a
    larger spread; 8 alike but for a push on entries 190-199 (group 19), which no honest update
    moves: what a backdoor's trigger weights look like."""
    x = np.zeros((20, 200), dtype=np.float32)
    x[:, :150] = 0.5 * rng.standard_normal(150) + rng.standard_normal((20, 150))
    x[12:, 190:] = 1.0
    return x, np.arange(200) // 10


def test_a_push_on_a_feature_most_updates_leave_alone_is_clipped_away() -> None:
    x, groups = _round(np.random.default_rng(1))
    off = aggregate("clustering", x, np.ones(20), seed=0, groups=groups, feature_clip=0.0)
    on = aggregate("clustering", x, np.ones(20), seed=0, groups=groups)
    assert on.accepted[12:].any() and off.accepted.tolist() == on.accepted.tolist()
    assert (off.vector[190:] > 0).all() and (on.vector[190:] == 0).all()
    # nobody is rejected for it, but what the clip takes makes the pushers the most suspicious
    assert on.scores[12:].min() > max(1.0, on.scores[:12].max())
    assert off.scores[12:].min() < off.scores[:12].max()
    # what most updates move passes nearly untouched (a group above twice its median norm is rare)
    assert np.linalg.norm(on.vector[:150] - off.vector[:150]) < 0.1 * np.linalg.norm(off.vector[:150])


def test_without_a_layout_there_is_nothing_to_clip_by() -> None:
    x, _ = _round(np.random.default_rng(2))
    plain = aggregate("clustering", x, np.ones(20), seed=0)
    assert plain.vector.tobytes() == aggregate("clustering", x, np.ones(20), seed=0, feature_clip=0.0).vector.tobytes()
    assert (plain.vector[190:] > 0).all()


@pytest.mark.parametrize("groups", [np.arange(199), np.arange(200) * 1.0, np.full(200, 200), np.full(200, -1)])
def test_a_bad_layout_is_refused(groups: np.ndarray) -> None:
    x, _ = _round(np.random.default_rng(3))
    with pytest.raises(ValueError, match="group"):
        aggregate("clustering", x, np.ones(20), groups=groups)


def test_feature_clip_must_be_off_or_at_least_one() -> None:
    x, groups = _round(np.random.default_rng(4))
    with pytest.raises(ValueError, match="feature_clip"):
        aggregate("clustering", x, np.ones(20), groups=groups, feature_clip=0.5)


def test_layout_groups_the_weights_leaving_each_input_of_a_layer() -> None:
    net = build_model("tabular_mlp", (784,), 10)
    groups = feature_groups(net)
    assert groups.shape == (num_params(net),)
    first = groups[:64 * 784].reshape(64, 784)          # nn.Linear weight (out, in), row-major
    assert (first == np.arange(784)[None, :]).all()
    assert np.unique(groups).size == 784 + 1 + 64 + 1    # inputs of each layer, one per bias
    cnn = build_model("cnn", (1, 28, 28), 10)
    conv = next(cnn.module.parameters())
    assert conv.shape[1] == 1 and (feature_groups(cnn)[:conv.numel()] == 0).all()  # one input channel
