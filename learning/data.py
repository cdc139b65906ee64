"""Datasets: one flat in-memory layout and loaders for the data sets fedchain is evaluated on.

Every loader returns :class:`Dataset` objects with ``x`` as a flat ``(n, F)`` float32 array
(images scaled to [0, 1], channel-major) and ``y`` as int64 labels. One layout means partitioning,
training, attacks and evaluation never care where the data came from. Nothing is downloaded:
the machine running a node has no data-set network access, so loaders read local files and say
how to get them when they are missing.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}   # labels (1-D), images (3-D), unsigned bytes
_MAX_FILE_BYTES = 1 << 30


@dataclass
class Dataset:
    """Samples ``x`` (n, F) float32, labels ``y`` (n,) int64 in ``[0, num_classes)``."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.int64)
        if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: x must be (n, F) and y (n,), got {self.x.shape}, {self.y.shape}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels outside [0, {self.num_classes})")
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)  # type: ignore[assignment]
            if int(np.prod(self.image_shape)) != self.x.shape[1]:
                raise ValueError(f"{self.name}: image shape {self.image_shape} != {self.x.shape[1]} features")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What :func:`learning.models.build_model` needs: (C, H, W) for images, (F,) otherwise."""
        return self.image_shape if self.image_shape is not None else (self.x.shape[1],)

    def subset(self, idx: np.ndarray, name: str | None = None) -> Dataset:
        """A copy holding the samples at ``idx`` (contiguous, so training reads it quickly)."""
        return Dataset(self.x[idx], self.y[idx], self.num_classes, name or self.name, self.image_shape)


def train_test_split(ds: Dataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Stratified, deterministic split: each class contributes ``test_fraction`` of its samples.

    Stratifying keeps the class balance of both halves equal to the whole, which matters for
    small sets (digits) where an unlucky split would bias every accuracy we report.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero(ds.y == c)
        rng.shuffle(idx)
        test_parts.append(idx[: round(test_fraction * len(idx))])
    test_idx = np.sort(np.concatenate(test_parts))
    mask = np.ones(len(ds), dtype=bool)
    mask[test_idx] = False
    return ds.subset(np.flatnonzero(mask), f"{ds.name}-train"), ds.subset(test_idx, f"{ds.name}-test")


# ----------------------------------------------------------------------------- files

def _read_file(path: Path) -> bytes:
    """The (gunzipped if ``.gz``) contents of ``path``, refusing anything beyond 1 GiB."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read(_MAX_FILE_BYTES + 1)
    except (OSError, EOFError) as exc:   # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_FILE_BYTES} bytes")
    return data


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: missing {stem}[.gz]")


# ----------------------------------------------------------------------------- IDX (Fashion-MNIST)

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzip) after checking its magic and size.

    The header declares the dimensions; a file whose payload does not match them exactly is
    rejected, so a truncated download cannot silently yield a short data set.
    """
    path = Path(path)
    data = _read_file(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if _IDX_MAGIC.get(ndim) != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x00000801 or 0x00000803)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes) but file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_pair(folder: Path, prefix: str, name: str) -> Dataset:
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: {prefix} images {images.shape} do not match labels {labels.shape}")
    if labels.size and labels.max() >= 10:
        raise ValueError(f"{folder}: {prefix} labels outside 0..9")
    n, h, w = images.shape
    x = images.reshape(n, h * w).astype(np.float32) / 255.0
    return Dataset(x, labels.astype(np.int64), 10, name, (1, h, w))


def load_fashion_mnist(folder: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST (train 60k, test 10k) from the four IDX files in ``folder``.

    The default folder is where Debian's ``dataset-fashion-mnist`` package installs them.
    """
    root = Path(folder) if folder is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {root} not found: run `apt-get install dataset-fashion-mnist` "
            "or pass the folder holding the train/t10k IDX files")
    return _idx_pair(root, "train", "fashion-mnist-train"), _idx_pair(root, "t10k", "fashion-mnist-test")


# ----------------------------------------------------------------------------- digits

