"""The FL side of a daemon: the application, the trainer, the blob store and their wiring.

With a genesis task, the node's own ``[data]`` is checked at construction (a misfit stops the
node) and the public evaluation set is taken from the blob store or fetched from peers by hash
before the chain is followed (:meth:`FLService.obtain_eval_set`).

It subscribes the updates topic on gossip, fetches updates a proposal names but this node lacks
(from the proposer first, then any peer), keeps the accuracy of every new global model on the
node's validation split and on the common test set, and answers the ``/fl`` API.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from gossip.pull import PullRule
from learning.datasets import evalset
from learning.datasets.formats import DataError
from node.config_checks import ConfigError
from node.fetcher import JSON_ROOM, FetchError, fetch_update, get_bytes
from node.fl.app import TOPIC_UPDATE, round_key
from node.fl.background import background_worker
from node.fl.blobs import BlobStore
from node.fl.data import NodeData, load_node_data
from node.fl.faults import fl_app_class, make_trainer
from node.fl.localdata import home_path, install_eval_set, load_local, parse_eval_set, task_node_data
from node.fl.settings import FLSettings
from node.fl.task import Task
from node.fl.trainer import Trainer
from node.home import Home

log = logging.getLogger("fedchain.fl")


class FLService:
    def __init__(self, home: Home, gossip: Any) -> None:
        g = home.genesis
        self.home = home
        self.gossip = gossip
        self.settings = FLSettings.from_app_state(g.app)
        self.task = Task.from_dict(self.settings.task) if self.settings.task else None
        self.blobs = BlobStore(home.paths.data / "blobs.sqlite")
        self.eval_missing = False
        if self.task is not None:
            data = self._task_data(self.task)
        else:
            data = load_node_data(self.settings, home.keypair.node_id, [a["id"] for a in g.accounts])
        self.fault = home.config.fault
        self.app = fl_app_class(self.fault)(
            self.settings, g.chain_id, data, self.blobs, fetch=self.fetch_update, fetch_model=self.fetch_model,
            node_id=home.keypair.node_id,
            max_message=home.config.network.max_message, model_retention=home.config.storage.model_retention,
            update_retention=home.config.storage.update_retention)
        self.trainer: Trainer | None = None
        self.session: aiohttp.ClientSession | None = None
        self.model_metrics: dict[str, Any] = {}
        self._tasks: list[asyncio.Task] = []
        self._evaluator = background_worker("fl-eval")  # new models' accuracy: reported, never voted on

    def _task_data(self, task: Task) -> NodeData:
        """This device's own data, checked against the task (a misfit stops the node here, before it
        joins), and the public evaluation set if the blob store already holds it."""
        root = self.home.paths.root
        try:
            local = load_local(task, self.home.config.data, root)
        except DataError as exc:
            raise ConfigError(f"{exc}. This node does not start with data that does not fit the task; "
                              f"see what it would train on with `fedchain data check --home {root}`") from None
        if not len(local):
            log.warning("no [data] source in %s: this node follows and verifies the chain but does not train",
                        self.home.paths.config)
        data = task_node_data(task, local, self.settings.val_fraction, self.settings.seed)
        blob = self.blobs.get(task.eval_hash, "evalset")
        if blob is None and self.home.config.data.eval_set:
            blob = self._eval_set_file(task)
        if blob is not None:
            install_eval_set(data, parse_eval_set(task, blob))
        self.eval_missing = blob is None
        return data

    def _eval_set_file(self, task: Task) -> bytes:
        """The evaluation set from the file ``[data] eval_set`` names (where no peer holds it yet,
        as in pods that each start from an empty volume), kept in the blob store if its hash is
        the one the task pins; any other file stops the node."""
        path = home_path(self.home.config.data.eval_set, self.home.paths.root)
        try:
            blob = path.read_bytes()
            parse_eval_set(task, blob)
        except (OSError, DataError) as exc:
            raise ConfigError(f"[data] eval_set {path}: {exc}") from None
        self.blobs.put("evalset", blob, 0)
        return blob

    async def obtain_eval_set(self, session: aiohttp.ClientSession, retry_s: float = 1.0) -> None:
        """Fetch the task's public evaluation set from peers if this node lacks it: the bootstrap
        nodes first, then every gossip peer, until one serves bytes with the pinned hash. A copy
        with another hash, or one that does not fit the task, is refused and the next peer asked.
        The chain is not followed before: rounds cannot be verified without the set."""
        task = self.task
        if task is None or not self.eval_missing:
            return
        limit = evalset.max_bytes(task.spec, task.eval_set_samples)
        path = f"/fl/eval-set/{task.eval_set_sha256}"
        while self.eval_missing:
            urls = [*self.home.config.network.bootstrap, *(p.url for p in self.gossip.peers() if p.url)]
            for url in dict.fromkeys(urls):
                try:
                    raw = await get_bytes(session, url + path, limit)
                    if raw is None:
                        continue
                    eval_set = parse_eval_set(task, raw)
                except FetchError as exc:
                    log.debug("fetching the evaluation set from %s failed: %s", url, exc)
                    continue
                except DataError as exc:
                    self.app.metrics["eval_set_refused"] += 1
                    log.warning("refused the evaluation set served by %s: %s", url, exc)
                    continue
                self.blobs.put("evalset", raw, 0)
                install_eval_set(self.app.data, eval_set)
                self.eval_missing = False
                log.info("fetched the public evaluation set %s from %s (%d samples)",
                         task.eval_set_sha256[:12], url, len(eval_set))
                return
            await asyncio.sleep(retry_s)

    def eval_set_blob(self, digest: bytes) -> bytes | None:
        """The evaluation set's blob if ``digest`` names it and this node holds it (what peers fetch)."""
        if self.task is None or digest != self.task.eval_hash or self.eval_missing:
            return None
        return self.blobs.get(digest, "evalset")

    async def start(self, engine: Any, session: aiohttp.ClientSession) -> None:
        """After the engine restored the model: subscribe updates, start training and evaluation."""
        self.session = session
        self.app.state_view = lambda: engine.state
        # Updates are announced and pulled by id (gossip.pull): each node receives each once.
        self.gossip.subscribe(TOPIC_UPDATE, self.app.validate_update_msg, self.app.deliver_update,
                              pull=PullRule(self.settings.max_update_bytes, self.app.screen_update))
        self.trainer = make_trainer(self.fault, self.app, self.home.keypair, self.gossip.publish,
                                    self.home.paths.data / "trainer.json")
        self.app.listeners.append(self._schedule_evaluation)
        if len(self.app.data.train):  # a node without data of its own follows the chain but sends nothing
            self._tasks = [asyncio.create_task(self.trainer.run(), name="trainer")]
        self._schedule_evaluation()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._evaluator.shutdown(wait=True, cancel_futures=True)
        self.blobs.close()

    def _schedule_evaluation(self) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(self._evaluate()))

    async def _evaluate(self) -> None:
        app = self.app
        vector, mhash, height = app.model, app.model_hash, app.model_height
        loop = asyncio.get_running_loop()
        val_acc, val_loss = await loop.run_in_executor(self._evaluator, app.accuracy, vector, "val")
        test_acc, test_loss = await loop.run_in_executor(self._evaluator, app.accuracy, vector, "test")
        if height >= self.model_metrics.get("height", -1):
            self.model_metrics = {"hash": mhash.hex(), "height": height, "params": app.dim,
                                  "val_accuracy": val_acc, "val_loss": val_loss,
                                  "test_accuracy": test_acc, "test_loss": test_loss}

    async def fetch_update(self, update_id: bytes, producer: str) -> bytes | None:
        """The raw update ``update_id`` from the proposer, else from any peer (a peer that fails or
        lies is skipped; what each may send is capped, see ``node/fetcher.py``)."""
        peers = sorted(self.gossip.peers(), key=lambda p: p.node_id != producer)
        for peer in peers:
            if not peer.url or self.session is None:
                continue
            try:
                raw = await fetch_update(self.session, peer.url, update_id, self.settings.max_update_bytes)
            except FetchError as exc:
                log.debug("fetching update from %s failed: %s", peer.url, exc)
                continue
            if raw is not None:
                return raw
        return None

    async def fetch_model(self, model_hash: bytes) -> bytes | None:
        """The weights of global model ``model_hash`` from any peer, read under the size a model of
        this task can have (the caller checks the hash before it uses them)."""
        limit = 4 * self.app.dim + JSON_ROOM
        for peer in self.gossip.peers():
            if not peer.url or self.session is None:
                continue
            try:
                raw = await get_bytes(self.session, f"{peer.url}/fl/model/{model_hash.hex()}", limit)
            except FetchError as exc:
                log.debug("fetching model from %s failed: %s", peer.url, exc)
                continue
            if raw is not None:
                return raw
        return None

    def round_record(self, store: Any, height: int) -> dict | None:
        """What the final block at ``height`` considered, as the application recorded it."""
        raw = store.app_get(round_key(height))
        return json.loads(raw) if raw is not None else None

    def metrics(self) -> dict[str, float]:
        out = {f"app:{k}": float(v) for k, v in self.app.metrics.items()}
        if self.trainer is not None:
            out.update({f"trainer:{k}": float(v) for k, v in self.trainer.metrics.items()})
            eps = self.trainer.privacy_view()["epsilon"]
            if eps is not None:
                out["epsilon"] = float(eps)
        for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
            if key in self.model_metrics:
                out[key] = float(self.model_metrics[key])
        return out
