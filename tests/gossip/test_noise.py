"""The Noise XX implementation against the spec's published test vectors, and its failure modes."""

from __future__ import annotations

import pytest

from gossip.noise import CipherState, NoiseError, XXHandshake, generate_private

# The Noise_XX_25519_ChaChaPoly_SHA256 vector of the Noise test-vector set ("cacophony").
VECTOR = {
    "prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce2b65285"
         "e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c412f8a0db50f"
         "8814c7194e83f23dbd8d162c9326ad"),
        ("462e20412e20486179656b",
         "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be0865b57f"
         "58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030"),
        ("4361726c204d656e676572", "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df"),
        ("4a65616e2d426170746973746520536179",
         "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"),
        ("457567656e2042f6686d20766f6e2042617765726b",
         "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"),
    ],
}


def test_matches_the_published_vector() -> None:
    h = bytes.fromhex
    prologue = h(VECTOR["prologue"])
    alice = XXHandshake(True, h(VECTOR["init_static"]), prologue, h(VECTOR["init_ephemeral"]))
    bob = XXHandshake(False, h(VECTOR["resp_static"]), prologue, h(VECTOR["resp_ephemeral"]))
    messages = [(h(p), h(c)) for p, c in VECTOR["messages"]]
    for i, (payload, ciphertext) in enumerate(messages[:3]):
        writer, reader = (alice, bob) if i % 2 == 0 else (bob, alice)
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
    assert alice.handshake_hash == bob.handshake_hash == h(VECTOR["handshake_hash"])
    a_send, a_recv = alice.split()
    b_send, b_recv = bob.split()
    # After the handshake the responder speaks first in the vector's alternation.
    for i, (payload, ciphertext) in enumerate(messages[3:]):
        send, recv = (b_send, a_recv) if i % 2 == 0 else (a_send, b_recv)
        assert send.encrypt(b"", payload) == ciphertext
        assert recv.decrypt(b"", ciphertext) == payload


def _pair() -> tuple[XXHandshake, XXHandshake]:
    alice, bob = XXHandshake(True, generate_private()), XXHandshake(False, generate_private())
    bob.read_message(alice.write_message(b""))
    alice.read_message(bob.write_message(b""))
    bob.read_message(alice.write_message(b""))
    return alice, bob


def test_transport_rejects_tampered_replayed_and_reordered_messages() -> None:
    alice, bob = _pair()
    send, _ = alice.split()
    _, recv = bob.split()
    one, two = send.encrypt(b"", b"one"), send.encrypt(b"", b"two")
    with pytest.raises(NoiseError):
        recv.decrypt(b"", two)  # reordered: nonce 0 expected
    assert recv.decrypt(b"", one) == b"one"
    with pytest.raises(NoiseError):
        recv.decrypt(b"", one)  # replayed
    tampered = bytearray(two)
    tampered[0] ^= 1
    with pytest.raises(NoiseError):
        recv.decrypt(b"", bytes(tampered))
    assert recv.decrypt(b"", two) == b"two"  # a failure does not advance the nonce


def test_handshake_detects_an_altered_message_and_wrong_turns() -> None:
    alice, bob = XXHandshake(True, generate_private()), XXHandshake(False, generate_private())
    first = bytearray(alice.write_message(b"hello"))
    first[-1] ^= 1  # the cleartext payload of message 1 is hashed into the transcript
    bob.read_message(bytes(first))
    with pytest.raises(NoiseError):
        alice.read_message(bob.write_message(b""))
    with pytest.raises(NoiseError):
        alice.write_message(b"")  # still waiting to read
    with pytest.raises(NoiseError):
        alice.read_message(b"short")
    with pytest.raises(NoiseError):
        CipherState(b"k" * 32).decrypt(b"", b"x" * 10)


def test_low_order_public_key_is_refused() -> None:
    bob = XXHandshake(False, generate_private())
    with pytest.raises(NoiseError):
        bob.read_message(bytes(32))  # the all-zero point
        bob.write_message(b"")
