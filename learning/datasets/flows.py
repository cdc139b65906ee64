"""Synthetic network-flow records for the intrusion-detection example, split the way devices see them.

Real flow captures (CIC-IDS, UNSW-NB15) cannot be shipped or downloaded here, so the worked
example in ``docs/fl.md`` uses records drawn by scikit-learn's ``make_classification`` under
flow-like column names: 12 numeric features, 4 classes (benign and three attack kinds). What
makes the example federated is the split: every device sees mostly benign traffic plus the one
attack kind that hits it, so no device alone can learn to recognise the others' attacks.
"""

from __future__ import annotations

import numpy as np

from learning.data import Dataset, train_test_split

COLUMNS = ("duration", "src_bytes", "dst_bytes", "src_packets", "dst_packets", "mean_iat", "std_iat",
           "syn_ratio", "rst_ratio", "dst_port_entropy", "payload_entropy", "flows_per_src")
CLASSES = ("benign", "dos", "port_scan", "exfiltration")


def flows(samples: int = 6000, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of synthetic flow records, stratified 80/20."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=samples, n_features=len(COLUMNS), n_informative=8, n_redundant=2,
                               n_classes=len(CLASSES), n_clusters_per_class=2, class_sep=1.2, random_state=seed)
    return train_test_split(Dataset(x, y, len(CLASSES), "flows"), 0.2, seed)


def device_split(ds: Dataset, devices: int, seed: int = 0, other: float = 0.03) -> list[np.ndarray]:
    """Indices for each device: all of its share of benign records, its own attack kind
    (attack ``1 + i % 3``) and a fraction ``other`` of the other attacks' records."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, devices, len(ds))   # benign traffic: shared out evenly
    for i in np.flatnonzero(ds.y > 0):
        hit = [d for d in range(devices) if 1 + d % (len(CLASSES) - 1) == ds.y[i]]
        owner[i] = rng.choice(hit) if hit and rng.random() > other else rng.integers(0, devices)
    return [np.flatnonzero(owner == d) for d in range(devices)]


def write_csv(ds: Dataset, path: str, label_column: str = "label") -> None:
    table = np.column_stack([ds.x, ds.y])
    np.savetxt(path, table, delimiter=",", header=",".join([*COLUMNS, label_column]), comments="",
               fmt=["%.6g"] * len(COLUMNS) + ["%d"])
