"""An aiohttp application served on an ephemeral 127.0.0.1 port, for tests of one HTTP part."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns its runner (the caller cleans it up) and port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]
