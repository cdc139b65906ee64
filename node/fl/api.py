"""The ``/fl`` routes of the node API: the global model, its weights, the updates each block
considered (with reasons), each recent sender's standing, and this node's privacy spending."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from learning import standing
from node.api_base import ApiError, Param, Route, encode_list_within, page_response

UPDATE_ID = Param("id", "path", "hash", "Update id: SHA-256 of the encoded update (hex).")
MODEL_HASH = Param("hash", "path", "hash", "Model hash: SHA-256 of the model's canonical msgpack (hex).")
EVAL_HASH = Param("hash", "path", "hash", "SHA-256 of the evaluation set's blob (hex), as the genesis task names it.")
ROUND_HEIGHT = Param("height", "query", "uint", "Height of a final block (default: the newest).", minimum=1)
RAW = Param("raw", "query", "flag", "1: the exact msgpack bytes of the update as hex.", default=False)


def _fl(ctx: Any) -> Any:
    if getattr(ctx, "fl", None) is None:
        raise ApiError(404, "this chain runs no federated-learning application")
    return ctx.fl


async def get_model(ctx: Any, request: web.Request) -> dict:
    fl = _fl(ctx)
    app = fl.app
    current = fl.model_metrics.get("hash") == app.model_hash.hex()
    metrics = fl.model_metrics if current else {}
    # A new model is evaluated a moment after it is final: until then, the newest evaluated one.
    earlier = {} if current or not fl.model_metrics else {"evaluated": {
        k: fl.model_metrics[k] for k in ("height", "hash", "test_accuracy", "test_loss")}}
    return {**metrics, **earlier, "hash": app.model_hash.hex(), "height": app.model_height, "params": app.dim,
            "model": fl.task.model if fl.task else fl.settings.model,
            "dataset": "local files" if fl.task else fl.settings.dataset,
            "privacy": fl.settings.privacy_preset.guarantee(fl.settings.noise_multiplier),
            "privacy_preset": fl.settings.privacy_preset.preset, "rule": fl.settings.rule,
            "blob": f"/fl/model/{app.model_hash.hex()}"}


async def get_model_blob(ctx: Any, request: web.Request, hash: str) -> web.Response:
    blob = _fl(ctx).blobs.get(bytes.fromhex(hash), "model")
    if blob is None:
        raise ApiError(404, f"no model {hash[:12]} here (pruned, or never final)")
    return web.Response(body=blob, content_type="application/msgpack")


async def get_eval_set(ctx: Any, request: web.Request, hash: str) -> web.Response:
    """The task's public evaluation set (the fetching node checks its hash)."""
    blob = _fl(ctx).eval_set_blob(bytes.fromhex(hash))
    if blob is None:
        raise ApiError(404, f"no evaluation set {hash[:12]} here (not this chain's task, or not fetched yet)")
    return web.Response(body=blob, content_type="application/octet-stream")


async def get_updates(ctx: Any, request: web.Request, height: int | None) -> web.Response:
    """The round records of a final block, as many as fit the node's byte budget."""
    fl = _fl(ctx)
    final = ctx.engine.state.height
    h = final if height is None else height
    if h > final:
        raise ApiError(404, f"height {h} is not final yet (final height {final})")
    record = fl.round_record(ctx.engine.store, h)
    if record is None:
        raise ApiError(404, f"no federated-learning record for height {h}")
    updates = record.pop("updates")
    parts = await encode_list_within(updates, ctx.config.api.max_response_bytes)
    return page_response({"height": h, **record, "pending": len(fl.app.pool), "truncated": len(parts) < len(updates)},
                         "updates", parts)


async def get_update(ctx: Any, request: web.Request, id: str, raw: bool) -> dict:
    """An update by id. Blobs of every kind share one content-addressed store, so a hash may name
    a model or anything else: only bytes that decode as an update are one (else 404)."""
    fl = _fl(ctx)
    blob = fl.app.update_blob(bytes.fromhex(id))
    if blob is None:
        raise ApiError(404, f"no update {id[:12]} here")
    try:
        update = await asyncio.to_thread(fl.app.decode_update, blob)
    except ValueError:  # gossip.codec.DecodeError is one
        raise ApiError(404, f"no update {id[:12]} here ({id[:12]} names something else)") from None
    return {"id": id, "raw": blob.hex()} if raw else update.summary()


async def get_standing(ctx: Any, request: web.Request) -> web.Response:
    """Each recent sender's standing, lowest first: chain state every node derives from final
    blocks, so an operator can see why a device's updates weigh less (and whether a drift test
    holds it), as many senders as fit the node's byte budget."""
    fl = _fl(ctx)
    window = fl.app.window
    rows = sorted(({"sender": sender, "standing": standing.factor([e for _, e in entries]),
                    "excess": [e for _, e in entries], "heights": [h for h, _ in entries], "held": sender in window.held}
                   for sender, entries in window.standing.items()), key=lambda r: (r["standing"], r["sender"]))
    parts = await encode_list_within(rows, ctx.config.api.max_response_bytes)
    return page_response({"height": fl.app.model_height, "applies": standing.applies(fl.settings),
                          "window": standing.WINDOW, "low": standing.LOW, "high": standing.HIGH,
                          "floor": standing.FLOOR, "truncated": len(parts) < len(rows)}, "senders", parts)


async def get_privacy(ctx: Any, request: web.Request) -> dict:
    fl = _fl(ctx)
    if fl.trainer is None:
        raise ApiError(503, "the trainer has not started yet")
    return fl.trainer.privacy_view()


FL_ROUTES: tuple[Route, ...] = (
    Route("GET", "/fl/model", get_model, "The newest final global model: hash, height and accuracy.", "fl"),
    Route("GET", "/fl/model/{hash}", get_model_blob, "Weights of a global model (canonical msgpack).", "fl",
          (MODEL_HASH,), response={"type": "string", "format": "binary"}, errors=(400, 404),
          content_type="application/msgpack", limit="bulk"),
    Route("GET", "/fl/eval-set/{hash}", get_eval_set, "The genesis task's public evaluation set (a .npz of "
          "samples x and labels y), named by its SHA-256.", "fl", (EVAL_HASH,),
          response={"type": "string", "format": "binary"}, errors=(400, 404),
          content_type="application/octet-stream", limit="bulk"),
    Route("GET", "/fl/updates", get_updates, "The updates a final block considered (accepted or rejected and "
          "why), equivocations punished, the public-set accuracy of each candidate aggregate the rule "
          "validated (in call order), and why the round was skipped, if it was.",
          "fl", (ROUND_HEIGHT,), errors=(400, 404), limit="bulk"),
    Route("GET", "/fl/updates/{id}", get_update, "One model update by id (summary, or raw bytes).", "fl",
          (UPDATE_ID, RAW), errors=(400, 404), limit="bulk"),
    Route("GET", "/fl/standing", get_standing, "Each recent sender's standing (the factor on its weight from "
          "how far its last accepted updates scored above their rounds' lower quartile), the excess of each, "
          "and whether a drift test holds it; lowest first, within the byte budget.", "fl", errors=(404,),
          limit="bulk"),
    Route("GET", "/fl/privacy", get_privacy, "The chain's privacy preset, what it gives, and the epsilon this node "
          "has spent of its budget (and whether the budget has stopped its updates).", "fl",
          errors=(404, 503)),
)
