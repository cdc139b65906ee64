"""Network simulation at city scale: gossip delivery, amplification and finality on 1,000 nodes.

Everything runs the real code (``netsim``) in one process on a virtual clock, over simulated
links of 50 +- 20 ms one-way latency, 10 Mbit/s per direction and 1% loss (TCP: a loss costs a
200 ms retransmission and delays what follows on the link):

(a) Dissemination, gossip-only nodes (``netsim.swarm``): 1 KB messages pushed and 50 KB bodies
    announced and pulled, from random publishers, under gossipsub (D = 6) and under flooding
    (every message to every connected peer), and flooding on a full mesh of 8 nodes (DESIGN's
    small network): delivery latency, copies received per node per message, bodies per node.
(b) Full node stacks (``netsim.sim``): consensus engine, chain store and the simulated update
    application (``netsim.updates``) on every node, 21 delegates, 2 s slots, 10 model updates a
    slot and the same probes meanwhile: finality, block time, update-to-final, memory per node,
    invariants.

Run: ``python -m bench netsim [--quick] [--part swarm|chain|all] [--nodes N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import RESULTS, md_table, write_result
from gossip.config import MeshParams
from node.netsim.network import LinkParams
from node.netsim.sim import SimConfig, rss_mb, pct
from node.netsim.sim import run as run_chain
from node.netsim.swarm import PULL, PUSH, Swarm

DIAL8 = {"max_outbound": 8, "max_inbound": 24}
"""Half the default connection slots (16 dialled, 48 accepted): the default until relays came."""

CHOKED = MeshParams().d_eager
"""Pushing mesh peers per node (``mesh.d_eager``) in the default and the choked profiles."""

WARMUP = 20
"""Unmeasured 1 KB messages (one every 250 ms) between the meshes forming and the probes: the
figures describe a network that has been carrying traffic, as a running one has, not its first
seconds (choking needs a few copies from each mesh peer before it judges one)."""

GOALS = {"small_p99_ms": 200.0, "large_p99_ms": 1000.0, "duplicates": 3.0, "finality_p50_slots": 2.0,
         "update_to_final_p50_slots": 3.0}


def measure_swarm(n: int, seed: int, dissemination: str, small: int, large: int, *,
                  small_size: int = 1024, large_size: int = 50 * 1024, bootstrap: int = 3,
                  gossip: dict[str, Any] | None = None, link: LinkParams | None = None,
                  warmup: int = WARMUP) -> dict[str, Any]:
    """Probes on a swarm of ``n`` gossip-only nodes; figures per size class. ``gossip`` overrides
    :class:`gossip.GossipConfig` fields of every node (``mesh``, connection slots), ``link`` the
    links' parameters. ``warmup`` unmeasured 1 KB messages go first (see :data:`WARMUP`)."""
    started, rss0 = time.perf_counter(), rss_mb()
    settings: dict[str, Any] = {"dissemination": dissemination, **(gossip or {})}
    swarm = Swarm(n, seed, settings=settings, bootstrap=bootstrap, link=link)
    sent: list[tuple[bytes, float, int]] = []
    out: dict[str, Any] = {}

    def counts() -> dict[str, tuple[int, int, int]]:
        metrics = [m.gossip.metrics() for m in swarm.live() if m.gossip is not None]
        return {topic: (sum(x.topics[topic].msgs_in for x in metrics if topic in x.topics),
                        sum(x.topics[topic].delivered for x in metrics if topic in x.topics),
                        sum(x.topics[topic].bodies_in for x in metrics if topic in x.topics))
                for topic in (PUSH, PULL)}

    async def scenario() -> None:
        await swarm.start_all()
        await swarm.until(8.0)
        for k in range(warmup):
            await swarm.publish(swarm.rng.randrange(n), f"warmup{k:010d}".encode(), small_size)
            await swarm.until(swarm.loop.time() + 0.25)
        await swarm.until(swarm.loop.time() + 2.0)
        out["before"] = counts()
        for k in range(small + large):
            size = small_size if k < small else large_size
            tag = f"probe{k:011d}".encode()
            publisher = swarm.rng.randrange(n)
            sent.append((tag, await swarm.publish(publisher, tag, size), size))
            await swarm.until(swarm.loop.time() + 0.5)
        await swarm.until(swarm.loop.time() + 5.0)
        out["rss_mb"] = rss_mb()
        out["metrics"] = [m.gossip.metrics() for m in swarm.live() if m.gossip is not None]
        out["after"] = counts()
        await swarm.stop_all()

    swarm.run(scenario())
    metrics = out["metrics"]
    figures: dict[str, Any] = {"nodes": n, "seed": seed, "dissemination": dissemination, "warmup_messages": warmup,
                               "memory_per_node_mb": (out["rss_mb"] - rss0) / n,
                               "peers": pct([m.peers_connected for m in metrics])}
    for name, topic, size in (("small", PUSH, small_size), ("large", PULL, large_size)):
        tags = [(tag, at) for tag, at, s in sent if s == size]
        latencies = [(arrival - at) * 1000 for tag, at in tags
                     for i, arrival in swarm.arrivals(tag).items()]
        copies, delivered, bodies = (a - b for a, b in zip(out["after"][topic], out["before"][topic]))
        figures[name] = {"size": size, "messages": len(tags), "delivery_ms": pct(latencies),
                         "delivered_share": len(latencies) / max(1, len(tags) * (n - 1)),
                         "copies_per_node_per_message": copies / max(1, delivered),
                         "duplicates_per_node_per_message": copies / max(1, delivered) - 1,
                         "bodies_per_node_per_message": bodies / max(1, delivered)}
    sent_bytes = sum(sum(t.bytes_out for t in m.topics.values()) + m.control_bytes_out for m in metrics)
    figures["control_share_of_bytes"] = sum(m.control_bytes_out for m in metrics) / max(1, sent_bytes)
    figures["wall_s"] = time.perf_counter() - started
    return figures


