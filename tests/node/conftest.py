"""Fixtures of the FL node tests: each genesis node's data, and initialised FLApps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.fl.app import FLApp
from node.fl.blobs import BlobStore
from node.fl.data import NodeData, load_node_data
from node.fl.settings import FLSettings
from tests.consensus.helpers import CHAIN, IDS
from tests.node.helpers import SETTINGS


@pytest.fixture(scope="session")
def node_data() -> list[NodeData]:
    """Each genesis node's shard of digits, and the sets every node shares."""
    return [load_node_data(SETTINGS, nid, IDS[:4]) for nid in IDS[:3]]


@pytest.fixture
def new_app(tmp_path: Path, node_data: list[NodeData]):
    """Factory of initialised FLApps (or a subclass ``cls``; genesis ``settings`` other than the
    defaults need the same data set), one blob store each (or a shared one by name)."""
    stores: dict[str, BlobStore] = {}

    def make(i: int = 0, *, blobs: str | None = None, restored: dict[bytes, bytes] | None = None,
             cls: type[FLApp] = FLApp, settings: FLSettings = SETTINGS, **kw: Any) -> FLApp:
        name = blobs or f"node{len(stores)}"
        store = stores.get(name) or stores.setdefault(name, BlobStore(tmp_path / f"{name}.sqlite"))
        app = cls(settings, CHAIN, node_data[i], store, **kw)
        app.init_chain(settings.to_app_state(), restored or {})
        return app

    yield make
    for store in stores.values():
        store.close()
