"""Attack scenarios, each run by ``run_hostile`` in a process of its own against real daemons.

Every scenario is a module-level coroutine (the attacker process imports it by name) that takes
picklable arguments and returns a picklable report of what the attacker saw, which the test then
checks next to the victims' invariants. Scenarios that misbehave below the session (inside the
WebSocket upgrade or the handshake, or by splicing a TCP connection) use the raw helpers in
:mod:`tests.hostile.rawws`; those that speak the protocol use :class:`tests.hostile.peer.HostilePeer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

import aiohttp

from gossip.noise import XXHandshake, generate_private
from gossip.wire import PROLOGUE
from tests.hostile.peer import HostilePeer
from tests.hostile.rawws import (
    Frame,
    accept_upgrade,
    payload,
    read_frame,
    upgrade,
    ws_frame,
)


def empty_maps(size: int) -> bytes:
    """``size`` bytes of msgpack: an array of 8 arrays, each of about size/8 empty maps.

    The costliest msgpack there is per byte: every 0x80 byte becomes a Python dict."""
    n = (size - 1) // 8 - 5
    inner = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    return b"\x98" + inner * 8


async def oversized_hellos(url: str, count: int, size: int) -> list[float]:
    """Send ``count`` first frames of ``size`` bytes of empty maps, one connection each; return the
    seconds from the first byte of each frame until the victim's close frame (or the end of the
    stream). The frame is built before the clock starts (a zero mask key: no masking work), so
    what is timed is the victim's reaction, not the attacker's own CPU."""
    parts = urlsplit(url)
    frame = ws_frame(empty_maps(size))
    cut_off = []
    for _ in range(count):
        reader, writer, _status = await upgrade(parts.hostname or "127.0.0.1", parts.port or 80)
        start = time.perf_counter()
        try:
            writer.write(frame)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                async with asyncio.timeout(30):
                    while (await read_frame(reader)).opcode != 0x8:
                        pass  # the victim's own handshake frames
            cut_off.append(time.perf_counter() - start)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return cut_off


async def _half_open(host: str, port: int, announce: int, partial: int, hold_s: float,
                     t0: float) -> tuple[int, float, float]:
    """One connection that upgrades and never finishes the handshake: it announces a frame of
    ``announce`` bytes and sends ``partial`` of them (or nothing if ``announce`` is 0).
    Returns (HTTP status, seconds since t0 it was upgraded, seconds since t0 it was cut off:
    when the victim's close frame, or the end of the stream, arrived)."""
    try:
        reader, writer, status = await upgrade(host, port)
    except (OSError, asyncio.IncompleteReadError):
        return 0, 0.0, 0.0
    opened = time.perf_counter() - t0
    try:
        if status == 101 and announce:
            writer.write(ws_frame(None, length=announce))
            writer.write(b"\x00" * partial)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(hold_s):
                await reader.read(65536)  # the victim speaks only to close (or just hangs up)
        cut_off = time.perf_counter() - t0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return status, opened, cut_off


async def half_open_flood(host: str, port: int, waves: int, per_wave: int, announce: int,
                          partial: int, hold_s: float) -> dict:
    """Waves of concurrent connections that stop in the middle of the handshake: half announce
    a huge first frame and send part of it, half stay silent. Reports what the victim allowed."""
    t0 = time.perf_counter()
    results = []
    for _ in range(waves):
        tasks = [_half_open(host, port, announce if i % 2 == 0 else 0, partial, hold_s, t0)
                 for i in range(per_wave)]
        results += await asyncio.gather(*tasks)
    upgraded = [(opened, closed, i % 2 == 0) for i, (status, opened, closed) in
                enumerate(results) if status == 101]
    events = sorted([(o, 1) for o, _, _ in upgraded] + [(c, -1) for _, c, _ in upgraded])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return {
        "attempts": len(results),
        "upgraded": len(upgraded),
        "refused": sum(1 for status, _, _ in results if status != 101),
        "peak_concurrent": peak,
        "longest_big_s": max((c - o for o, c, big in upgraded if big), default=0.0),
        "longest_silent_s": max((c - o for o, c, big in upgraded if not big), default=0.0),
    }


async def poison_peer_exchange(url: str, chain_id: str, trap_port: int, sybils: int, frames: int,
                               hold_s: float) -> dict:
    """Sybils flood the victim with peer-exchange frames of URLs it must never dial: the
    unspecified address (which Linux connects to the local host, so a dial is seen by our trap
    listener without any packet leaving 127.0.0.0/8) on the trap port and on many closed ports."""
    hits = 0

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        hits += 1
        writer.close()

    server = await asyncio.start_server(trap, "127.0.0.1", trap_port)
    bad = [f"http://0.0.0.0:{trap_port}", f"http://[::]:{trap_port}"]
    filler = [f"http://0.0.0.0:{p}" for p in range(20000, 20000 + 64 * frames)]
    peers = [HostilePeer(chain_id) for _ in range(sybils)]
    report = {"ids": [p.node_id for p in peers], "sent": 0, "closed": 0, "refused": 0}
    try:
        for peer in peers:
            await peer.__aenter__()
            try:
                await peer.connect(url)
            except Exception:  # the victim may refuse us outright once our address misbehaved
                report["refused"] += 1
                await peer.close()
                continue
            for f in range(frames):
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await peer.send_peers(bad + filler[f * 62:(f + 1) * 62])
                    report["sent"] += 1
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            await asyncio.gather(*(p.cut_off(0.2) for p in peers))
        report["closed"] = sum(p.closed for p in peers)
    finally:
        for peer in peers:
            await peer.close()
        server.close()
    report["trap_hits"] = hits
    return report


async def hold_sybils(url: str, chain_id: str, count: int, hold_s: float) -> dict:
    """Keep up to ``count`` authenticated connections with fresh keys open for ``hold_s``,
    opening a new one whenever the victim lets one in (so a slot freed by an honest peer is
    retaken at once), and reading so that pings are answered."""
    peers: list[HostilePeer] = []
    report = {"tried": 0, "admitted": 0, "refused": 0}
    deadline = time.monotonic() + hold_s
    try:
        while time.monotonic() < deadline:
            alive = [p for p in peers if not p.closed]
            if len(alive) < count:
                peer = HostilePeer(chain_id)
                await peer.__aenter__()
                peers.append(peer)
                report["tried"] += 1
                try:
                    await peer.connect(url, timeout=5)
                except Exception:
                    report["refused"] += 1
                    await peer.close()
                    await asyncio.sleep(0.1)
                    continue
                await peer.cut_off(0.3)  # a refusal (too many peers) comes right after the handshake
                if peer.closed:
                    report["refused"] += 1
                else:
                    report["admitted"] += 1
            await asyncio.gather(*(p.cut_off(0.1) for p in alive))
        report["held"] = sum(not p.closed for p in peers)
        return report
    finally:
        for peer in peers:
            await peer.close()


async def impersonate(request_head: bytes, c_reader: asyncio.StreamReader,
                      c_writer: asyncio.StreamWriter, target_port: int) -> int | None:
    """Answer a dialler ourselves, as the node behind us: run our own handshake with that node
    to obtain its identity payload (its id and its signature), and present that payload on the
    session we run with the dialler, under our own Noise static key. Returns the close code the
    dialler answered with."""
    static = generate_private()
    c_writer.write(accept_upgrade(request_head))
    first = payload(await read_frame(c_reader))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{target_port}/p2p")
        with_node = XXHandshake(True, static, PROLOGUE)
        await ws.send_bytes(with_node.write_message(first[32:]))  # the dialler's own opening
        their_identity = with_node.read_message((await ws.receive(timeout=5)).data)
        await ws.close()
    with_dialler = XXHandshake(False, static, PROLOGUE)
    with_dialler.read_message(first)
    c_writer.write(ws_frame(with_dialler.write_message(their_identity), mask=False))
    async with asyncio.timeout(5):
        while True:
            frame = await read_frame(c_reader)
            if frame.opcode == 8:  # close: its first two bytes are the code
                return int.from_bytes(payload(frame)[:2], "big")


async def accepts(port: int) -> bool:
    """Whether a TCP connection to ``port`` on 127.0.0.1 is accepted right now."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def relay(listen_port: int, target_port: int, duration_s: float, inject_after_s: float,
                junk: int) -> dict:
    """A TCP relay in front of a node. It takes over the first peer connection that arrives once
    the node accepts connections (:func:`impersonate` needs it up); every other one it forwards
    to the real node, frame by frame, and once a connection has carried traffic for
    ``inject_after_s`` it injects ``junk`` frames of garbage in each direction, as a router on the
    path could. Reports how the impersonation ended and, per injected connection, how long it
    survived the injection. (It used to wait for an injection before taking a connection over;
    when every dialler had come through before that, none came again and it never tried.)"""
    report: dict = {"connections": 0, "injected": 0, "survived_s": [], "impersonation": None}
    conns: set[asyncio.Task] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                frame: Frame = await read_frame(reader)
                writer.write(frame.raw)  # one write per frame: injected frames fall between

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the relay's end cancels every handler
            await serve(c_reader, c_writer)

    async def serve(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        conns.add(asyncio.current_task())  # type: ignore[arg-type]
        report["connections"] += 1
        try:
            request = await c_reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            c_writer.close()
            return
        gossip = b"upgrade: websocket" in request.lower()  # not an HTTP API call
        if gossip and report["impersonation"] is None and await accepts(target_port):
            report["impersonation"] = "started"
            try:
                report["impersonation"] = await impersonate(request, c_reader, c_writer, target_port)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, aiohttp.ClientError) as exc:
                report["impersonation"] = f"{type(exc).__name__}: {exc}"
            finally:
                c_writer.close()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            c_writer.close()
            return
        try:
            s_writer.write(request)
            head = await s_reader.readuntil(b"\r\n\r\n")
            c_writer.write(head)
            if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                return
            pumps = [asyncio.create_task(pump(c_reader, s_writer)),
                     asyncio.create_task(pump(s_reader, c_writer))]
            done, _ = await asyncio.wait(pumps, timeout=inject_after_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                injected_at = time.perf_counter()
                for _ in range(junk):
                    s_writer.write(ws_frame(b"\xc1"))               # client to server: masked
                    c_writer.write(ws_frame(b"\xc1", mask=False))  # server to client
                report["injected"] += 1
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                report["survived_s"].append(time.perf_counter() - injected_at)
            for task in pumps:
                task.cancel()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (c_writer, s_writer):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    await asyncio.sleep(duration_s)
    server.close()
    for task in list(conns):
        task.cancel()
    await asyncio.gather(*conns, return_exceptions=True)
    return report