def _swarm_part(quick: bool, nodes: int, only: set[str] | None = None) -> dict[str, Any]:
    """Each profile's row; with ``only``, just those profiles, the others kept from the last run.
    Flooding sends every message to every peer (about three times the work of the mesh per
    message), so it gets a third of the probes: its figures are per message."""
    small, large = (10, 3) if quick else (30, 10)
    previous = _last_run()
    rows = dict(previous.get("swarm", {})) if only and previous.get("quick") == quick else {}
    profiles: list[tuple[str, int, str, dict[str, Any], int]] = [
        # the default: relays on, choking on (3 mesh peers push to each node, the others announce)
        ("gossipsub", nodes, "gossipsub", {}, 1),
        ("unchoked", nodes, "gossipsub", {"gossip": {"mesh": MeshParams(d_eager=0)}}, 1),
        ("no_relay", nodes, "gossipsub", {"gossip": {"mesh": MeshParams(relay=False)}}, 1),
        # where the delivery time goes: hops (a node's peer count sets how far flood publishing
        # and relays reach at once) or retransmissions (the lossy links)
        ("dial8", nodes, "gossipsub", {"gossip": DIAL8}, 1),
        ("dial8_no_relay", nodes, "gossipsub", {"gossip": {**DIAL8, "mesh": MeshParams(relay=False)}}, 1),
        ("choked_lossless", nodes, "gossipsub", {"link": LinkParams(loss=0.0)}, 1),
        ("flood", nodes, "flood", {}, 3), ("full_mesh_8", 8, "flood", {}, 1)]
    for label, n, policy, extra, share in profiles:
        if only and label not in only:
            continue
        rows[label] = measure_swarm(n, 1, policy, max(1, small // share), max(1, large // share),
                                    bootstrap=7 if n == 8 else 3, **extra)
        print(f"  swarm {label} ({n} nodes): {rows[label]['wall_s']:.0f} s", flush=True)
        write_result("netsim", _merge("swarm", rows, quick))  # a long run keeps what it measured so far
    return rows


def _chain_part(quick: bool, nodes: int) -> dict[str, Any]:
    config = SimConfig(nodes=nodes, delegates=min(21, nodes), seed=1, slots=4 if quick else 6, warmup_s=5.0,
                       small_probes=4, large_probes=2, updates_per_slot=4 if quick else 10, link=LinkParams())
    return run_chain(config)


def _last_run() -> dict[str, Any]:
    """What the last run wrote (``write_result("netsim", ...)``), so a partial run keeps the rest."""
    path = RESULTS / "netsim.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _merge(part: str, value: dict[str, Any], quick: bool) -> dict[str, Any]:
    previous = _last_run()
    result = {k: previous[k] for k in ("swarm", "chain") if k in previous and previous.get("quick") == quick}
    result.update({part: value, "quick": quick, "link": {"latency_ms": "50 +- 20", "bandwidth_mbit_s": 10,
                                                         "loss": 0.01, "rto_ms": 200}})
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench netsim", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 nodes, fewer probes and slots")
    parser.add_argument("--part", choices=("swarm", "chain", "all"), default="all")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--only", default="", help="swarm profiles to run (comma-separated), keeping the others")
    args = parser.parse_args(argv)
    nodes = args.nodes or (100 if args.quick else 1000)
    only = set(filter(None, args.only.split(",")))
    result: dict[str, Any] = {}
    for part, fn in (("swarm", lambda q, n: _swarm_part(q, n, only)), ("chain", _chain_part)):
        if args.part in (part, "all"):
            started = time.perf_counter()
            result = _merge(part, fn(args.quick, nodes), args.quick)
            print(f"[netsim {part}: {time.perf_counter() - started:.0f} s]", flush=True)
            write_result("netsim", result)
    if "swarm" in result:
        _plot(result)
    print(_tables(result))
    return result


