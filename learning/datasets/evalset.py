"""The public evaluation set as bytes: what genesis pins by SHA-256 and peers serve.

The robust rule tunes itself on this set and every delegate re-runs it, so each node must hold
exactly the same samples: the set travels as one blob whose hash the task names, like a global
model. The encoding is a NumPy ``.npz`` of two plain arrays (no pickles, so a peer's bytes can
never run code) whose bytes are made deterministically, so the creator's hash is reproducible.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from learning.data import Dataset
from learning.datasets.checks import DataSpec, check
from learning.datasets.formats import DataError


def encode(ds: Dataset) -> bytes:
    """The blob of ``ds`` (flat float32 samples, int64 labels)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("x", ds.x.astype("<f4")), ("y", ds.y.astype("<i8"))):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # no clock in the bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            npy = io.BytesIO()
            np.lib.format.write_array(npy, arr, allow_pickle=False)
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def max_bytes(spec: DataSpec, samples: int) -> int:
    """The most bytes the blob of ``samples`` samples may take (what a fetch reads at most)."""
    values = samples * (int(np.prod(spec.input_shape)) * 4 + 8)
    return values + values // 100 + 64 * 1024


def decode(blob: bytes, spec: DataSpec, samples: int) -> Dataset:
    """The evaluation set in ``blob`` (whose hash the caller checked), checked against the task."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"public evaluation set: not a readable blob ({exc})") from None
    if len(y) != samples:
        raise DataError(f"public evaluation set: {len(y)} samples, the task says {samples}")
    return check(x, y, DataSpec(spec.input_shape, spec.num_classes, 1), "public evaluation set")