def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 digits (1797 samples), pixels 0..16 scaled to [0, 1].

    Read from the file scikit-learn ships, as ``sklearn.datasets.load_digits`` reads it (same
    values, same order), without importing scikit-learn: that import costs every daemon about
    50 MB of resident memory for one CSV file."""
    package = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if package is None or not package.submodule_search_locations:
        raise FileNotFoundError("scikit-learn (which ships the digits data set) is not installed")
    path = Path(list(package.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as fh:
        raw = np.loadtxt(fh, delimiter=",")
    full = Dataset(raw[:, :-1] / 16.0, raw[:, -1].astype(int), 10, "digits", (1, 8, 8))
    return train_test_split(full, test_fraction, seed)


# ----------------------------------------------------------------------------- FedProx synthetic

def synthetic_fedprox(alpha: float, beta: float, num_clients: int, *, iid: bool = False,
                      seed: int = 0, features: int = 60, num_classes: int = 10,
                      max_samples: int = 1000, test_fraction: float = 0.2,
                      ) -> tuple[Dataset, Dataset, list[np.ndarray]]:
    """FedProx's Synthetic(alpha, beta): each client k draws its own softmax-regression task.

    Following Li et al. (MLSys 2020) and their generator (alpha and beta are standard
    deviations), client k has ``u_k ~ N(0, alpha)``, ``W_k ~ N(u_k, 1)``,
    ``b_k ~ N(u_k, 1)`` (alpha: how much the *models* differ), and ``B_k ~ N(0, beta)``,
    ``v_k ~ N(B_k, 1)``, ``x ~ N(v_k, diag(j^-1.2))`` (beta: how much the *inputs* differ);
    ``y = argmax(softmax(W_k x + b_k))``. Sample counts follow their power law
    (lognormal(4, 2) + 50), capped at ``max_samples`` so hundreds of clients stay tractable.
    ``iid=True`` is their Synthetic-IID: one shared W, b and x ~ N(0, diag(j^-1.2)).

    Returns the pooled train set, the pooled test set (each client holds out ``test_fraction``
    of its samples), and each client's train indices: the data's natural partition.
    """
    if num_clients < 1 or alpha < 0 or beta < 0:
        raise ValueError("need num_clients >= 1 and alpha, beta >= 0")
    rng = np.random.default_rng(seed)
    counts = np.minimum(rng.lognormal(4, 2, num_clients).astype(np.int64) + 50, max_samples)
    std_x = np.arange(1, features + 1, dtype=np.float64) ** -0.6     # sqrt of j^-1.2
    shared_w = rng.normal(0, 1, (features, num_classes))
    shared_b = rng.normal(0, 1, num_classes)
    xs, ys, is_test, owner = [], [], [], []
    for k, n in enumerate(counts):
        if iid:
            w, b, mean_x = shared_w, shared_b, np.zeros(features)
        else:
            u = rng.normal(0, alpha)
            w = rng.normal(u, 1, (features, num_classes))
            b = rng.normal(u, 1, num_classes)
            mean_x = rng.normal(rng.normal(0, beta), 1, features)
        x = mean_x + std_x * rng.standard_normal((n, features))
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1))     # softmax is monotone: argmax of logits
        n_test = round(test_fraction * n)
        is_test.append(np.arange(n) >= n - n_test)
        owner.append(np.full(n, k))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    test_mask, owner_all = np.concatenate(is_test), np.concatenate(owner)
    name = "synthetic-iid" if iid else f"synthetic({alpha},{beta})"
    train = Dataset(x_all[~test_mask], y_all[~test_mask], num_classes, f"{name}-train")
    test = Dataset(x_all[test_mask], y_all[test_mask], num_classes, f"{name}-test")
    train_owner = owner_all[~test_mask]
    order = np.argsort(train_owner, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(train_owner, minlength=num_clients))[:-1])
    return train, test, groups


# ----------------------------------------------------------------------------- CIFAR-10

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and builtin containers, and nothing else.

    A CIFAR batch is a pickled dict of lists, bytes and one uint8 array. Plain ``pickle.load``
    would run any callable the file names; refusing every global but numpy's array
    reconstruction helpers (and ``_codecs.encode``, which protocol-2 pickles use for bytes)
    makes a crafted file a clean error instead of code execution.
    """

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core"):   # pickles from numpy 1.x name the pre-2.0 module
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(_read_file(path)), encoding="bytes").load()
    except Exception as exc:   # a malformed pickle can fail in many ways; all mean "bad file"
        raise ValueError(f"{path}: not a CIFAR-10 batch ({exc})") from exc
    if not isinstance(obj, dict):   # a bad file, not a programming error: ValueError like the rest
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")  # noqa: TRY004
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: CIFAR-10 batch needs 'data' and 'labels'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: data must be uint8 (n, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: need {len(data)} integer labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels outside 0..9")
    return data, labels.astype(np.int64)


def load_cifar10(folder: str | Path) -> tuple[Dataset, Dataset]:
    """CIFAR-10 from the python-pickle batches (``data_batch_1..5``, ``test_batch``) in ``folder``.

    Rows are stored channel-major (1024 red, 1024 green, 1024 blue), i.e. already the flat
    (3, 32, 32) layout the CNN expects.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {root} not found (it must hold data_batch_1..5 and test_batch)")
    parts = [_cifar_batch(_find(root, f"data_batch_{i}")) for i in range(1, 6)]
    tx, ty = _cifar_batch(_find(root, "test_batch"))

    def make(x: np.ndarray, y: np.ndarray, name: str) -> Dataset:
        return Dataset(x.astype(np.float32) / 255.0, y, 10, name, (3, 32, 32))

    train = make(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), "cifar10-train")
    return train, make(tx, ty, "cifar10-test")