def _plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["swarm"]
    labels = list(rows)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    x = range(len(labels))
    for k, (cls, pcts) in enumerate((("small", ("p50", "p99")), ("large", ("p50", "p99")))):
        for j, q in enumerate(pcts):
            ax[0].bar([i + 0.2 * (2 * k + j) - 0.3 for i in x], [rows[r][cls]["delivery_ms"].get(q, 0) for r in labels],
                      width=0.2, label=f"{rows[labels[0]][cls]['size'] // 1024} KB {q}")
    ax[0].axhline(GOALS["small_p99_ms"], ls=":", c="k")
    ax[0].axhline(GOALS["large_p99_ms"], ls="--", c="k")
    ax[0].set(xticks=list(x), xticklabels=[f"{r}\n({rows[r]['nodes']} nodes)" for r in labels], ylabel="ms",
              title="gossip delivery latency (goals dotted: 1 KB, dashed: 50 KB)")
    ax[0].legend(fontsize=7)
    ax[1].bar(list(x), [rows[r]["small"]["duplicates_per_node_per_message"] for r in labels])
    ax[1].axhline(GOALS["duplicates"], ls=":", c="k")
    ax[1].set(xticks=list(x), xticklabels=labels, title="duplicate receptions per node per 1 KB message")
    fig.tight_layout()
    fig.savefig(RESULTS / "netsim.png", dpi=110)
    plt.close(fig)


def _ms(p: dict[str, Any], q: str) -> Any:
    return p.get(q) if p.get("n") else None


