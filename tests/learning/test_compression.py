"""Top-k with error feedback, quantisation, wire validation, exact byte counts."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.compression import (
    DTYPES,
    ErrorFeedback,
    SparseUpdate,
    decode_indices,
    dense_bytes,
    densify,
    encode_indices,
    from_wire,
    k_for,
    sparsify,
    to_wire,
    wire_size,
)


def test_k_for() -> None:
    assert k_for(1000, 0.01) == 10
    assert k_for(10, 0.01) == 1
    assert k_for(10, 1.0) == 10
    with pytest.raises(ValueError):
        k_for(10, 0.0)


def test_sparsify_keeps_largest_magnitudes() -> None:
    v = np.array([0.1, -5.0, 0.3, 4.0, -0.2, 0.0], np.float32)
    u = sparsify(v, 2, "float32")
    assert u.indices.tolist() == [1, 3] and u.indices.dtype == np.int32
    assert densify(u).tolist() == [0, -5.0, 0, 4.0, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_error_feedback_conserves_the_sum(dtype: str, fraction: float) -> None:
    """sum(transmitted) + residual == sum(dense updates): nothing is lost, only delayed."""
    rng = np.random.default_rng(0)
    dim = 2000
    ef = ErrorFeedback(dim, fraction, dtype)
    dense_sum = np.zeros(dim, np.float64)
    sent_sum = np.zeros(dim, np.float64)
    for _ in range(30):
        delta = (rng.standard_normal(dim) * rng.exponential(1.0, dim)).astype(np.float32)
        update = ef.compress(delta)
        assert len(update.indices) == k_for(dim, fraction)
        dense_sum += delta
        sent_sum += densify(update)
    np.testing.assert_allclose(sent_sum + ef.residual, dense_sum, rtol=0, atol=1e-3)
    if fraction < 1.0:
        assert np.abs(ef.residual).max() > 0


def test_sign_sends_signs_times_the_mean_magnitude() -> None:
    u = sparsify(np.array([3.0, -1.0, 0.0, 2.0, -0.5], np.float32), 3, "sign")
    assert u.indices.tolist() == [0, 1, 3] and u.values.tolist() == [1, -1, 1]
    assert u.scale == pytest.approx(2.0)
    assert densify(u).tolist() == [2.0, -2.0, 0.0, 2.0, 0.0]
    # a (near) zero vector still has a positive scale that survives the wire, and sends ~nothing
    for tiny in (0.0, 1e-45):
        z = sparsify(np.full(800, tiny, np.float32), 800, "sign")
        assert from_wire(to_wire(z), max_dim=800).scale == z.scale and np.abs(densify(z)).max() < 1e-37


def test_quantisation_error_is_fed_back() -> None:
    ef = ErrorFeedback(4, 1.0, "int8")
    update = ef.compress(np.array([1.0, 0.5, 0.333, -0.01], np.float32))
    assert update.scale == pytest.approx(1.0 / 127)
    np.testing.assert_allclose(densify(update) + ef.residual, [1.0, 0.5, 0.333, -0.01], atol=1e-7)
    assert np.abs(ef.residual).max() > 0          # rounding to int8 left something behind
    assert np.abs(ef.residual).max() <= 0.5 / 127 + 1e-7


def test_without_error_feedback_the_rest_is_dropped() -> None:
    ef = ErrorFeedback(100, 0.1, "float32", enabled=False)
    ef.compress(np.ones(100, np.float32))
    assert not ef.residual.any()


def test_float16_scales_values_beyond_its_range() -> None:
    u = sparsify(np.array([1e6, -2e5, 1.0], np.float32), 3, "float16")
    assert u.scale > 1.0 and np.isfinite(u.values.astype(np.float32)).all()
    np.testing.assert_allclose(densify(u), [1e6, -2e5, 1.0], rtol=1e-3, atol=u.scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wire_round_trip_and_exact_size(dtype: str) -> None:
    rng = np.random.default_rng(1)
    for dim, k in ((50, 3), (300, 100), (300, 300), (70_000, 700), (200_000, 20_000), (2**21, 3)):
        u = sparsify(rng.standard_normal(dim).astype(np.float32), k, dtype)
        wire = to_wire(u)
        assert all(isinstance(x, (int, str, float, bytes)) for x in wire)
        packed = msgpack.packb(wire, use_bin_type=True, use_single_float=False)
        assert wire_size(u) == len(packed)
        back = from_wire(msgpack.unpackb(packed, raw=False), max_dim=dim)
        assert back.dim == dim and back.dtype == dtype and back.scale == u.scale
        assert np.array_equal(back.indices, u.indices) and np.array_equal(back.values, u.values)
        assert np.array_equal(densify(back), densify(u))
    assert dense_bytes(1000) == 4000


def _valid_wire() -> list:
    return to_wire(sparsify(np.arange(1, 11, dtype=np.float32), 4, "float16"))


@pytest.mark.parametrize("mutate,reason", [
    (lambda w: w[:4], "expected a list"),
    (lambda w: [11] + w[1:], "dim must be"),
    (lambda w: [True] + w[1:], "dim must be"),
    (lambda w: w[:1] + ["float64"] + w[2:], "dtype must be"),
    (lambda w: w[:2] + [float("nan")] + w[3:], "scale"),
    (lambda w: w[:2] + [0.0] + w[3:], "scale"),
    (lambda w: w[:2] + [1] + w[3:], "scale"),
    (lambda w: w[:3] + [b""] + [b""], "holds 0 indices"),
    (lambda w: w[:3] + [w[3][:-1]] + w[4:], "value bytes"),         # one index fewer than values
    (lambda w: w[:4] + [w[4] + b"\x00\x00"], "value bytes"),
    (lambda w: w[:3] + [bytes([6, 0, 0, 1])] + w[4:], "not within"),   # 6, 7, 8, 10
    (lambda w: w[:3] + [bytes([10, 0, 0, 0])] + w[4:], "not within"),
    (lambda w: w[:3] + [bytes([6, 0, 0, 0x80])] + w[4:], "truncated"),
    (lambda w: w[:3] + [bytes([6, 0, 0, 0x80, 0])] + w[4:], "not canonical"),   # 0 written in 2 bytes
    (lambda w: w[:3] + [bytes([0x86, 0, 0, 0, 0])] + w[4:], "not canonical"),   # 6 written as 0x86 0x00
    (lambda w: w[:3] + [bytes([0x80] * 5 + [1, 0, 0, 0])] + w[4:], "longer than 5"),
    (lambda w: w[:3] + [bytes(51)] + w[4:], "cannot hold"),          # more than 5 bytes per coordinate
    (lambda w: w[:3] + [bytes(11)] + w[4:], "holds 11 indices"),
    (lambda w: w[:4] + [np.array([1, np.nan, 2, 3], "<f2").tobytes()], "finite"),
    (lambda w: w[:4] + [np.array([1, np.inf, 2, 3], "<f2").tobytes()], "finite"),
    (lambda w: w[:3] + ["text"] + w[4:], "must be bytes"),
    (lambda w: w[:3] + [bytearray(w[3])] + w[4:], None),             # bytearray is accepted
])
def test_from_wire_rejects(mutate, reason: str) -> None:
    assert from_wire(_valid_wire(), max_dim=10).indices.tolist() == [6, 7, 8, 9]
    if reason is None:
        assert from_wire(mutate(_valid_wire()), max_dim=10).indices.tolist() == [6, 7, 8, 9]
        return
    with pytest.raises(ValueError, match=reason):
        from_wire(mutate(_valid_wire()), max_dim=10)


def _sign_wire(k: int, bits: bytes) -> list:
    return [10, "sign", 1.0, bytes([0] * k), bits]


def test_sign_values_must_be_canonically_padded() -> None:
    assert from_wire(_sign_wire(3, b"\x05"), max_dim=10).values.tolist() == [-1, 1, -1]
    with pytest.raises(ValueError, match="padding bits"):
        from_wire(_sign_wire(3, b"\x0d"), max_dim=10)
    with pytest.raises(ValueError, match="value bytes"):
        from_wire(_sign_wire(9, b"\x05"), max_dim=10)


def test_index_varints() -> None:
    """Gaps below 128 take one byte; larger ones 7 bits per byte; the encoder refuses what has no
    wire form (unsorted or repeated indices), which is why a decoder can never produce them."""
    assert encode_indices(np.array([0, 1, 2])) == b"\x00\x00\x00"
    assert encode_indices(np.array([127, 128, 16_511])) == bytes([0x7F, 0x00, 0xFE, 0x7F])
    assert encode_indices(np.array([300])) == bytes([0xAC, 0x02])
    assert decode_indices(bytes([0xAC, 0x02, 0x00]), 302).tolist() == [300, 301]
    for bad in ([3, 1], [2, 2], [-1, 4]):
        with pytest.raises(ValueError, match="strictly increasing"):
            encode_indices(np.array(bad))
        with pytest.raises(ValueError, match="strictly increasing"):
            to_wire(SparseUpdate(np.array(bad, np.int32), np.ones(2, np.float32), 1.0, "float32", 10))


@settings(max_examples=200, deadline=None)
@given(dim=st.integers(1, 3000), data=st.data(), dtype=st.sampled_from(DTYPES))
def test_wire_round_trip_any_index_set(dim: int, data: st.DataObject, dtype: str) -> None:
    idx = sorted(data.draw(st.sets(st.integers(0, dim - 1), min_size=1, max_size=min(dim, 300))))
    values = data.draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=len(idx), max_size=len(idx)))
    vec = np.zeros(dim, np.float32)
    vec[idx] = values
    u = sparsify(vec, len(idx), dtype)
    packed = msgpack.packb(to_wire(u), use_bin_type=True, use_single_float=False)
    assert wire_size(u) == len(packed)
    back = from_wire(msgpack.unpackb(packed, raw=False), max_dim=dim)
    assert np.array_equal(back.indices, u.indices) and np.array_equal(densify(back), densify(u))
    assert msgpack.packb(to_wire(back), use_bin_type=True, use_single_float=False) == packed


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=0, max_size=40), dim=st.integers(1, 2**31 - 1))
def test_decode_indices_accepts_only_canonical_input(raw: bytes, dim: int) -> None:
    """Any bytes either decode to indices that re-encode to exactly those bytes, or are refused
    with a ValueError: one update has one encoding, so one id."""
    try:
        idx = decode_indices(raw, dim)
    except ValueError as exc:
        assert str(exc).startswith("invalid sparse update")
        return
    assert idx.dtype == np.int32 and idx[-1] < dim and np.all(np.diff(idx) > 0)
    assert encode_indices(idx) == raw


def test_from_wire_rejects_oversize_and_overflowing_scale() -> None:
    wire = _valid_wire()
    with pytest.raises(ValueError, match="dim must be"):
        from_wire(wire, max_dim=9)
    int8 = to_wire(SparseUpdate(np.array([0], np.int32), np.array([127], np.int8), 1e37, "int8", 3))
    with pytest.raises(ValueError, match="finite"):
        from_wire(int8, max_dim=3)


def test_compress_rejects_bad_input() -> None:
    ef = ErrorFeedback(5, 0.5)
    with pytest.raises(ValueError, match="shape"):
        ef.compress(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ef.compress(np.array([0, 1, np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="dtype"):
        ErrorFeedback(5, 0.5, "bfloat16")


def test_subnormal_values_give_an_update_the_decoder_accepts() -> None:
    """int8's scale (peak / 127) of float32's smallest subnormal is no float32 at all; an honest
    node must still send an update its peers accept."""
    vec = np.array([1.401298464324817e-45, 0.0], dtype=np.float32)
    for dtype in DTYPES:
        update = sparsify(vec, 1, dtype)
        assert np.array_equal(densify(from_wire(to_wire(update), 2)) != 0, densify(update) != 0)
