"""Top-k sparsification with error feedback, quantised values, and a validated wire form.

A node sends only the k largest-magnitude coordinates of its update, their values in float16
or int8 (with one scale per update), and keeps everything it did not send - including the
quantisation error - in a residual that is added to its next update (error feedback, Seide et
al. 2014; Stich et al. 2018). Nothing is lost, only delayed, which is why 1% sparsity costs
little accuracy. The wire form is a fixed-order list ready for canonical msgpack:
``[dim, dtype, scale, indices_bytes, values_bytes]`` with little-endian int32 indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float16", "int8")
_NP = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}
_F16_MAX = float(np.finfo(np.float16).max)
_F32_MAX = float(np.finfo(np.float32).max)
_INT8_MAX = 127


@dataclass(frozen=True)
class SparseUpdate:
    """``dim``-long vector that is zero except at sorted ``indices``, where it is ``values * scale``."""

    indices: np.ndarray   # (k,) int32, strictly increasing, in [0, dim)
    values: np.ndarray    # (k,) of ``dtype``
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
        scale = peak / _INT8_MAX if peak > 0 else 1.0
        q = np.clip(np.rint(v / np.float32(scale)), -_INT8_MAX, _INT8_MAX)
        return q.astype(np.int8), scale
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

def to_wire(update: SparseUpdate) -> list:
    """``[dim, dtype, scale, indices_bytes, values_bytes]``: plain ints, str, float and bytes."""
    return [int(update.dim), update.dtype, float(update.scale),
            update.indices.astype("<i4").tobytes(), update.values.astype(_NP[update.dtype]).tobytes()]


def _fail(reason: str) -> ValueError:
    return ValueError(f"invalid sparse update: {reason}")


def from_wire(obj: object, max_dim: int) -> SparseUpdate:
    """Parse and fully validate a wire-form update from an untrusted peer.

    Checks shape and types, ``1 <= dim <= max_dim``, the dtype, a finite positive scale, byte
    lengths, strictly increasing in-range indices, and finite decoded values; raises
    ``ValueError`` naming the first problem found.
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
    if len(raw_idx) % 4:
        raise _fail(f"index bytes ({len(raw_idx)}) not a multiple of 4")
    k = len(raw_idx) // 4
    if not 1 <= k <= dim:
        raise _fail(f"holds {k} indices, must be 1..{dim}")
    item = _NP[dtype].itemsize
    if len(raw_val) != k * item:
        raise _fail(f"{k} indices need {k * item} value bytes, got {len(raw_val)}")
    idx = np.frombuffer(raw_idx, dtype="<i4").astype(np.int32)
    if idx[0] < 0 or idx[-1] >= dim or np.any(np.diff(idx) <= 0):
        raise _fail("indices must be strictly increasing and within [0, dim)")
    values = np.frombuffer(raw_val, dtype=_NP[dtype]).astype(_NP[dtype].newbyteorder("="))
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

    Computed from the msgpack format (fixarray, int, fixstr, float64, two bins) instead of
    encoding, so byte accounting costs nothing in the simulator.
    """
    k = len(update.indices)
    return (1 + _uint_size(update.dim) + 1 + len(update.dtype) + 9
            + _bin_size(4 * k) + _bin_size(k * _NP[update.dtype].itemsize))


def dense_bytes(dim: int) -> int:
    """Payload bytes of the same update sent dense as float32: the baseline for ratios."""
    return 4 * int(dim)
