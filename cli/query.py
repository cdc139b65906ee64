"""Read-only commands against any node's HTTP API: status, genesis, block, delegates, peers, account,
mempool, model.

Each prints a compact rich rendering by default and the node's JSON answer with ``--json``.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.live import Live
from rich.table import Table

from cli.client import NodeClient, NodeError
from cli.common import CliError, JsonOpt, NodeOpt, console, fields_table, handles_errors, print_json, short
from consensus.genesis import Genesis, GenesisError
from consensus.state import ChainState
from gossip.crypto import is_node_id


def _age(time_ms: int | None) -> str:
    """How long ago a millisecond timestamp was, for humans."""
    if not time_ms:
        return "-"
    seconds = max(0.0, time.time() - time_ms / 1000)
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def status_table(s: dict, node: str) -> Table:
    return fields_table(f"{s.get('moniker', '')} @ {s.get('url', node)}", [
        ("chain", s["chain_id"]), ("genesis hash", s["genesis_hash"]), ("node id", s["node_id"]),
        ("height", s["height"]),
        ("final height", s["final_height"]), ("latest block", f"{s['latest_block_hash']} ({_age(s['latest_block_time_ms'])})"),
        ("epoch", s["epoch"]), ("delegate", "yes" if s["is_delegate"] else "no"),
        ("syncing", "yes" if s["syncing"] else "no"), ("peers", s["peers"]), ("mempool", s["mempool_size"]),
    ])


def status(node: str = NodeOpt, as_json: bool = JsonOpt,
           watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
           interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes (--watch)."),
           ) -> None:
    """Show a node's identity, heights and sync state; with --watch, keep refreshing until Ctrl-C."""
    client = NodeClient(node)
    if watch:
        return watch_status(client, node, interval, as_json)
    s = client.get_json("/status")
    if as_json:
        return print_json(s)
    console.print(status_table(s, node))


