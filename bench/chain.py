"""Chain benchmark: block time and finality latency of real daemons, and transaction validation.

* Block time and finality latency: N daemons (separate processes, 127.0.0.1) on the default
  genesis (2 s slots). A client subscribes to every node's ``/subscribe`` stream and records when
  each node learns that a block is final; finality latency is that moment minus the block's
  proposal timestamp. Block time is the gap between consecutive final blocks' timestamps.
* Transaction validation: the node's full admission path (decode, signature, state checks,
  mempool) against raw PyNaCl ``verify`` of the same signed bytes, in the same process.

Run: ``python -m bench chain [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from nacl.signing import VerifyKey

from bench.common import final_blocks, percentiles, write_result
from consensus.genesis import make_genesis
from consensus.mempool import Mempool
from consensus.state import ChainState
from consensus.tx import Tx
from gossip.codec import pack, unpack
from gossip.crypto import KeyPair
from tests.integration.harness import Testnet


def measure_testnet(n: int, blocks: int, slot_ms: int, root: Path) -> dict:
    net = Testnet(root, n, slot_ms=slot_ms)
    net.start_all()
    try:
        net.wait_height(1, timeout=60)
        seconds = blocks * slot_ms / 1000 * 3 + 30

        async def watch_all() -> list[list[tuple[dict, float]]]:
            return await asyncio.gather(*(final_blocks(net.url(i), seconds, blocks) for i in range(n)))

        seen = [{"node": i, "height": e["height"], "time_ms": e["time_ms"], "final_at_ms": at}
                for i, events in enumerate(asyncio.run(watch_all())) for e, at in events]
    finally:
        net.stop_all()
    latency = [e["final_at_ms"] - e["time_ms"] for e in seen]
    times = sorted({e["height"]: e["time_ms"] for e in seen}.items())
    block_time = [b[1] - a[1] for a, b in zip(times, times[1:]) if b[0] == a[0] + 1]
    return {"nodes": n, "slot_ms": slot_ms, "blocks": len(times),
            "block_time_ms": percentiles(block_time), "finality_latency_ms": percentiles(latency)}


def measure_tx_validation(count: int) -> dict:
    """``count`` transfers admitted to a mempool as a node admits them, from as many senders as the
    mempool's per-sender bound needs (each sender's nonces 1, 2, ...)."""
    per_sender = Mempool().max_per_sender
    senders = [KeyPair.generate() for _ in range(-(-count // per_sender))]
    to = KeyPair.generate().node_id
    genesis = make_genesis("bench", [to, *(k.node_id for k in senders)], balance=10**12)
    state = ChainState.from_genesis(genesis)
    txs = [Tx("transfer", "bench", k.node_id, nonce + 1, [to, 1]).signed(k)
           for k in senders for nonce in range(per_sender)][:count]
    wire = [pack(t.to_wire()) for t in txs]
    signed = [(VerifyKey(bytes.fromhex(t.sender)), t.signed_bytes(), t.signature) for t in txs]

    def raw() -> float:
        t0 = time.perf_counter()
        for vk, msg, sig in signed:
            vk.verify(msg, sig)
        return time.perf_counter() - t0

    def ours() -> float:
        pool = Mempool(max_txs=count + 1)
        t0 = time.perf_counter()
        for w in wire:
            reason = pool.add(Tx.from_wire(unpack(w, genesis.max_tx_bytes)), state)
            if reason is not None:
                raise RuntimeError(reason)
        return time.perf_counter() - t0

    # interleaved, best of five each: load that drifts during the run hits both sides alike
    pairs = [(raw(), ours()) for _ in range(5)]
    raw_s = min(p[0] for p in pairs)
    ours_s = min(p[1] for p in pairs)
    return {"txs": count, "raw_verify_per_s": count / raw_s, "node_admission_per_s": count / ours_s,
            "ratio_to_raw": raw_s / ours_s, "goal_ratio": 0.7}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["testnets"]
    labels = [str(r["nodes"]) for r in runs]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, key in enumerate(("block_time_ms", "finality_latency_ms")):
        ax[k].bar([x + "\np50" for x in labels], [r[key]["p50"] for r in runs])
        ax[k].bar([x + "\np95" for x in labels], [r[key]["p95"] for r in runs])
        ax[k].set_title(key.replace("_", " "))
        ax[k].set_xlabel("daemons")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench chain", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer blocks, 4 daemons only")
    parser.add_argument("--slot-ms", type=int, default=2000)
    args = parser.parse_args(argv)
    sizes, blocks = ((4,), 6) if args.quick else ((4, 8), 20)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [measure_testnet(n, blocks, args.slot_ms, Path(tmp) / f"net{n}") for n in sizes]
    result = {"testnets": runs, "tx_validation": measure_tx_validation(1000 if args.quick else 5000)}
    path = write_result("chain", result)
    plot(result, path.with_suffix(".png"))
    print(f"{'daemons':>8} {'blocks':>7} {'block p50':>10} {'block p95':>10} {'final p50':>10} {'final p95':>10}")
    for r in runs:
        b, f = r["block_time_ms"], r["finality_latency_ms"]
        print(f"{r['nodes']:>8} {r['blocks']:>7} {b.get('p50', 0):>9.0f}ms {b.get('p95', 0):>9.0f}ms "
              f"{f.get('p50', 0):>9.0f}ms {f.get('p95', 0):>9.0f}ms")
    tv = result["tx_validation"]
    print(f"tx validation: node {tv['node_admission_per_s']:.0f}/s, raw PyNaCl verify {tv['raw_verify_per_s']:.0f}/s, "
          f"ratio {tv['ratio_to_raw']:.2f} (goal >= 0.7)")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()


def report(result: dict) -> str:
    from bench.common import md_table

    rows = [[r["nodes"], r["blocks"], r["block_time_ms"].get("p50"), r["block_time_ms"].get("p95"),
             r["finality_latency_ms"].get("p50"), r["finality_latency_ms"].get("p95")] for r in result["testnets"]]
    tv = result["tx_validation"]
    return f"""## Chain: block time, finality latency, transaction validation

Real daemons as separate processes on 127.0.0.1 (counter application, default 2 s slots). Finality
latency is the time from a block's proposal timestamp until each node announces it final on
`/subscribe`. Command: `python -m bench chain` (measured {result['measured_at']}).

{md_table(["daemons", "blocks", "block time p50 (ms)", "p95", "finality p50 (ms)", "p95"], rows)}

Transaction validation (decode, signature, state checks, mempool admission) against raw PyNaCl
`verify` of the same signed bytes in the same process: {tv['node_admission_per_s']:.0f}/s vs
{tv['raw_verify_per_s']:.0f}/s, ratio **{tv['ratio_to_raw']:.2f}** (goal >= {tv['goal_ratio']}).

![chain](results/chain.png)
"""
