"""``fedchain sim net``: a whole network of real node stacks, simulated in one process.

N nodes (gossip, consensus engine, chain store, counter application) on a virtual clock over
simulated links, with an optional partition and heal; prints what a real testnet's benchmark
prints (final height, block time, finality latency) and the gossip figures, and the run's
digest: the same seed gives the same digest. See ``docs/netsim.md``.
"""

from __future__ import annotations

import json

import typer

from cli.common import CliError, console, handles_errors

sim_app = typer.Typer(help="Simulate a network deterministically (real node stacks, virtual time).",
                      no_args_is_help=True)


def _row(label: str, p: dict, unit: str = "ms") -> str:
    if not p.get("n"):
        return f"{label:<34} -"
    return (f"{label:<34} p50 {p['p50']:.0f} {unit}, p95 {p['p95']:.0f} {unit}, p99 {p['p99']:.0f} {unit} "
            f"(n = {p['n']})")


@sim_app.command("net")
@handles_errors
def net(nodes: int = typer.Option(100, "--nodes", min=2, max=5000, help="Simulated nodes."),
        seed: int = typer.Option(1, "--seed", help="Everything random in the run comes from it."),
        delegates: int = typer.Option(21, "--delegates", min=1, help="Delegates (the first nodes)."),
        slots: int = typer.Option(15, "--slots", min=1, help="Slots of chain to simulate after genesis."),
        slot_ms: int = typer.Option(2000, "--slot-ms", min=100),
        latency_ms: float = typer.Option(50.0, "--latency-ms", help="Mean one-way latency per link."),
        jitter_ms: float = typer.Option(20.0, "--jitter-ms", help="Latencies are drawn from mean +- jitter."),
        loss: float = typer.Option(0.01, "--loss", min=0.0, max=0.5, help="Share of messages retransmitted."),
        mbit: float = typer.Option(10.0, "--mbit", min=0.01, help="Bandwidth per link direction, Mbit/s."),
        dissemination: str = typer.Option("gossipsub", "--dissemination", help="gossipsub or flood."),
        partition: int = typer.Option(-1, "--partition-slot", help="Split even and odd nodes at this slot."),
        heal: int = typer.Option(-1, "--heal-slot", help="Heal the partition at this slot."),
        updates: int = typer.Option(4, "--updates-per-slot", min=0, help="Model updates published per slot."),
        as_json: bool = typer.Option(False, "--json", help="Print every figure as JSON.")) -> None:
    """Run one simulation and print its figures."""
    from node.netsim.network import LinkParams
    from node.netsim.sim import SimConfig, run

    if dissemination not in ("gossipsub", "flood"):
        raise CliError("--dissemination must be gossipsub or flood")
    if delegates > nodes:
        raise CliError(f"--delegates ({delegates}) cannot exceed --nodes ({nodes})")
    if (partition < 0) != (heal < 0) or (partition >= 0 and heal <= partition):
        raise CliError("give both --partition-slot and --heal-slot, the heal after the partition")
    link = LinkParams(latency_s=latency_ms / 1000, jitter_s=jitter_ms / 1000, bandwidth=mbit * 1e6 / 8, loss=loss)
    config = SimConfig(nodes=nodes, delegates=delegates, seed=seed, slots=slots, slot_ms=slot_ms, link=link,
                       dissemination=dissemination, partition_slot=partition if partition >= 0 else None,
                       heal_slot=heal if heal >= 0 else None, updates_per_slot=updates)
    r = run(config)
    if as_json:
        console.print_json(json.dumps(r, default=str))
        return
    g = r["gossip"]
    lines = [
        f"nodes {nodes}, delegates {delegates}, seed {seed}: {r['virtual_s']:.0f} virtual s in {r['wall_s']:.0f} s",
        f"{'final height':<34} {r['final_height']['min']}..{r['final_height']['max']} ({r['blocks']} blocks)",
        _row("block time", r["block_time_ms"]),
        _row("finality latency", r["finality_ms"]),
        _row(f"gossip delivery {config.small_size // 1024} KB", g["small"]["delivery_ms"]),
        _row(f"gossip delivery {config.large_size // 1024} KB (pulled)", g["large"]["delivery_ms"]),
        f"{'duplicates per node per message':<34} {g['small']['duplicates_per_node_per_message']:.2f} (1 KB), "
        f"{g['consensus']['duplicates_per_node_per_message']:.2f} (consensus)",
        f"{'bodies per node per pulled message':<34} {g['large']['bodies_per_delivery'] or 0:.2f}",
        f"{'bytes sent per node':<34} {g['bytes_out_per_node_per_s'] / 1024:.1f} KiB/s",
        _row("update to final block", r["updates"]["to_final_ms"]),
        f"{'update fates':<34} " + ", ".join(f"{k} {v}" for k, v in r["updates"]["fates"].items()),
        f"{'memory per node':<34} {r['memory_per_node_mb']['at_end']:.2f} MB",
    ]
    for rec in r["recoveries_ms"]:
        lines.append(_row("finality after the heal", rec))
    lines.append(f"{'invariants':<34} " + ("all held" if not r["violations"] else f"{len(r['violations'])} violated"))
    lines += [f"  {v}" for v in r["violations"][:20]]
    lines.append(f"{'digest':<34} {r['digest']}")
    console.print("\n".join(lines), highlight=False)
    if r["violations"]:
        raise typer.Exit(1)
