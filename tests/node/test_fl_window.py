"""The FL window record's chain state: the feature clip's witnesses (final blocks name each recent
sender's last accepted update, and a round's rule gets the norms of those updates' bodies:
``node/fl/witness.py``) and the restoring of records written by older versions."""

from __future__ import annotations

import numpy as np
import pytest

from node.fl.round import Payload
from tests.node.helpers import admit_all, ctx, round_updates


def decode(payload: bytes) -> Payload:
    return Payload.decode(payload, 1 << 20)


async def test_accepted_updates_witness_their_senders_for_the_feature_clip(new_app, monkeypatch) -> None:
    """Final blocks name each sender's last accepted update (a record every node derives and
    restores); a round's rule gets their feature-group norms, computed from the bodies, for the
    senders none of whose updates it accepts. A node that holds a witness's body nowhere cannot
    re-run the round: unavailability, nobody's fault."""
    from learning.round import feature_norms
    from node.fl.window import Window

    proposer, verifier = new_app(0), new_app(1)
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    assert (await verifier.verify_payload(ctx(), payload)).ok
    for app in (proposer, verifier):
        app.finalize_block(ctx(), payload)
    p = decode(payload)
    expected = {c.sender: (1, c.update_id) for c in p.considered if c.accepted}
    assert expected and proposer.window.witness == verifier.window.witness == expected
    assert Window.decode(verifier.window.encode()).witness == expected
    # the nodes that ran the round kept the rows of the updates it accepted: none is decoded again
    for app in (proposer, verifier):
        assert set(app._witness_norms) == {uid for _, uid in expected.values()} and app._round_norms == {}
    monkeypatch.setattr(verifier, "decode_update", lambda raw: pytest.fail("a witness body was decoded again"))
    rows = verifier.witness_here([updates[0]])
    by_id = {u.id: u for u in updates}
    order = sorted(expected)
    assert np.array_equal(rows.norms, np.stack([feature_norms(by_id[expected[s][1]].dense()[None], verifier.groups)[0]
                                                for s in order]))
    assert rows.owner.tolist() == [order.index(updates[0].sender) if updates[0].sender in expected else -1]
    lacking = new_app(2)
    lacking.window.witness = dict(expected)
    with pytest.raises(LookupError, match="witness"):
        lacking.witness_here([])


def test_a_window_record_from_before_holds_restores_with_nobody_held() -> None:
    """A data dir written before holds existed stores the window in three fields: the node
    restores it, holding nobody, instead of refusing to start; a damaged record still fails."""
    from gossip.codec import DecodeError, pack
    from node.fl.window import Window

    old = pack([[[0, b"\x01" * 32], [1, b"\x02" * 32]], [["a", 1, b"\x03" * 32]], [["b", 0]]])
    window = Window.decode(old)
    assert window.recent == {0: b"\x01" * 32, 1: b"\x02" * 32}
    assert window.claims == {("a", 1): b"\x03" * 32} and window.punished == {("b", 0)}
    assert window.held == {}
    assert Window.decode(pack([[], [], [], [["b", 3]]])).held == {"b": 3}   # before witnesses: four fields
    assert Window.decode(pack([[], [], [], []])).witness == {}
    with pytest.raises(DecodeError, match="corrupt"):
        Window.decode(pack([[[0, b"\x01" * 32]], []]))


async def test_final_blocks_record_accepted_scores_and_the_next_round_weighs_senders_by_them(new_app) -> None:
    """The standing record is chain state: every node derives it from the scores a final block
    records (the proposer's floats, the same on every node; ``learning.standing`` does the
    arithmetic), restores it, and
    the next proposal's weights are samples x discount x standing, which a verifier holding the
    same record accepts and one holding another record cannot agree with."""
    from learning.standing import FLOOR, factor, standing_after
    from node.fl.window import Window

    from dataclasses import replace

    from tests.node.helpers import SETTINGS

    on = replace(SETTINGS, standing=True)
    proposer, verifier = new_app(0, settings=on), new_app(1, settings=on)
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    for app in (proposer, verifier):
        app.finalize_block(ctx(), payload)
    p = decode(payload)
    expected = standing_after({}, [c.sender for c in p.considered], [c.accepted for c in p.considered],
                              [c.score for c in p.considered], 1)
    assert expected and proposer.window.standing == verifier.window.standing == expected
    assert Window.decode(verifier.window.encode()).standing == expected
    # a record that puts one sender at the floor (as if its last accepted updates sat far above their rounds)
    doubted = updates[0].sender
    for app in (proposer, verifier):
        app.window.standing = {**app.window.standing, doubted: ((0, 0.5), (1, 0.4))}
    nxt = round_updates(proposer)
    admit_all([proposer, verifier], nxt)
    second = await proposer.prepare_payload(ctx(2))
    weights = {c.sender: c.weight for c in decode(second).considered}
    assert factor([0.5, 0.4]) == FLOOR
    assert weights[doubted] == nxt[0].num_samples * FLOOR and weights[nxt[1].sender] == nxt[1].num_samples
    assert (await verifier.verify_payload(ctx(2), second)).ok
    stranger = new_app(2, settings=on)
    admit_all([stranger], updates)
    stranger.finalize_block(ctx(), payload)                  # the record without the doubted sender's scores
    admit_all([stranger], nxt)
    verdict = await stranger.verify_payload(ctx(2), second)
    assert not verdict.ok and "not agreed" in verdict.reason


def test_a_window_record_from_before_standing_restores_with_full_standing() -> None:
    """A record of five fields (before standing) gives everybody full standing; a standing score
    that is not a float is a corrupt record."""
    from gossip.codec import DecodeError, pack
    from node.fl.window import Window

    assert Window.decode(pack([[], [], [], [], []])).standing == {}
    assert Window.decode(pack([[], [], [], [], [], [["a", [[3, 0.9], [4, 0.5]]]]])).standing == {"a": ((3, 0.9), (4, 0.5))}
    for bad in ([["a", [[3, 1]]]], [["a", [[3]]]], [["a", 5]]):
        with pytest.raises(DecodeError, match="corrupt"):
            Window.decode(pack([[], [], [], [], [], bad]))
