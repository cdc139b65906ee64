"""Readers for the file formats a device may hold its training data in.

Each reader returns ``(x, y)``: ``x`` a float array with one row per sample (any trailing shape),
``y`` the raw labels (checked later, against the task, by :mod:`learning.datasets.checks`).
Images stored as bytes (IDX, image files, uint8 arrays) are scaled to [0, 1], the layout the
built-in data sets use; other numbers are taken as they are. Every problem is a
:class:`DataError` naming the file and what to change, never a traceback from deep in a parser.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learning.data import read_idx

FORMATS = ("csv", "npz", "idx", "imagefolder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm")
MAX_SAMPLES = 5_000_000
"""More rows than any device trains on: a bound so a runaway file is an error, not an OOM."""


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and the fix."""


@dataclass
class DataSource:
    """Where a device's training data is and how to read it (the ``[data]`` section of its config)."""

    path: Path
    format: str
    label_column: str = "label"   # csv: the column holding the class index; every other column is a feature
    labels: Path | None = None    # idx: the labels file (path is the images file)
    x_key: str = "x"              # npz: array names
    y_key: str = "y"


def read(source: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``source``; :class:`DataError` if it is missing or unreadable."""
    if source.format not in FORMATS:
        raise DataError(f"data format {source.format!r} is not one of {', '.join(FORMATS)}")
    if not source.path.exists():
        raise DataError(f"{source.path}: no such {'folder' if source.format == 'imagefolder' else 'file'}; "
                        "set [data] source in config.toml to your training data")
    reader = {"csv": _read_csv, "npz": _read_npz, "idx": _read_idx, "imagefolder": _read_imagefolder}[source.format]
    return reader(source)


def _read_csv(source: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """A header row, then one sample per row: numeric features and an integer label column."""
    path = source.path
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None:
                raise DataError(f"{path}: empty file; a CSV needs a header row, then one sample per row")
            header = [h.strip() for h in header]
            if source.label_column not in header:
                raise DataError(f"{path}: no label column {source.label_column!r} in the header {header[:20]}; "
                                "set [data] label_column to the column holding the class")
            label_at = header.index(source.label_column)
            values: list[list[float]] = []
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}, line {line}: {len(row)} fields but the header has {len(header)}")
                try:
                    values.append([float(v) for v in row])
                except ValueError:
                    bad = next(h for h, v in zip(header, row) if not _is_number(v))
                    raise DataError(f"{path}, line {line}: column {bad!r} is not a number; encode categories "
                                    "as numbers before training") from None
                if len(values) > MAX_SAMPLES:
                    raise DataError(f"{path}: more than {MAX_SAMPLES} rows")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    table = np.asarray(values, dtype=np.float64).reshape(len(values), len(header))
    return np.delete(table, label_at, axis=1).astype(np.float32), table[:, label_at]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npz(source: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays of a NumPy ``.npz`` (no pickles: a data file must not run code)."""
    path = source.path
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (source.x_key, source.y_key) if k not in archive.files]
            if missing:
                raise DataError(f"{path}: no array {missing[0]!r} (it holds {archive.files}); "
                                "set [data] x_key and y_key to the arrays of samples and labels")
            x, y = archive[source.x_key], archive[source.y_key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: samples {source.x_key!r} have dtype {x.dtype}; they must be numbers")
    return (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)), y


def _read_idx(source: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """An IDX images file (``source``) and its IDX labels file (``labels``), as MNIST ships them."""
    if source.labels is None:
        raise DataError(f"{source.path}: the idx format needs [data] labels = the labels file")
    if not source.labels.exists():
        raise DataError(f"{source.labels}: no such labels file; set [data] labels to the IDX labels file")
    try:
        images, labels = read_idx(source.path), read_idx(source.labels)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{source.labels}: {labels.shape} labels do not match the {len(images)} images "
                        f"of {source.path}")
    return images.astype(np.float32) / 255.0, labels


def _read_imagefolder(source: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """One sub-folder per class, named by the class index (``0/``, ``1/``, ...), holding images.

    The folder name is the label, not its rank among the folders, so two devices that hold
    different subsets of the classes still agree on what label 3 means. Images are read as
    grey-scale when single-channel and RGB otherwise, channel-major, scaled to [0, 1].
    """
    from PIL import Image, UnidentifiedImageError

    root = source.path
    if not root.is_dir():
        raise DataError(f"{root}: the imagefolder format needs a folder with one sub-folder per class")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not folder.name.isdigit():
            raise DataError(f"{folder}: class folders must be named by the class index (0, 1, ...)")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    mode = "L" if img.mode in ("L", "1", "I", "I;16") else "RGB"
                    arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{file}: not a readable image ({exc})") from None
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            ys.append(int(folder.name))
            if len(xs) > MAX_SAMPLES:
                raise DataError(f"{root}: more than {MAX_SAMPLES} images")
    if not xs:
        raise DataError(f"{root}: no images (expected {root}/0/*.png, {root}/1/*.png, ...)")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{root}: images of different sizes {sorted(shapes)[:4]}; resize them to one size")
    return np.stack(xs), np.asarray(ys)
