"""Top-k sparsification with error feedback, quantised values, and a validated wire form.

A node sends only the k largest-magnitude coordinates of its update, their values in float32,
float16, int8 (with one scale per update) or as bare signs (``sign``: one bit each, times one
scale, the mean magnitude), and keeps everything it did not send - including the quantisation
error - in a residual that is added to its next update (error feedback, Seide et al. 2014; Stich
et al. 2018; Karimireddy et al. 2019 for signs). Nothing is lost, only delayed, which is why 1%
sparsity costs little accuracy.

The wire form is a fixed-order list ready for canonical msgpack:
``[dim, dtype, scale, indices_bytes, values_bytes]``. The indices travel as the gaps between
consecutive sorted indices (``i[0]``, then ``i[j] - i[j-1] - 1``), each an unsigned LEB128
varint: at the densities top-k uses the gaps are mostly below 128, so an index costs about one
byte instead of four, and an unsorted or repeated index cannot even be written. Values are
little-endian; ``sign`` values are bits, LSB first, set for a negative value, zero-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float16", "int8", "sign")
_NP = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}
"""Wire dtype of the byte-aligned value encodings (``sign`` packs bits, see :func:`_value_bytes`)."""
_F16_MAX = float(np.finfo(np.float16).max)
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)
_INT8_MAX = 127


@dataclass(frozen=True)
class SparseUpdate:
    """``dim``-long vector that is zero except at sorted ``indices``, where it is ``values * scale``."""

    indices: np.ndarray   # (k,) int32, strictly increasing, in [0, dim)
    values: np.ndarray    # (k,) of ``dtype`` (int8 -1/+1 for ``sign``)
    scale: float          # > 0; 1.0 for float32, and for float16 unless values exceed its range
    dtype: str            # one of DTYPES
    dim: int

    def decoded_values(self) -> np.ndarray:
        """The transmitted values as float32, after de-quantisation (exactly what receivers see)."""
        return self.values.astype(np.float32) * np.float32(self.scale)


def k_for(dim: int, fraction: float) -> int:
    """Number of coordinates to keep: ``round(fraction * dim)``, at least 1 and at most dim."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top-k fraction must be in (0, 1], got {fraction}")
    return min(dim, max(1, round(fraction * dim)))


