"""The ``fedchain`` command: node homes, local testnets, queries and transactions.

Commands that start daemons import ``node`` lazily; the rest speak HTTP to a node's API, so
``fedchain status`` works against any node, local or remote.
"""

from __future__ import annotations

import typer

from cli import query
from cli.data import data_app
from cli.node_cmds import init, join, keys_app, node_app
from cli.sim import sim_app
from cli.testnet import testnet_app
from cli.tx import tx_app

app = typer.Typer(
    name="fedchain",
    help="Federated learning among untrusted devices, secured by a DPoS chain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.add_typer(node_app, name="node")
app.add_typer(testnet_app, name="testnet")
app.add_typer(sim_app, name="sim")
app.add_typer(tx_app, name="tx")
app.command("init")(init)
app.command("join")(join)
query.register(app)


if __name__ == "__main__":
    app()