def _tables(r: dict[str, Any]) -> str:
    lines = []
    if "swarm" in r:
        rows = []
        for label, row in r["swarm"].items():
            s, lg = row["small"], row["large"]
            rows.append([label, row["nodes"], _ms(s["delivery_ms"], "p50"), _ms(s["delivery_ms"], "p99"),
                         s["duplicates_per_node_per_message"], _ms(lg["delivery_ms"], "p50"),
                         _ms(lg["delivery_ms"], "p99"), lg["bodies_per_node_per_message"],
                         min(s["delivered_share"], lg["delivered_share"]), row["memory_per_node_mb"], row["wall_s"]])
        lines.append(md_table(["dissemination", "nodes", "1 KB p50 (ms)", "1 KB p99 (ms)", "duplicates / node / msg",
                               "50 KB p50 (ms)", "50 KB p99 (ms)", "bodies / node / msg", "delivered share",
                               "MB / node", "wall s"], rows))
    if "chain" in r:
        c = r["chain"]
        g = c["gossip"]
        rows = [[c["config"]["nodes"], c["config"]["delegates"], c["blocks"], _ms(c["block_time_ms"], "p50"),
                 _ms(c["finality_ms"], "p50"), _ms(c["finality_ms"], "p95"), _ms(c["finality_slots"], "p50"),
                 _ms(g["small"]["delivery_ms"], "p99"), _ms(g["large"]["delivery_ms"], "p99"),
                 g["consensus"]["duplicates_per_node_per_message"], c["updates"]["published"],
                 c["updates"]["fates"].get("included", 0), _ms(c["updates"]["to_final_slots"], "p50"),
                 _ms(c["updates"]["to_final_slots"], "p95"), c["memory_per_node_mb"]["at_end"],
                 len(c["violations"]), c["wall_s"]]]
        lines.append(md_table(["nodes", "delegates", "blocks", "block time p50 (ms)", "finality p50 (ms)", "p95",
                               "finality p50 (slots)", "1 KB p99 (ms)", "50 KB p99 (ms)",
                               "consensus duplicates / node / msg", "updates", "in a block",
                               "update-to-final p50 (slots)", "p95 (slots)", "MB / node", "violations", "wall s"],
                              rows))
    return "\n\n".join(lines)


def _verdict(value: float, goal: float, what: str, unit: str = "") -> str:
    if value != value:  # nan: not measured
        return f"{what}: not measured"
    if value <= goal:
        return f"{what} {value:.4g}{unit}: meets the goal (<= {goal:g}{unit})"
    return f"{what} {value:.4g}{unit}: misses the goal (<= {goal:g}{unit}) by {value - goal:.3g}{unit} ({value / goal:.2f}x)"


def _reduced(r: dict[str, Any]) -> str:
    """Say so when a part ran on fewer nodes than the goals name (the machine is shared)."""
    notes = []
    if "chain" in r and r["chain"]["config"]["nodes"] < 1000:
        notes.append(f"(b) ran on {r['chain']['config']['nodes']} nodes, a reduced profile "
                     f"(`--part chain --nodes {r['chain']['config']['nodes']}`, {r['chain']['wall_s']:.0f} s of wall time): "
                     "a run of 1,000 full stacks got about a tenth of a core on this 2-core machine shared by "
                     "four (load average 15 to 30) and was stopped unfinished")
    small = [k for k, row in r.get("swarm", {}).items() if k != "full_mesh_8" and row["nodes"] < 1000]
    if small:
        notes.append(f"swarm profile(s) {', '.join(small)} ran on fewer nodes (see the table), a reduced profile")
    return "".join(f"\n**Reduced:** {n}." for n in notes)


def _choking(rows: dict[str, Any]) -> list[str]:
    """What choking changes: the default mesh, d_eager peers pushing to each node, against all of them."""
    if "unchoked" not in rows:
        return []
    on, off = rows["gossipsub"], rows["unchoked"]

    def p99(row: dict[str, Any], size: str) -> float:
        return row[size]["delivery_ms"].get("p99", float("nan"))

    dup_on, dup_off = (r["small"]["duplicates_per_node_per_message"] for r in (on, off))
    return [f"without choking (`mesh.d_eager = 0`, the `unchoked` row): {dup_off:.2f} duplicates per node per "
            f"message, which misses the goal (<= {GOALS['duplicates']:g})",
            f"choking: {dup_off:.2f} -> {dup_on:.2f} duplicates ({1 - dup_on / dup_off:.0%} fewer); the price is "
            f"latency: 1 KB p99 {p99(off, 'small'):.0f} -> {p99(on, 'small'):.0f} ms, 50 KB p99 "
            f"{p99(off, 'large'):.0f} -> {p99(on, 'large'):.0f} ms"]