def watch_status(client: NodeClient, node: str, interval: float, as_json: bool) -> None:
    """Refresh the status until Ctrl-C (a clean exit). On a terminal the table is redrawn in place
    with the block rate since the watch began; elsewhere, or with --json, one snapshot per refresh
    (JSON: one object per line). A node that stops answering is shown as such, not an exit: a
    watch outlives a restart."""
    first: tuple[float, int] | None = None

    def render() -> Any:
        nonlocal first
        try:
            s = client.get_json("/status")
        except NodeError as exc:
            return {"error": str(exc)} if as_json else f"[red]{exc}[/] (retrying every {interval:g} s)"
        if as_json:
            return s
        now, height = time.monotonic(), s["final_height"]
        first = first or (now, height)
        rate = (height - first[1]) / (now - first[0]) * 60 if now > first[0] else 0.0
        table = status_table(s, node)
        table.add_row("blocks / min", f"{rate:.1f} (since the watch began)")
        table.caption = f"refreshed {time.strftime('%H:%M:%S')} every {interval:g} s; Ctrl-C to stop"
        return table

    try:
        if console.is_interactive and not as_json:
            with Live(render(), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(render(), refresh=True)
        while True:
            view = render()
            if as_json:
                typer.echo(json.dumps(view, sort_keys=True))
            else:
                console.print(view)
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def fetch_genesis(url: str) -> Genesis:
    """The genesis a running node serves, validated (its hash is computed here, not taken on trust)."""
    data = NodeClient(url).get_json("/genesis")
    try:
        return Genesis.from_dict(data)
    except GenesisError as exc:
        raise CliError(f"{url} served an invalid genesis: {exc}") from None


def genesis_summary(genesis: Genesis) -> list[tuple[str, Any]]:
    """What an operator checks before trusting a genesis: chain, hash, the first delegates and, on
    a federated-learning chain, the privacy its nodes give (the preset as the genesis states it)."""
    delegates = ChainState.from_genesis(genesis).delegates
    rows = [("chain", genesis.chain_id), ("genesis hash", genesis.hash.hex()),
            ("genesis time", genesis.genesis_time_ms), ("accounts", len(genesis.accounts)),
            ("delegates", "\n".join(delegates)), ("application", genesis.app.get("kind", "counter"))]
    if genesis.app.get("kind") == "fl":
        rows.append(("privacy", json.dumps(genesis.app.get("privacy", {"preset": "off"}), sort_keys=True)))
    return rows


def genesis(node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """Show the genesis a node serves: chain id, genesis hash (to pass to `join --genesis-hash`), delegates."""
    g = fetch_genesis(node)
    if as_json:
        return print_json({"genesis_hash": g.hash.hex(), "genesis": g.to_dict()})
    console.print(fields_table(f"genesis served by {node}", genesis_summary(g)))


def block(height: Optional[int] = typer.Argument(None, min=1, help="Height (default: the latest)."),
          node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """Show a final block (the latest without HEIGHT)."""
    b = NodeClient(node).get_json(f"/blocks/{height}" if height is not None else "/blocks/latest")
    if as_json:
        return print_json(b)
    commit = b.get("last_commit") or {}
    console.print(fields_table(f"block {b['height']}", [
        ("hash", b["hash"]), ("time", f"{b['time_ms']} ({_age(b['time_ms'])})"), ("slot", b["slot"]),
        ("producer", b["producer"]), ("parent", b["parent_hash"]), ("state root", b["state_root"]),
        ("app hash", b["app_hash"]), ("payload", f"{b['payload_size']} bytes"),
        ("last commit", f"{len(commit.get('signatures', []))} signatures for {commit.get('height', '-')}"),
    ]))
    if b["txs"]:
        table = Table("hash", "kind", "sender", "nonce", "args", title="transactions", title_justify="left")
        for t in b["txs"]:
            table.add_row(short(t["hash"]), t["kind"], short(t["sender"]), str(t["nonce"]), str(t["args"]))
        console.print(table)
    for ev in b["evidence"]:
        console.print(f"[red]evidence[/] {ev['kind']} by {ev['offender']} at height {ev['height']}")


def delegates(node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """List the current delegates with stake, trust and jail status."""
    d = NodeClient(node).get_json("/delegates")
    if as_json:
        return print_json(d)
    table = Table("id", "stake", "trust", "produced", "missed", "status",
                  title=f"delegates at height {d['height']} (epoch {d['epoch']}, quorum {d['quorum']}, "
                        f"next election at {d['next_election_height']})", title_justify="left")
    for row in d["delegates"]:
        state = f"[red]jailed until {row['jailed_until']}[/]" if row["jailed"] else "[green]active[/]"
        table.add_row(row["id"], str(row["stake"]), f"{row['trust']:.4f}", str(row["produced"]),
                      str(row["missed_total"]), state)
    console.print(table)


def peers(node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """List a node's connected gossip peers."""
    info = NodeClient(node).get_json("/net_info")
    if as_json:
        return print_json(info)
    table = Table("node id", "url", "direction", "peer score", "connected", title=f"{info['n_peers']} peers of {info['url']}",
                  title_justify="left")
    for peer in info["peers"]:
        table.add_row(peer["node_id"], peer["url"], peer["direction"], f"{peer['score']:.2f}",
                      _age(int(peer["connected_since"] * 1000)))
    console.print(table)


def account(node_id: str = typer.Argument(..., help="Account (node id)."), node: str = NodeOpt,
            as_json: bool = JsonOpt) -> None:
    """Show an account: balance, stake, nonce, trust, votes."""
    if not is_node_id(node_id.lower()):
        raise CliError(f"not a node id (64 hex characters): {node_id[:80]!r}")
    acct = NodeClient(node).get_json(f"/accounts/{node_id.lower()}")
    if as_json:
        return print_json(acct)
    console.print(fields_table(f"account {node_id.lower()}", sorted((k, v) for k, v in acct.items() if k != "id")))


def mempool(node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """List the transactions waiting in a node's mempool."""
    pool = NodeClient(node).get_json("/mempool")
    if as_json:
        return print_json(pool)
    table = Table("hash", "kind", "sender", "nonce", "args", title=f"{pool['size']} pending transactions",
                  title_justify="left")
    for t in pool["txs"]:
        table.add_row(short(t["hash"]), t["kind"], short(t["sender"]), str(t["nonce"]), str(t["args"]))
    console.print(table)


def model(height: Optional[int] = typer.Option(None, "--updates", min=1,
                                              help="Also list the updates the block at this height considered."),
          export: Optional[Path] = typer.Option(None, "--export", dir_okay=False,
                                                help="Write the model to this file (torch.export; load it with "
                                                     "torch.export.load(FILE).module())."),
          node: str = NodeOpt, as_json: bool = JsonOpt) -> None:
    """Show the newest final global model: hash, height, accuracy; with --updates H, a round's updates."""
    client = NodeClient(node)
    m = client.get_json("/fl/model")
    if export is not None:
        from cli.export import export_model

        export_model(client, m, export)
        console.print(f"wrote global model {m['hash'][:12]} (height {m['height']}) to {export}", highlight=False)
        return
    rounds = client.get_json("/fl/updates", height=height) if height is not None else None
    spent = _privacy_spent(client)
    if as_json:
        m = {**m, "privacy_spent": spent}
        return print_json({"model": m, "updates": rounds} if rounds is not None else m)

    def pct(key: str) -> str:
        return f"{m[key]:.2%}" if isinstance(m.get(key), float) else "-"

    console.print(fields_table(f"global model @ {node}", [
        ("hash", m["hash"]), ("height", m["height"]), ("model", f"{m['model']} ({m['params']} parameters)"),
        ("dataset", m["dataset"]), ("rule", m["rule"]), ("test accuracy", pct("test_accuracy")),
        ("validation accuracy (this node)", pct("val_accuracy")), ("privacy", m.get("privacy", "-")),
        ("privacy spent (this node)", _describe_spent(spent)),
        ("weights", node.rstrip("/") + m["blob"]),
    ]))
    if rounds is not None:
        table = Table("update", "sender", "weight", "accepted", "reason",
                      title=f"height {rounds['height']}: {rounds['accepted']} of {rounds['considered']} accepted"
                            + (f" (round skipped: {rounds['skipped']})" if rounds.get("skipped") else ""),
                      title_justify="left")
        for u in rounds["updates"]:
            table.add_row(short(u["id"]), short(u["sender"]), f"{u['weight']:.1f}",
                          "[green]yes[/]" if u["accepted"] else "[red]no[/]", u["reason"])
        console.print(table)


def _privacy_spent(client: NodeClient) -> dict | None:
    """The node's ``/fl/privacy``, or None while its trainer has not started (a 503)."""
    try:
        return client.get_json("/fl/privacy")
    except NodeError as exc:
        if exc.status == 503:
            return None
        raise


def _describe_spent(p: dict | None) -> str:
    """One line: the epsilon this node has spent of its budget, or that none is claimed."""
    if p is None:
        return "- (the trainer has not started)"
    if not p.get("formal"):
        return f"none accounted (preset {p.get('preset')}: no formal privacy), {p.get('releases')} updates"
    stopped = "; budget reached: this node sends no more updates" if p.get("exhausted") else ""
    return (f"epsilon {p['epsilon']:.3g} of {p['epsilon_budget']:g} (delta {p['delta']:g}) "
            f"after {p['releases']} updates{stopped}")


def _guard(command: Callable[..., None]) -> Callable[..., None]:
    """A node answering with an unexpected shape (another version?) is an error line, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CliError(f"unexpected answer from the node ({type(exc).__name__}: {exc}); try --json") from None

    return wrapper


def register(app: typer.Typer) -> None:
    """Add the query commands to the top-level app."""
    for command in (status, genesis, block, delegates, peers, account, mempool, model):
        app.command()(handles_errors(_guard(command)))