def _quantise(v: np.ndarray, dtype: str) -> tuple[np.ndarray, float]:
    """Values in ``dtype`` and the scale to multiply them by; symmetric (max-abs) scaling."""
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if dtype == "float32":
        return v.astype(np.float32), 1.0
    if dtype == "float16":
        scale = 1.0 if peak <= _F16_MAX else peak / _F16_MAX
        return (v / np.float32(scale)).astype(np.float16), scale
    if dtype == "int8":
        # at least the smallest normal float32: a scale of subnormal values would round to zero on
        # the wire (the decoder refuses it), and values that small quantise to 0 either way
        scale = max(peak / _INT8_MAX, _F32_TINY) if peak > 0 else 1.0
        q = np.clip(np.rint(v / np.float32(scale)), -_INT8_MAX, _INT8_MAX)
        return q.astype(np.int8), scale
    if dtype == "sign":
        # the scale minimising ||v - scale * sign(v)||; zero counts as positive. At least the
        # smallest normal float32, so that it stays positive on the wire even for a zero vector
        mean = float(np.mean(np.abs(v), dtype=np.float64)) if v.size else 0.0
        return np.where(v < 0, np.int8(-1), np.int8(1)), max(mean, _F32_TINY)
    raise ValueError(f"unknown value dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def sparsify(vec: np.ndarray, k: int, dtype: str = "float16") -> SparseUpdate:
    """Keep the ``k`` largest-magnitude coordinates of ``vec`` (selection in O(dim), no loops)."""
    v = np.asarray(vec, dtype=np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"expected a non-empty 1-D vector, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot compress a vector holding NaN or infinity")
    dim = v.size
    if not 1 <= k <= dim:
        raise ValueError(f"k must be in [1, {dim}], got {k}")
    idx = np.arange(dim) if k == dim else np.argpartition(np.abs(v), dim - k)[dim - k:]
    idx = np.sort(idx).astype(np.int32)
    values, scale = _quantise(v[idx], dtype)
    return SparseUpdate(idx, values, float(scale), dtype, dim)


def densify(update: SparseUpdate) -> np.ndarray:
    """The full float32 vector an update stands for."""
    out = np.zeros(update.dim, dtype=np.float32)
    out[update.indices] = update.decoded_values()
    return out


class ErrorFeedback:
    """A node's compressor: top-k of (update + residual); the residual keeps what was not sent.

    ``residual += delta - decoded(transmitted)`` is taken *after* quantisation, so rounding to
    float16/int8 is fed back too, and the running sum of what was transmitted plus the residual
    always equals the running sum of the dense updates. With ``enabled=False`` the compressor
    forgets what it drops (plain top-k), which is the ablation baseline.
    """

    def __init__(self, dim: int, fraction: float = 0.01, dtype: str = "float16", enabled: bool = True) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown value dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.dim = int(dim)
        self.k = k_for(self.dim, fraction)
        self.dtype = dtype
        self.enabled = enabled
        self.residual = np.zeros(self.dim, dtype=np.float32)

    def compress(self, delta: np.ndarray) -> SparseUpdate:
        """Compress ``delta`` (d,) and update the residual."""
        d = np.asarray(delta, dtype=np.float32)
        if d.shape != (self.dim,):
            raise ValueError(f"update has shape {d.shape}, compressor expects ({self.dim},)")
        corrected = d + self.residual if self.enabled else d
        update = sparsify(corrected, self.k, self.dtype)
        if self.enabled:
            self.residual = corrected
            self.residual[update.indices] -= update.decoded_values()
        return update


# ----------------------------------------------------------------------------- wire form

_VARINT_MAX = 5
"""Longest varint accepted: 35 bits hold any index gap below 2^31."""


def _gaps(indices: np.ndarray) -> np.ndarray:
    """``i[0]`` then ``i[j] - i[j-1] - 1`` as int64; raises if the indices are not strictly increasing
    from 0 (such a vector has no wire form)."""
    idx = np.asarray(indices, dtype=np.int64)
    gaps = np.diff(idx, prepend=-1) - 1
    if gaps.size and gaps.min() < 0:
        raise ValueError("indices must be strictly increasing and non-negative")
    return gaps


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes of each non-negative value as an unsigned LEB128 varint (7 bits per byte)."""
    n = np.ones(values.shape, dtype=np.int64)
    for bits in range(7, 7 * _VARINT_MAX, 7):
        n += values >= (1 << bits)
    return n


def encode_indices(indices: np.ndarray) -> bytes:
    """Sorted indices as LEB128 varints of their gaps (vectorised, no Python loop per index)."""
    gaps = _gaps(indices)
    lengths = _varint_lengths(gaps)
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(gaps.size), lengths)
    pos = np.arange(int(lengths.sum())) - starts[owner]
    more = pos < lengths[owner] - 1
    out = ((gaps[owner] >> (7 * pos)) & 0x7F) | (more.astype(np.int64) << 7)
    return out.astype(np.uint8).tobytes()


def decode_indices(raw: bytes, dim: int) -> np.ndarray:
    """Inverse of :func:`encode_indices` for an untrusted peer: int32 indices, strictly increasing,
    all below ``dim``. Rejects a truncated last varint, one longer than :data:`_VARINT_MAX` bytes, a
    non-canonical one (a zero final byte after continuation bytes: two encodings of one number would
    give one update two ids) and an index at or past ``dim``."""
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size == 0:
        raise _fail("holds 0 indices, must be at least 1")
    if b.size > _VARINT_MAX * dim:
        raise _fail(f"{b.size} index bytes cannot hold at most {dim} indices")
    if b[-1] & 0x80:
        raise _fail("index varints are truncated (last byte continues)")
    ends = np.flatnonzero(b < 0x80)
    lengths = np.diff(ends, prepend=-1)
    if lengths.max() > _VARINT_MAX:
        raise _fail(f"an index varint is longer than {_VARINT_MAX} bytes")
    if np.any(b[ends[lengths > 1]] == 0):
        raise _fail("an index varint is not canonical (zero final byte)")
    if ends.size > dim:
        raise _fail(f"holds {ends.size} indices, must be 1..{dim}")
    starts = ends - lengths + 1
    pos = np.arange(b.size) - np.repeat(starts, lengths)
    gaps = np.add.reduceat((b & 0x7F).astype(np.int64) << (7 * pos), starts)
    idx = np.cumsum(gaps + 1) - 1
    if idx[-1] >= dim:
        raise _fail(f"index {int(idx[-1])} is not within [0, dim={dim})")
    return idx.astype(np.int32)


def _value_bytes(k: int, dtype: str) -> int:
    """Bytes of ``k`` values on the wire."""
    return (k + 7) // 8 if dtype == "sign" else k * _NP[dtype].itemsize


def _encode_values(update: SparseUpdate) -> bytes:
    if update.dtype == "sign":
        return np.packbits(update.values < 0, bitorder="little").tobytes()
    return update.values.astype(_NP[update.dtype]).tobytes()


def _decode_values(raw: bytes, k: int, dtype: str) -> np.ndarray:
    """``k`` values of ``dtype`` from ``raw`` (length already checked); signs must be zero-padded,
    so that one update has one encoding."""
    if dtype == "sign":
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
        if bits[k:].any():
            raise _fail("sign padding bits must be zero")
        return np.where(bits[:k] == 1, np.int8(-1), np.int8(1))
    return np.frombuffer(raw, dtype=_NP[dtype]).astype(_NP[dtype].newbyteorder("="))


def to_wire(update: SparseUpdate) -> list:
    """``[dim, dtype, scale, indices_bytes, values_bytes]``: plain ints, str, float and bytes."""
    return [int(update.dim), update.dtype, float(update.scale), encode_indices(update.indices),
            _encode_values(update)]


def _fail(reason: str) -> ValueError:
    return ValueError(f"invalid sparse update: {reason}")


def from_wire(obj: object, max_dim: int) -> SparseUpdate:
    """Parse and fully validate a wire-form update from an untrusted peer.

    Checks shape and types, ``1 <= dim <= max_dim``, the dtype, a finite positive scale, the index
    varints (:func:`decode_indices`), the value byte length, and finite decoded values; raises
    ``ValueError`` naming the first problem found. Decoding is integer arithmetic and exact
    conversions only, so every verifier gets the same vector to the bit.
    """
    if not isinstance(obj, (list, tuple)) or len(obj) != 5:
        raise _fail("expected a list [dim, dtype, scale, indices, values]")
    dim, dtype, scale, raw_idx, raw_val = obj
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= max_dim:
        raise _fail(f"dim must be an integer in [1, {max_dim}], got {dim!r}")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(scale, float) or not np.isfinite(np.float32(scale)) or not np.float32(scale) > 0:
        raise _fail(f"scale must be a finite positive float, got {scale!r}")
    if not isinstance(raw_idx, (bytes, bytearray)) or not isinstance(raw_val, (bytes, bytearray)):
        raise _fail("indices and values must be bytes")
    idx = decode_indices(bytes(raw_idx), dim)
    k = idx.size
    if len(raw_val) != _value_bytes(k, dtype):
        raise _fail(f"{k} indices need {_value_bytes(k, dtype)} value bytes, got {len(raw_val)}")
    values = _decode_values(bytes(raw_val), k, dtype)
    wide = values.astype(np.float64)
    if not np.all(np.isfinite(wide)) or np.abs(wide).max() * float(np.float32(scale)) > _F32_MAX:
        raise _fail("values are not all finite once scaled")
    return SparseUpdate(idx, values, float(scale), dtype, dim)


def _uint_size(n: int) -> int:
    """msgpack bytes for a non-negative int."""
    return 1 if n < 128 else 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5 if n < 1 << 32 else 9


def _bin_size(n: int) -> int:
    """msgpack bytes for a bin of ``n`` bytes (header plus payload)."""
    return n + (2 if n < 1 << 8 else 3 if n < 1 << 16 else 5)


def wire_size(update: SparseUpdate) -> int:
    """Exact bytes of ``to_wire(update)`` encoded as canonical msgpack.

    Computed from the msgpack format (fixarray, int, fixstr, float64, two bins) and the varint
    lengths instead of encoding, so byte accounting costs the simulator almost nothing.
    """
    k = len(update.indices)
    index_bytes = int(_varint_lengths(_gaps(update.indices)).sum())
    return (1 + _uint_size(update.dim) + 1 + len(update.dtype) + 9
            + _bin_size(index_bytes) + _bin_size(_value_bytes(k, update.dtype)))


def dense_bytes(dim: int) -> int:
    """Payload bytes of the same update sent dense as float32: the baseline for ratios."""
    return 4 * int(dim)