def _latency_sources(rows: dict[str, Any]) -> list[str]:
    """What the profiles that change one thing (peers, loss) say about the default's delivery times."""
    base, out = rows["gossipsub"], []

    def p99(row: dict[str, Any], size: str) -> str:
        return f"{row[size]['delivery_ms'].get('p99', float('nan')):.0f} ms"

    def dups(row: dict[str, Any]) -> str:
        return f"{row['small']['duplicates_per_node_per_message']:.2f}"

    if "no_relay" in rows:
        plain = rows["no_relay"]
        out.append(f"without relays (`mesh.relay = false`): 1 KB p99 {p99(plain, 'small')} (with: {p99(base, 'small')}), "
                   f"50 KB p99 {p99(plain, 'large')} (with: {p99(base, 'large')}), duplicates {dups(plain)} "
                   f"(with: {dups(base)})")
    if "dial8" in rows and "dial8_no_relay" in rows:
        few, few_plain = rows["dial8"], rows["dial8_no_relay"]
        out.append(f"half the connections (8 dialled, {few['peers'].get('p50', 0):.0f} peers a node against "
                   f"{base['peers'].get('p50', 0):.0f}), the default before relays: 1 KB p99 {p99(few, 'small')} with "
                   f"relays, {p99(few_plain, 'small')} without; duplicates {dups(few)} and {dups(few_plain)}")
    if "choked_lossless" in rows:
        clean = rows["choked_lossless"]
        out.append(f"choked, no loss at all: 1 KB p99 {p99(clean, 'small')}, 50 KB p99 {p99(clean, 'large')} "
                   f"(with 1% loss: {p99(base, 'small')}, {p99(base, 'large')})")
    return out


