"""``fedchain tx ...``: build, sign and submit native transactions.

The key comes from the home folder; the nonce is the account's nonce on the node plus one, or
one past the highest nonce this account already has waiting in the node's mempool, so that
several transactions can be sent back to back without waiting for each to be included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from cli.client import NodeClient, NodeError
from cli.common import CliError, HomeOpt, JsonOpt, NodeOpt, console, handles_errors, print_json
from consensus.tx import Tx
from gossip.codec import pack
from gossip.crypto import KeyPair, is_node_id
from node.home import HomePaths, load_genesis, load_key

tx_app = typer.Typer(help="Sign and submit transactions with the key in a node home.", no_args_is_help=True)

WaitOpt = typer.Option(False, "--wait", help="Poll the node until the transaction is in a block.")
TimeoutOpt = typer.Option(60.0, "--timeout", min=0.1, help="Seconds to wait with --wait.")
AmountArg = typer.Argument(..., min=0, help="Amount in base units.")


def _node_id_arg(value: str, what: str) -> str:
    value = value.lower()
    if not is_node_id(value):
        raise CliError(f"{what} must be a node id (64 hex characters), got {value[:80]!r}")
    return value


def _chain_id(home: Path, client: NodeClient) -> str:
    """The home's chain id; a home with only a key (``keys new``) signs for the node's chain."""
    paths = HomePaths(home)
    if paths.genesis.exists():
        return load_genesis(paths.genesis).chain_id
    return str(client.get_json("/genesis")["chain_id"])


def next_nonce(client: NodeClient, sender: str) -> int:
    """One past the sender's latest nonce, counting transactions still in the node's mempool."""
    try:
        nonce = int(client.get_json(f"/accounts/{sender}").get("nonce", 0))
    except NodeError as exc:
        if exc.status != 404:
            raise
        nonce = 0
    pool = client.get_json("/mempool", sender=sender)
    if pool.get("truncated"):
        raise CliError("this account has more transactions waiting than one answer of the node holds; "
                       "wait until some are in a block")
    mine = [int(t["nonce"]) for t in pool.get("txs", []) if t.get("sender") == sender]
    return max([nonce, *mine]) + 1


def wait_included(client: NodeClient, tx_hash: str, timeout: float) -> dict:
    """Poll ``/txs/{hash}`` until the node reports the transaction in a block."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = client.get_json(f"/txs/{tx_hash}")
            if found.get("height") is not None:
                return found
        except NodeError as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            raise CliError(f"transaction {tx_hash} not included after {timeout:g} s")
        time.sleep(0.5)


def send_tx(kind: str, args: list[Any], home: Path, node: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Sign ``kind(args)`` with the home's key, submit it, and report its hash (and block)."""
    client = NodeClient(node)
    keypair: KeyPair = load_key(HomePaths(home).node_key)
    chain_id = _chain_id(home, client)
    tx = Tx(kind, chain_id, keypair.node_id, next_nonce(client, keypair.node_id), args).signed(keypair)
    answer = client.post_bytes("/txs", pack(tx.to_wire()), "application/msgpack")
    tx_hash = answer["hash"]
    result: dict[str, Any] = {"hash": tx_hash, "kind": kind, "nonce": tx.nonce}
    if not as_json:
        console.print(f"submitted {kind} tx [bold]{tx_hash}[/] (nonce {tx.nonce})", highlight=False)
    if wait:
        found = wait_included(client, tx_hash, timeout)
        result["height"] = found["height"]
        if not as_json:
            console.print(f"included in block {found['height']}", highlight=False)
    if as_json:
        print_json(result)


@tx_app.command()
@handles_errors
def transfer(to: str = typer.Argument(..., help="Recipient node id."), amount: int = AmountArg,
             home: Path = HomeOpt, node: str = NodeOpt, wait: bool = WaitOpt, timeout: float = TimeoutOpt,
             as_json: bool = JsonOpt) -> None:
    """Move AMOUNT from this node's balance to TO."""
    send_tx("transfer", [_node_id_arg(to, "TO"), amount], home, node, wait, timeout, as_json)


@tx_app.command()
@handles_errors
def stake(amount: int = AmountArg, home: Path = HomeOpt, node: str = NodeOpt, wait: bool = WaitOpt,
          timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Bond AMOUNT of this node's balance as stake."""
    send_tx("stake", [amount], home, node, wait, timeout, as_json)


@tx_app.command()
@handles_errors
def unstake(amount: int = AmountArg, home: Path = HomeOpt, node: str = NodeOpt, wait: bool = WaitOpt,
            timeout: float = TimeoutOpt, as_json: bool = JsonOpt) -> None:
    """Unbond AMOUNT of stake; it returns to the balance after the unbonding delay."""
    send_tx("unstake", [amount], home, node, wait, timeout, as_json)


@tx_app.command()
@handles_errors
def vote(candidates: list[str] = typer.Argument(..., help="Node ids this node approves as delegates."),
         home: Path = HomeOpt, node: str = NodeOpt, wait: bool = WaitOpt, timeout: float = TimeoutOpt,
         as_json: bool = JsonOpt) -> None:
    """Replace this node's approval votes with CANDIDATES."""
    send_tx("vote", [[_node_id_arg(c, "CANDIDATE") for c in candidates]], home, node, wait, timeout, as_json)


@tx_app.command()
@handles_errors
def register(member: str = typer.Argument(..., help="Node id to admit as a member."),
             samples: Optional[int] = typer.Option(
                 None, "--samples", min=1,
                 help="Sample count MEMBER declares: no update of its may claim more (its averaging weight). "
                      "Default: the chain's cap (FL setting max_samples)."),
             home: Path = HomeOpt, node: str = NodeOpt, wait: bool = WaitOpt, timeout: float = TimeoutOpt,
             as_json: bool = JsonOpt) -> None:
    """Admit MEMBER (signed by the admin key, or by MEMBER itself with a bond in open mode)."""
    args: list = [_node_id_arg(member, "MEMBER")]
    if samples is not None:
        args.append(samples)
    send_tx("register", args, home, node, wait, timeout, as_json)
