"""``fedchain testnet create N --k8s DIR``: a Kustomize overlay that runs the testnet on Kubernetes.

The overlay builds on ``deploy/k8s/base`` (a StatefulSet ``fedchain`` behind the headless Service
``fedchain``, a PodDisruptionBudget) and adds what is particular to one testnet:

* ``testnet.yaml``: the ConfigMap ``fedchain-testnet`` (``genesis.json``, ``nodeI.toml``, the
  config of pod ``fedchain-I``, and ``eval-set.npz``, the public evaluation set the task pins),
  the Secret ``fedchain-node-keys`` (``nodeI.json``, its key) and the Secret ``fedchain-node-data``
  (``nodeI.npz``, the shard the CLI cut for node I: private to its device, like its key);
* ``kustomization.yaml``: the base, ``testnet.yaml``, N replicas, and the disruption budget that
  keeps a BFT quorum of delegates up.

The homes are made by the same code as a local testnet's (:func:`cli.testnet.create_k8s_overlay`
runs :func:`cli.testnet.create_testnet` into a private temporary folder, removed afterwards),
listening on 0.0.0.0:26657 in every pod and advertising ``http://fedchain-I.fedchain:26657``, the
pod's stable name; so a pod's home is exactly what ``fedchain testnet create`` would write for it,
except that its ``[data]`` names the files on the pod's own data volume (:data:`DATA_DIR`), where
the init container puts them unless the volume holds them already (an operator's real data).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from cli.common import CliError

NAME = "fedchain"  # the StatefulSet and its headless Service (deploy/k8s/base)
PORT = 26657
CONFIG_MAP = "fedchain-testnet"
SECRET = "fedchain-node-keys"
DATA_SECRET = "fedchain-node-data"
DATA_DIR = "/var/lib/fedchain-data"  # the pod's own data volume, as the node container mounts it
TRAIN_FILE = "train.npz"
EVAL_SET_FILE = "eval-set.npz"
MAX_OBJECT_BYTES = 1_000_000
"""What one ConfigMap or Secret may carry (Kubernetes refuses objects over 1 MiB, metadata included)."""
MANIFESTS = "testnet.yaml"
BASE = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "base"


def advertise_template() -> str:
    """The host each pod advertises: its stable name under the headless Service."""
    return f"{NAME}-{{i}}.{NAME}"


def max_unavailable(nodes: int, max_delegates: int) -> int:
    """Pods that may be down at once while the D = min(max_delegates, N) delegates keep a quorum
    of floor(2D/3)+1 precommits, whichever pods go: f = D - quorum."""
    d = min(max_delegates, nodes)
    return d - (2 * d // 3 + 1)


class _Literal(str):
    """A multi-line string written as a YAML block (``|``), so configs stay readable."""


yaml.SafeDumper.add_representer(_Literal, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|"))


def _labels() -> dict:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": NAME}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def testnet_manifests(folder: Path, n: int, shards: list[bytes], eval_set: bytes | None) -> list[dict]:
    """The ConfigMap and Secrets of the testnet whose homes are in ``folder``: configs, keys, and
    (for FL) each node's data file ``shards[i]`` and the evaluation set's blob."""
    data = {"genesis.json": _Literal((folder / "node0" / "genesis.json").read_text())}
    keys = {}
    for i in range(n):
        home = folder / f"node{i}"
        data[f"node{i}.toml"] = _Literal((home / "config.toml").read_text())
        keys[f"node{i}.json"] = _b64((home / "node_key.json").read_bytes())
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "labels": _labels()},
                  "data": data}
    docs = [config_map, _secret(SECRET, keys)]
    if eval_set is not None:
        config_map["binaryData"] = {EVAL_SET_FILE: _b64(eval_set)}
        docs.append(_secret(DATA_SECRET, {f"node{i}.npz": _b64(shard) for i, shard in enumerate(shards)}))
    for doc in docs:
        size = sum(len(v) for part in ("data", "binaryData") for v in doc.get(part, {}).values())
        if size > MAX_OBJECT_BYTES:
            raise CliError(f"the {doc['kind']} {doc['metadata']['name']} would hold {size / 2**20:.1f} MiB, more than "
                           f"Kubernetes keeps in one object (1 MiB): the overlay carries demo data only (--dataset "
                           f"digits or synthetic, a few nodes). For larger data, put each node's train.npz and "
                           f"eval-set.npz on its data volume yourself (deploy/README.md)")
    return docs


def _secret(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": _labels()}, "type": "Opaque",
            "data": data}


def kustomization(base: str, n: int, unavailable: int) -> dict:
    patch = [{"op": "replace", "path": "/spec/maxUnavailable", "value": unavailable}]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base, MANIFESTS],
        "replicas": [{"name": NAME, "count": n}],
        "patches": [{"target": {"kind": "PodDisruptionBudget", "name": NAME},
                     "patch": _Literal(yaml.safe_dump(patch, sort_keys=False))}],
    }


def base_reference(out: Path, base: str | None) -> str:
    """How the overlay names the base: as given, or the path from ``out`` to this checkout's
    ``deploy/k8s/base``."""
    if base:
        return base
    if not BASE.is_dir():
        raise CliError(f"no deploy/k8s/base next to this installation; pass --k8s-base (a path or a remote "
                       "kustomize base)")
    return os.path.relpath(BASE, out.resolve())


def write_overlay(out: Path, homes: Path, n: int, max_delegates: int, base: str | None = None, *,
                  shards: list[bytes] = (), eval_set: bytes | None = None) -> Path:
    """Write the overlay of the ``n``-node testnet whose homes are in ``homes`` into ``out``;
    refuses to replace the keys of an existing one."""
    manifests = out / MANIFESTS
    if manifests.exists():
        raise CliError(f"{manifests} already exists: it holds a testnet's node keys; remove it first")
    reference = base_reference(out, base)
    docs = testnet_manifests(homes, n, list(shards), eval_set)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(manifests, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# The genesis, configs, node keys and data of a {n}-node testnet (`fedchain testnet create {n} --k8s`).\n"
                 "# It holds private keys and each node's training data: keep it out of version control.\n")
        yaml.safe_dump_all(docs, fh, sort_keys=False)
    (out / "kustomization.yaml").write_text(
        f"# A {n}-node fedchain testnet: `kubectl apply -k` this folder (see deploy/README.md).\n"
        + yaml.safe_dump(kustomization(reference, n, max_unavailable(n, max_delegates)), sort_keys=False))
    return out
