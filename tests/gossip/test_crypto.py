"""Node ids and Ed25519 signature checks: what every frame, transaction and update relies on."""

from __future__ import annotations

from gossip.crypto import KeyPair, is_node_id, verify


def test_node_ids_and_signatures_refuse_every_malformed_input() -> None:
    key = KeyPair.generate()
    sig = key.sign(b"message")
    assert is_node_id(key.node_id) and verify(key.node_id, b"message", sig)
    for bad in (key.node_id.upper(), key.node_id[:-1], key.node_id + "0", key.node_id[:-1] + "g",
                key.node_id[:-1] + "\n", key.node_id[:-1] + "\u0660", bytes.fromhex(key.node_id), None, 7):
        assert not is_node_id(bad) and not verify(bad, b"message", sig), bad  # type: ignore[arg-type]
    assert not verify(key.node_id, b"other message", sig)
    assert not verify(key.node_id, b"message", sig[:-1]) and not verify(key.node_id, b"message", "x" * 64)
    assert not verify(KeyPair.generate().node_id, b"message", sig)
    assert not verify("00" * 32, b"message", sig)  # a point of small order, not a key
