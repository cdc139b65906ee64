"""A proposer on another kind of CPU: ``python -m tests.node.cpu_proposer UPDATES OUT BLOBS``.

Run with ``OPENBLAS_CORETYPE`` (numpy's BLAS kernels) and ``ATEN_CPU_CAPABILITY`` (torch's) set
to something other than the test process uses, it stands for a delegate on a different CPU
generation: it admits the encoded updates in file UPDATES (a msgpack array of update bytes),
prepares the payload of height 1 and writes it to OUT.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from consensus.app import BlockContext
from consensus.state import ChainState
from gossip.codec import unpack
from node.fl.app import FLApp
from node.fl.blobs import BlobStore
from node.fl.data import load_node_data
from node.fl.settings import FLSettings
from tests.consensus.helpers import CHAIN, IDS, genesis


async def main(updates_path: Path, out: Path, blobs_path: Path) -> None:
    settings = FLSettings()
    g = genesis(4, app=settings.to_app_state())
    state = ChainState.from_genesis(g)
    app = FLApp(settings, CHAIN, load_node_data(settings, IDS[0], IDS[:4]), BlobStore(blobs_path))
    app.init_chain(g.app, {})
    for raw in unpack(updates_path.read_bytes(), 1 << 26):
        app.admit(app.decode_update(raw))
    ctx = BlockContext(1, 0, IDS[0], state.last_block_hash, 10, state)
    out.write_bytes(await app.prepare_payload(ctx))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