def report(r: dict[str, Any]) -> str:
    nan = float("nan")
    verdicts = []
    if "swarm" in r:
        rows = r["swarm"]
        s = rows["gossipsub"]
        verdicts += [
            _verdict(s["small"]["delivery_ms"].get("p99", nan), GOALS["small_p99_ms"], "1 KB delivery p99", " ms"),
            _verdict(s["large"]["delivery_ms"].get("p99", nan), GOALS["large_p99_ms"], "50 KB delivery p99", " ms"),
            _verdict(s["small"]["duplicates_per_node_per_message"], GOALS["duplicates"],
                     f"duplicates per node per message with the mesh (the default: D = 6, {CHOKED} of them pushing)"),
            f"flooding ({rows['flood']['nodes']} nodes, the same kind of connection graph: "
            f"{rows['flood']['peers'].get('p50', 0):.0f} peers a node): "
            f"{rows['flood']['small']['duplicates_per_node_per_message']:.1f} "
            f"duplicates per node per message, about a node's peer count; a full mesh of 8: "
            f"{rows['full_mesh_8']['small']['duplicates_per_node_per_message']:.1f} (n - 2)",
            f"bodies received per node per 50 KB message: {s['large']['bodies_per_node_per_message']:.2f} "
            f"(announce-then-pull: one each)",
        ]
        verdicts += _choking(rows)
        verdicts += _latency_sources(rows)
    if "chain" in r:
        c = r["chain"]
        verdicts += [_verdict(c["finality_slots"].get("p50", nan), GOALS["finality_p50_slots"], "finality p50", " slots"),
                     _verdict(c["updates"]["to_final_slots"].get("p50", nan), GOALS["update_to_final_p50_slots"],
                              "update-to-final-block p50", " slots"),
                     f"update fates: {c['updates']['fates']}",
                     f"memory per simulated node (resident, whole stack): {c['memory_per_node_mb']['at_end']:.2f} MB; "
                     f"invariant violations: {len(c['violations'])}"]
    return f"""## Network simulation: 1,000 nodes on a virtual clock

`netsim` runs the real gossip service (handshake, sessions, router, gossipsub), and in (b) the
real consensus engine, SQLite chain store and simulated update application of every node, in one process
on a virtual-time event loop over simulated links: 50 +- 20 ms one-way latency per pair, 10
Mbit/s per direction, 1% loss as TCP sees it (a 200 ms retransmission, head-of-line). CPU time is
not simulated (what nodes compute takes no virtual time). (a) gossip-only nodes, probes from
random publishers: 1 KB pushed, 50 KB announced and pulled; (b) full stacks, 21 delegates, 2 s
slots, with model updates (`netsim.updates`: 50 KB, announced and pulled, named in blocks by
proposers and fetched by verifiers that lack them) from random nodes every slot; update-to-final
is from publication to the publisher's node holding the block that took it as final. Finality is measured from a block's timestamp to each node's final-block event, as the
chain benchmark does on real daemons. "Duplicates" are copies received per node per message
beyond the first.

Command: `python -m bench netsim{' --quick' if r.get('quick') else ''}`.{_reduced(r)}

{_tables(r)}

{chr(10).join('- ' + v for v in verdicts)}

"MB / node" is the growth of the process's resident memory over the profile, divided by the
nodes: meaningful for the first profile a process runs (Python keeps what it freed for reuse),
so the later ones show about zero. Flooding the whole network (every node connected to every
other, DESIGN's full mesh) costs n - 2 duplicates per node per message, as the 8-node row
shows; at 1,000 nodes that is about 1,000 copies of every vote per node, which is why meshes
exist.

Swarm profiles start with {WARMUP} unmeasured 1 KB messages (one every 250 ms), so the figures
describe a network that has carried traffic, as a running one has; copies are counted from the
first probe on.

Why a mesh of 6 alone cannot reach 3 duplicates: a node forwards a new message to every mesh
peer but the one it came from, so every mesh link carries it once in each direction except the
links of the spanning tree the message actually took; with n nodes and mesh degree k that is
about n(k - 1) copies, k - 2 duplicates per node, plus what flood publishing adds at the first
hop. Choking (`gossip/choke.py`, `docs/gossip.md`) keeps the mesh of 6 for its paths around a
slow or hostile peer, but only the {CHOKED} peers whose copies come first push to a node; the
others announce each message with an immediate IHAVE and send it when asked, which they are when
their IHAVE beats every pushed copy. What it costs is hops: each hop multiplies a message's reach
by less. The 100-node simulation through a partition, two crashes and a heal
(`tests/netsim/test_sim.py`) once left restarted nodes heights behind with choking on; the cause
was a fault in how verifiers fetch a block's updates, which timing exposed on some seeds with or
without choking, and it is fixed (`docs/decisions.md`).

Where the delivery time goes: hops, at 30 to 70 ms each. Flood publishing takes a message to all
of its publisher's peers at once (29 with the default 16 dialled connections); each of them
relays it to its own peers outside the mesh (`mesh.relay`), so a few hundred nodes are two hops
out; after that every hop multiplies the reach by about the number of peers pushing to the next
node less one. Relays cost copies where the publisher's own first hop already reached a node:
receivers choke a relayer whose copies rarely come first (in networks of a few dozen nodes
almost all of them; `tests/netsim/test_swarm.py`). Retransmissions hardly matter: a node hears
a message from several peers, so a copy stalled on one link is overtaken on another (the
lossless row). A pulled body pays a request round trip per hop on top of its transfer time. Why
16 dialled connections and 3 pushing peers: `docs/decisions.md`.

![netsim](results/netsim.png)
"""


if __name__ == "__main__":
    main()
