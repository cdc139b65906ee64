"""ModelUpdate: signed, content-addressed model updates, parsed strictly from untrusted peers."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from gossip.codec import DecodeError, unpack
from gossip.crypto import sha256
from learning.compression import densify, to_wire
from node.fl.update import ModelUpdate
from tests.consensus.helpers import CHAIN, IDS, KEYS
from tests.node.helpers import BASE, make_update

DIM = 40
DELTA = np.linspace(-1.0, 1.0, DIM, dtype=np.float32)


@pytest.fixture
def update() -> ModelUpdate:
    return make_update(KEYS[0], DELTA, seq=7, base_height=3, samples=120, loss=0.75, topk=0.25, dtype="float16")


def wire(u: ModelUpdate) -> list:
    return unpack(u.encode())


def test_signed_update_verifies(update: ModelUpdate) -> None:
    assert update.verify_signature()
    assert not replace(update, signature=b"").verify_signature()
    assert not replace(update, signature=KEYS[1].sign(update.signed_bytes())).verify_signature()
    assert not replace(update, sender=IDS[1]).verify_signature()


@pytest.mark.parametrize("field, value", [
    ("seq", 8), ("base_hash", sha256(b"other base")), ("base_height", 4), ("num_samples", 121), ("loss", 0.5),
])
def test_signature_covers_every_field(update: ModelUpdate, field: str, value: Any) -> None:
    assert not replace(update, **{field: value}).verify_signature()


def test_signature_covers_the_sparse_payload(update: ModelUpdate) -> None:
    other = make_update(KEYS[0], -DELTA, topk=0.25, dtype="float16")
    assert not replace(update, sparse=other.sparse).verify_signature()


def test_chain_id_is_part_of_the_signature(update: ModelUpdate) -> None:
    moved = replace(update, chain_id="another-chain")
    assert moved.signed_bytes() != update.signed_bytes()
    assert not moved.verify_signature()
    assert moved.signed(KEYS[0]).signature != update.signature


@pytest.mark.parametrize("field, value", [
    ("chain_id", "another-chain"), ("sender", IDS[1]), ("seq", 8), ("base_hash", sha256(b"x")), ("base_height", 4),
    ("num_samples", 121), ("loss", 0.5), ("signature", b"\x00" * 64),
])
def test_id_changes_with_any_field(update: ModelUpdate, field: str, value: Any) -> None:
    assert replace(update, **{field: value}).id != update.id


def test_id_is_the_hash_of_the_encoding(update: ModelUpdate) -> None:
    assert update.id == sha256(update.encode())
    assert make_update(KEYS[0], DELTA, topk=0.5).id != make_update(KEYS[0], DELTA, topk=0.25).id


def test_wire_round_trip(update: ModelUpdate) -> None:
    parsed = ModelUpdate.from_wire(wire(update), DIM)
    assert parsed.id == update.id and parsed.verify_signature()
    assert (parsed.chain_id, parsed.sender, parsed.seq, parsed.base_hash, parsed.base_height, parsed.num_samples,
            parsed.loss) == (CHAIN, IDS[0], 7, update.base_hash, 3, 120, 0.75)
    assert np.array_equal(parsed.dense(), densify(update.sparse))
    assert parsed.sparse.indices.size == 10


def test_integer_loss_is_accepted_as_float(update: ModelUpdate) -> None:
    obj = wire(update)
    obj[6] = 2
    parsed = ModelUpdate.from_wire(obj, DIM)
    assert parsed.loss == 2.0 and isinstance(parsed.loss, float)


def test_summary(update: ModelUpdate) -> None:
    s = update.summary()
    assert s["id"] == update.id.hex() and s["sender"] == IDS[0] and s["k"] == 10 and s["dtype"] == "float16"
    assert s["base_hash"] == BASE.hex() and s["num_samples"] == 120


def _set(i: int, value: Any):
    def mutate(obj: list) -> list:
        obj[i] = value
        return obj
    return mutate


def _sparse(i: int, value: Any):
    def mutate(obj: list) -> list:
        obj[7][i] = value
        return obj
    return mutate


MALFORMED = {
    "not a list": (lambda o: {"update": o}, "9-element array"),
    "too short": (lambda o: o[:8], "9-element array"),
    "too long": (lambda o: o + [b""], "9-element array"),
    "chain id not str": (_set(0, 5), "chain id or sender malformed"),
    "sender not node id": (_set(1, "node-1"), "chain id or sender malformed"),
    "sender upper case": (_set(1, IDS[0].upper()), "chain id or sender malformed"),
    "negative seq": (_set(2, -1), "non-negative ints"),
    "bool seq": (_set(2, True), "non-negative ints"),
    "float base height": (_set(4, 1.0), "non-negative ints"),
    "negative samples": (_set(5, -3), "non-negative ints"),
    "zero samples": (_set(5, 0), "trained on zero samples"),
    "short base hash": (_set(3, b"\x00" * 31), "base hash must be 32 bytes"),
    "base hash as text": (_set(3, "00" * 32), "base hash must be 32 bytes"),
    "nan loss": (_set(6, math.nan), "loss must be a finite number"),
    "infinite loss": (_set(6, -math.inf), "loss must be a finite number"),
    "bool loss": (_set(6, False), "loss must be a finite number"),
    "text loss": (_set(6, "0.5"), "loss must be a finite number"),
    "signature as text": (_set(8, "sig"), "signature must be bin"),
    "sparse not a list": (_set(7, b"sparse"), "invalid sparse update"),
    "dim above the model": (_sparse(0, DIM + 1), "dim must be an integer in [1, 40]"),
    "unknown dtype": (_sparse(1, "bfloat16"), "dtype must be one of"),
    "zero scale": (_sparse(2, 0.0), "scale must be a finite positive float"),
    "nan scale": (_sparse(2, math.nan), "scale must be a finite positive float"),
    "truncated index varint": (_sparse(3, b"\x01\x80"), "truncated"),
    "non-canonical index varint": (_sparse(3, b"\x81\x00\x01"), "not canonical"),
    "index out of range": (_sparse(3, bytes([1, DIM - 2])), "not within [0, dim=40)"),
    "more indices than values": (_sparse(3, b"\x00\x00\x00"), "value bytes"),
    "value length": (_sparse(4, b"\x00" * 3), "value bytes"),
    "nan value": (_sparse(4, np.array([np.nan, 1.0], "<f4").tobytes()), "not all finite"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_from_wire_rejects_each_malformed_field(name: str) -> None:
    u = make_update(KEYS[0], DELTA, topk=0.05, dtype="float32")  # two coordinates kept
    mutate, message = MALFORMED[name]
    with pytest.raises(DecodeError, match=re.escape(message)):
        ModelUpdate.from_wire(mutate(wire(u)), DIM)


def test_sparse_wire_is_the_compression_wire_form(update: ModelUpdate) -> None:
    assert wire(update)[7] == to_wire(update.sparse)
