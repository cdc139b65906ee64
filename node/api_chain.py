"""Read-only chain endpoints: blocks, commits, delegates, schedule, accounts, transactions.

Each handler translates checked parameters into one call on the engine's read side
(``consensus/views.py``) and shapes the answer; none reaches into engine internals.

Every block and commit carries ``raw``, the hex of its exact msgpack wire bytes, which is what a
syncing node verifies signatures over (re-encoding a parsed JSON block could not reproduce the
signed bytes of a hostile or newer peer bit for bit); ``raw=1`` answers with only those bytes
and the height, compactly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from consensus.block import Block
from consensus.messages import Commit, commit_json
from gossip.codec import pack
from node.api_base import ApiError, Param, Route, dumps, encode_list_within, encode_within, page_response

RAW = Param("raw", "query", "flag", "1: only the height and the exact msgpack wire bytes (hex), not the decoded JSON.",
            default=False)
HEIGHT = Param("height", "path", "uint", "Block height (the first block is 1).", minimum=1)
_REF = "#/components/schemas/"


async def block_text(block: Block, compact: bool) -> str:
    """A block's JSON plus its wire bytes as hex (``raw``); with ``compact`` only its height and
    the bytes. Its transactions are encoded one by one, yielding to the event loop between
    them, because a full block's JSON is megabytes and encoding it in one call would stall
    every other request for tens of milliseconds."""
    raw = block.encode().hex()
    if compact:
        return dumps({"height": block.height, "raw": raw})
    doc = block.to_json()
    txs = doc.pop("txs")
    parts = []
    for tx in txs:
        parts.append(dumps(tx))
        await asyncio.sleep(0)
    return f'{dumps({**doc, "raw": raw})[:-1]},"txs":[{",".join(parts)}]}}'


def _block_answer(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")


def _commit_answer(commit: Commit, compact: bool) -> dict:
    raw = pack(commit.to_wire()).hex()
    return {"height": commit.height, "raw": raw} if compact else {**(commit_json(commit) or {}), "raw": raw}


def _not_found(what: str) -> ApiError:
    return ApiError(404, what)


async def get_blocks(ctx: Any, request: web.Request, *, from_: int | None, limit: int | None,
                     raw: bool, max_bytes: int | None) -> web.Response:
    """A page of final blocks in ascending order; without ``from``, the newest page.

    The page ends with the block that reaches the byte budget (the node's
    ``api.max_response_bytes``, or the client's ``max_bytes`` if smaller), so it holds at least
    one block; ``next`` is the height to continue from, or null once the page reaches the latest
    final block. Blocks are read and encoded one at a time.
    """
    engine = ctx.engine
    api = ctx.config.api
    top = engine.status()["final_height"]
    limit = limit or api.max_blocks_per_page
    if limit > api.max_blocks_per_page:
        raise ApiError(400, f"limit must be at most {api.max_blocks_per_page}, got {limit}")
    start = from_ if from_ is not None else max(1, top - limit + 1)
    count = max(0, min(top, start + limit - 1) - start + 1)

    async def encode(i: int) -> str:
        return await block_text(engine.block(start + i), raw)

    parts = await encode_within(count, encode, min(api.max_response_bytes, max_bytes or api.max_response_bytes))
    last = start + len(parts) - 1
    return page_response({"height": top, "next": last + 1 if last < top else None}, "blocks", parts)


async def get_latest_block(ctx: Any, request: web.Request, *, raw: bool) -> web.Response:
    block = ctx.engine.latest_block()
    if block is None:
        raise _not_found("no block yet: the chain is at genesis")
    return _block_answer(await block_text(block, raw))


async def get_block(ctx: Any, request: web.Request, *, height: int, raw: bool) -> web.Response:
    block = ctx.engine.block(height)
    if block is None:
        raise _not_found(f"no final block at height {height} (latest is {ctx.engine.status()['final_height']})")
    return _block_answer(await block_text(block, raw))


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


async def get_mempool(ctx: Any, request: web.Request, *, sender: str | None) -> web.Response:
    """Pending transactions in the order they would be included (only ``sender``'s, if given),
    as many as fit the node's byte budget; ``truncated`` says some were left out."""
    view = ctx.engine.mempool_view()
    txs = view["txs"] if sender is None else [t for t in view["txs"] if t["sender"] == sender]
    parts = await encode_list_within(txs, ctx.config.api.max_response_bytes)
    return page_response({"size": view["size"], "truncated": len(parts) < len(txs)}, "txs", parts)


def _obj(name: str) -> dict:
    return {"$ref": _REF + name}


CHAIN_ROUTES: tuple[Route, ...] = (
    Route("GET", "/blocks", get_blocks, "A page of final blocks, ascending (the newest page without `from`), "
          "within a byte budget; `next` is where to continue.",
          "chain", (Param("from", "query", "uint", "First height of the page.", minimum=1, arg="from_"),
                    Param("limit", "query", "uint", "Blocks per page (default and maximum: the node's "
                          "api.max_blocks_per_page, at most 100).", minimum=1, maximum=100), RAW,
                    Param("max_bytes", "query", "uint", "Byte budget the client accepts for the page (the node "
                          "uses the smaller of this and its api.max_response_bytes; one block is always sent).",
                          minimum=1)),
          response=_obj("BlockPage"), limit="bulk"),
    Route("GET", "/blocks/latest", get_latest_block, "The newest final block.", "chain", (RAW,),
          response=_obj("Block"), errors=(404,), limit="bulk"),
    Route("GET", "/blocks/{height}", get_block, "The final block at a height.", "chain", (HEIGHT, RAW),
          response=_obj("Block"), errors=(404,), limit="bulk"),
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
    Route("GET", "/mempool", get_mempool, "Transactions waiting for a block, within a byte budget.", "state",
          (Param("sender", "query", "node_id", "Only this account's transactions."),),
          response=_obj("Mempool"), limit="bulk"),
)
