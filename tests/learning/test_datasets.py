"""A device's own data: each format loads, and each kind of bad data is a clear error naming the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learning.data import Dataset
from learning.datasets import evalset
from learning.datasets.checks import DataSpec, check, summary
from learning.datasets.formats import DataError, DataSource, read

SPEC = DataSpec((1, 4, 4), 3, min_samples=5)


def images(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), np.arange(n) % 3


def write_idx(path: Path, arr: np.ndarray) -> None:
    magic = 0x0803 if arr.ndim == 3 else 0x0801
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, label: str = "label") -> None:
    lines = [",".join([*(f"f{j}" for j in range(x.shape[1])), label])]
    lines += [",".join([*(repr(float(v)) for v in row), str(c)]) for row, c in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


def load(source: DataSource, spec: DataSpec = SPEC) -> Dataset:
    x, y = read(source)
    return check(x, y, spec, str(source.path))


def test_each_format_loads_the_same_samples(tmp_path):
    raw, y = images()
    want = raw.reshape(len(raw), -1).astype(np.float32) / 255
    np.savez(tmp_path / "d.npz", x=raw[:, None], y=y)
    write_idx(tmp_path / "img.idx", raw)
    write_idx(tmp_path / "lab.idx", y)
    write_csv(tmp_path / "d.csv", want, y)
    for i, (img, c) in enumerate(zip(raw, y)):
        (tmp_path / "imgs" / str(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(tmp_path / "imgs" / str(c) / f"{i:03d}.png")
    sources = [DataSource(tmp_path / "d.npz", "npz"), DataSource(tmp_path / "img.idx", "idx", labels=tmp_path / "lab.idx"),
               DataSource(tmp_path / "d.csv", "csv"), DataSource(tmp_path / "imgs", "imagefolder")]
    for source in sources:
        ds = load(source)
        order = np.lexsort((ds.x[:, 0], ds.y)) if source.format == "imagefolder" else np.arange(len(ds))
        ref = np.lexsort((want[:, 0], y)) if source.format == "imagefolder" else np.arange(len(y))
        np.testing.assert_allclose(ds.x[order], want[ref], atol=1e-6, err_msg=source.format)
        np.testing.assert_array_equal(ds.y[order], y[ref])
        assert ds.input_shape == (1, 4, 4)
    assert summary(load(sources[0])) == {"samples": 12, "input_shape": [1, 4, 4], "classes": [4, 4, 4]}


def test_csv_with_a_named_label_column(tmp_path):
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    write_csv(tmp_path / "flows.csv", x, np.arange(8) % 2, label="attack")
    ds = load(DataSource(tmp_path / "flows.csv", "csv", label_column="attack"), DataSpec((3,), 2, 8))
    np.testing.assert_allclose(ds.x, x, rtol=1e-6)
    with pytest.raises(DataError, match="no label column 'label'.*set \\[data\\] label_column"):
        load(DataSource(tmp_path / "flows.csv", "csv"), DataSpec((3,), 2))


@pytest.mark.parametrize("problem, match", [
    ("shape", r"samples have shape \(5, 5\).*takes \(1, 4, 4\)"),
    ("nan", r"3 NaN or infinite values \(first in sample 2\)"),
    ("labels", r"2 labels outside 0..2 .*map labels"),
    ("few", r"4 samples, the task needs at least 5"),
    ("fractional", r"labels must be whole numbers"),
])
def test_bad_data_is_a_clear_error_naming_the_file(tmp_path, problem, match):
    raw, y = images()
    x = raw[:, None].astype(np.float32)
    y = y.astype(np.float64)
    if problem == "shape":
        x = np.zeros((12, 5, 5), np.float32)
    elif problem == "nan":
        x[2, 0, 0, 0] = np.nan
        x[5, 0, 1, 1] = np.inf
        x[5, 0, 1, 2] = np.nan
    elif problem == "labels":
        y[[3, 7]] = [3, -1]
    elif problem == "few":
        x, y = x[:4], y[:4]
    else:
        y[0] = 0.5
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=match) as err:
        load(DataSource(path, "npz"))
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv: no such file; set \[data\] source"):
        read(DataSource(tmp_path / "nope.csv", "csv"))
    (tmp_path / "bad.csv").write_text("a,label\n1,0\nx,1\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: column 'a' is not a number"):
        read(DataSource(tmp_path / "bad.csv", "csv"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        read(DataSource(tmp_path / "bad.npz", "npz"))
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="obj.npz"):  # pickled objects are never loaded
        read(DataSource(tmp_path / "obj.npz", "npz"))
    write_idx(tmp_path / "img.idx", images()[0])
    with pytest.raises(DataError, match="no such labels file"):
        read(DataSource(tmp_path / "img.idx", "idx", labels=tmp_path / "lab.idx"))


def test_evaluation_set_blob_is_deterministic_and_checked():
    raw, y = images()
    ds = check(raw[:, None].astype(np.float32), y, SPEC, "eval")
    blob = evalset.encode(ds)
    assert blob == evalset.encode(ds)   # the hash the genesis pins can be reproduced
    assert len(blob) <= evalset.max_bytes(SPEC, len(ds))
    back = evalset.decode(blob, SPEC, len(ds))
    np.testing.assert_array_equal(back.x, ds.x)
    with pytest.raises(DataError, match="12 samples, the task says 13"):
        evalset.decode(blob, SPEC, 13)
