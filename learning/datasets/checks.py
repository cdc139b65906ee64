"""Is a device's data fit for the chain's task? Checked before the node trains on it.

A node that trains on data of the wrong shape, with NaNs or with labels the model has no output
for would send updates that are useless at best and poison the global model at worst, and it
would be penalized for them. So every check here runs at start (and in ``fedchain data check``),
and any failure stops the node with a message that names the file and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.data import Dataset
from learning.datasets.formats import DataError


@dataclass(frozen=True)
class DataSpec:
    """What the task expects of every device's data."""

    input_shape: tuple[int, ...]   # (F,) for tables, (C, H, W) for images
    num_classes: int
    min_samples: int = 1


def check(x: np.ndarray, y: np.ndarray, spec: DataSpec, where: str) -> Dataset:
    """``(x, y)`` as a flat :class:`Dataset` if it fits ``spec``; :class:`DataError` naming ``where``
    and the fix if not. Cheap checks (counts, shapes) come before the ones that scan every value."""
    features = math.prod(spec.input_shape)
    n = len(y)
    if y.ndim != 1 or len(x) != n:
        raise DataError(f"{where}: {len(x)} samples but {y.shape} labels; every sample needs one label")
    if n < spec.min_samples:
        raise DataError(f"{where}: {n} samples, the task needs at least {spec.min_samples} on each device; "
                        "add samples, or leave this device out of training")
    shape = tuple(x.shape[1:])
    if shape != spec.input_shape and math.prod(shape) != features:
        raise DataError(f"{where}: samples have shape {shape} ({math.prod(shape)} values), the task's model "
                        f"takes {spec.input_shape} ({features} values); bring the data to that shape "
                        "(for a CSV: one column per feature, plus the label column)")
    flat = x.reshape(n, features)
    bad = ~np.isfinite(flat)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(f"{where}: {int(bad.sum())} NaN or infinite values (first in sample {row}); "
                        "fill or drop those samples")
    if not np.issubdtype(y.dtype, np.integer) and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise DataError(f"{where}: labels must be whole numbers 0..{spec.num_classes - 1}")
    out_of_range = (y < 0) | (y >= spec.num_classes)
    if out_of_range.any():
        first = y[out_of_range][0]
        raise DataError(f"{where}: {int(out_of_range.sum())} labels outside 0..{spec.num_classes - 1} "
                        f"(e.g. {first:g}); the task has {spec.num_classes} classes: map labels to 0..."
                        f"{spec.num_classes - 1}")
    image_shape = spec.input_shape if len(spec.input_shape) == 3 else None
    return Dataset(flat, y.astype(np.int64), spec.num_classes, where, image_shape)  # type: ignore[arg-type]


def summary(ds: Dataset) -> dict:
    """What a node would train on: sample count, per-class counts, input shape."""
    return {"samples": len(ds), "input_shape": list(ds.input_shape),
            "classes": np.bincount(ds.y, minlength=ds.num_classes).tolist()}
