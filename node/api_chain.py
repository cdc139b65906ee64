"""Read-only chain endpoints: blocks, commits, delegates, schedule, accounts, transactions.

Each handler translates checked parameters into one call on the engine's read side
(``consensus/views.py``) and shapes the answer; none reaches into engine internals.

Every block and commit carries ``raw``, the hex of its exact msgpack wire bytes, which is what a
syncing node verifies signatures over (re-encoding a parsed JSON block could not reproduce the
signed bytes of a hostile or newer peer bit for bit); ``raw=1`` answers with only those bytes
and the height, compactly.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from consensus.types import Block, Commit, commit_json
from gossip.codec import pack
from node.api_base import ApiError, Param, Route

RAW = Param("raw", "query", "flag", "1: only the height and the exact msgpack wire bytes (hex), not the decoded JSON.",
            default=False)
HEIGHT = Param("height", "path", "uint", "Block height (the first block is 1).", minimum=1)
_REF = "#/components/schemas/"


def block_json(block: Block, compact: bool) -> dict:
    """A block's JSON plus its wire bytes as hex; with ``compact`` only its height and the bytes."""
    raw = block.encode().hex()
    return {"height": block.height, "raw": raw} if compact else {**block.to_json(), "raw": raw}


def _commit_answer(commit: Commit, compact: bool) -> dict:
    raw = pack(commit.to_wire()).hex()
    return {"height": commit.height, "raw": raw} if compact else {**(commit_json(commit) or {}), "raw": raw}


def _not_found(what: str) -> ApiError:
    return ApiError(404, what)


async def get_blocks(ctx: Any, request: web.Request, *, from_: int | None, limit: int | None,
                     raw: bool) -> dict:
    """A page of final blocks in ascending order; without ``from``, the newest page."""
    engine = ctx.engine
    top = engine.status()["final_height"]
    limit = limit or ctx.config.api.max_blocks_per_page
    if limit > ctx.config.api.max_blocks_per_page:
        raise ApiError(400, f"limit must be at most {ctx.config.api.max_blocks_per_page}, got {limit}")
    start = from_ if from_ is not None else max(1, top - limit + 1)
    blocks = engine.blocks(start, limit) if start <= top else []
    return {"height": top, "blocks": [block_json(b, raw) for b in blocks]}


async def get_latest_block(ctx: Any, request: web.Request, *, raw: bool) -> dict:
    block = ctx.engine.latest_block()
    if block is None:
        raise _not_found("no block yet: the chain is at genesis")
    return block_json(block, raw)


async def get_block(ctx: Any, request: web.Request, *, height: int, raw: bool) -> dict:
    block = ctx.engine.block(height)
    if block is None:
        raise _not_found(f"no final block at height {height} (latest is {ctx.engine.status()['final_height']})")
    return block_json(block, raw)


async def get_commit(ctx: Any, request: web.Request, *, height: int, raw: bool) -> dict:
    commit = ctx.engine.commit(height)
    if commit is None:
        raise _not_found(f"no commit for height {height}")
    return _commit_answer(commit, raw)


async def get_delegates(ctx: Any, request: web.Request) -> dict:
    return ctx.engine.delegates_view()


async def get_schedule(ctx: Any, request: web.Request, *, count: int) -> dict:
    return ctx.engine.schedule_view(count)


async def get_account(ctx: Any, request: web.Request, *, node_id: str) -> dict:
    account = ctx.engine.account_view(node_id)
    if account is None:
        raise _not_found(f"no account {node_id}")
    return account


async def get_tx(ctx: Any, request: web.Request, *, tx_hash: str) -> dict:
    found = ctx.engine.tx_view(tx_hash)
    if found is None:
        raise _not_found(f"no transaction {tx_hash} in a block or the mempool")
    return found


async def get_mempool(ctx: Any, request: web.Request) -> dict:
    return ctx.engine.mempool_view()


def _obj(name: str) -> dict:
    return {"$ref": _REF + name}


CHAIN_ROUTES: tuple[Route, ...] = (
    Route("GET", "/blocks", get_blocks, "A page of final blocks, ascending (the newest page without `from`).",
          "chain", (Param("from", "query", "uint", "First height of the page.", minimum=1, arg="from_"),
                    Param("limit", "query", "uint", "Blocks per page (default and maximum: the node's "
                          "api.max_blocks_per_page, at most 100).", minimum=1, maximum=100), RAW),
          response=_obj("BlockPage")),
    Route("GET", "/blocks/latest", get_latest_block, "The newest final block.", "chain", (RAW,),
          response=_obj("Block"), errors=(404,)),
    Route("GET", "/blocks/{height}", get_block, "The final block at a height.", "chain", (HEIGHT, RAW),
          response=_obj("Block"), errors=(404,)),
    Route("GET", "/commit/{height}", get_commit, "The precommit signatures that made a block final.",
          "chain", (HEIGHT, RAW), response=_obj("Commit"), errors=(404,)),
    Route("GET", "/delegates", get_delegates, "The current delegates with stake, trust and jail status.",
          "dpos"),
    Route("GET", "/schedule", get_schedule, "Upcoming slots and their proposers.", "dpos",
          (Param("count", "query", "uint", "How many slots.", default=10, minimum=1, maximum=100),)),
    Route("GET", "/accounts/{node_id}", get_account, "An account: balance, stake, nonce, trust, votes.",
          "state", (Param("node_id", "path", "node_id", "The account's node id (hex public key)."),),
          errors=(404,)),
    Route("GET", "/txs/{tx_hash}", get_tx, "A transaction, committed (with its height) or pending.", "state",
          (Param("tx_hash", "path", "hash", "SHA-256 of the transaction's wire bytes, hex."),), errors=(404,)),
    Route("GET", "/mempool", get_mempool, "Transactions waiting for a block.", "state"),
)
