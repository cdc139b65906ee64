"""Data loaders on small generated files (IDX, CIFAR pickles), digits, synthetic, splitting."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from learning.data import (
    FASHION_MNIST_DIR,
    Dataset,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    read_idx,
    synthetic_fedprox,
    train_test_split,
)


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = (0x0800 | arr.ndim).to_bytes(4, "big")
    return magic + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.astype(np.uint8).tobytes()


def _write_fmnist(folder: Path, n_train: int, n_test: int, gz: bool, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = rng.integers(0, 10, n)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_idx_files(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    _write_fmnist(tmp_path, 12, 5, gz, rng)
    train, test = load_fashion_mnist(tmp_path)
    assert train.x.shape == (12, 784) and test.x.shape == (5, 784)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert train.image_shape == (1, 28, 28) and train.input_shape == (1, 28, 28)
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert np.array_equal(train.x, raw.reshape(12, 784) / np.float32(255.0))


def test_idx_bad_magic_and_size_are_clear_errors(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((2, 3, 3), np.uint8))
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x00\x00\x09\x03" + good[4:])
    with pytest.raises(ValueError, match="bad IDX magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(good[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(truncated)
    not_gzip = tmp_path / "x.gz"
    not_gzip.write_bytes(good)
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(not_gzip)


def test_fashion_mnist_missing_folder_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_fashion_mnist_mismatched_counts(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, 4, 2, False, np.random.default_rng(1))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="do not match"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files() -> None:
    train, test = load_fashion_mnist()
    assert train.x.shape == (60000, 784) and test.x.shape == (10000, 784)
    assert np.array_equal(np.bincount(test.y), np.full(10, 1000))


def _write_cifar(folder: Path, protocol: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, 3).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"a.png", b"b.png", b"c.png"]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_pickle_batches(tmp_path: Path, protocol: int) -> None:
    written = _write_cifar(tmp_path, protocol, np.random.default_rng(2))
    train, test = load_cifar10(tmp_path)
    assert train.x.shape == (15, 3072) and test.x.shape == (3, 3072)
    assert train.image_shape == (3, 32, 32)
    assert np.array_equal(train.x[:3], written["data_batch_1"][0] / np.float32(255.0))
    assert test.y.tolist() == written["test_batch"][1]


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_arbitrary_pickled_objects(tmp_path: Path) -> None:
    _write_cifar(tmp_path, 4, np.random.default_rng(3))
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar10(tmp_path)


def test_cifar10_wrong_contents(tmp_path: Path) -> None:
    _write_cifar(tmp_path, 4, np.random.default_rng(4))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"uint8 \(n, 3072\)"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_cifar10(tmp_path / "absent")


def test_digits() -> None:
    train, test = load_digits(test_fraction=0.2, seed=0)
    assert len(train) + len(test) == 1797
    assert train.x.shape[1] == 64 and train.image_shape == (1, 8, 8)
    assert train.x.min() >= 0.0 and train.x.max() == 1.0
    again, _ = load_digits(test_fraction=0.2, seed=0)
    assert np.array_equal(train.y, again.y)


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    rng = np.random.default_rng(5)
    ds = Dataset(np.arange(200, dtype=np.float32)[:, None], rng.integers(0, 4, 200), 4, "toy")
    a_train, a_test = train_test_split(ds, 0.25, seed=1)
    _, b_test = train_test_split(ds, 0.25, seed=1)
    assert np.array_equal(a_test.x, b_test.x)
    ids = np.concatenate([a_train.x[:, 0], a_test.x[:, 0]])
    assert np.array_equal(np.sort(ids), np.arange(200))
    for c in range(4):
        share = np.mean(a_test.y == c) - np.mean(ds.y == c)
        assert abs(share) < 0.03
    with pytest.raises(ValueError):
        train_test_split(ds, 1.5)


def test_dataset_validation() -> None:
    with pytest.raises(ValueError, match="labels outside"):
        Dataset(np.zeros((2, 3)), np.array([0, 5]), 3, "bad")
    with pytest.raises(ValueError, match="image shape"):
        Dataset(np.zeros((2, 3)), np.array([0, 1]), 3, "bad", (1, 2, 2))


def test_synthetic_fedprox_is_heterogeneous_and_deterministic() -> None:
    train, test, groups = synthetic_fedprox(1.0, 1.0, 8, seed=3)
    again, _, _ = synthetic_fedprox(1.0, 1.0, 8, seed=3)
    assert np.array_equal(train.x, again.x)
    assert train.x.shape[1] == 60 and train.num_classes == 10
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(len(train)))
    means = np.stack([train.x[g].mean(0) for g in groups])
    iid, _, iid_groups = synthetic_fedprox(0.0, 0.0, 8, iid=True, seed=3)
    iid_means = np.stack([iid.x[g].mean(0) for g in iid_groups])
    assert means.std(0).mean() > 3 * iid_means.std(0).mean()   # clients' inputs really differ
    assert len(test) > 0
