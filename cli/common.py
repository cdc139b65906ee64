"""What every ``fedchain`` command shares: options, output, and turning errors into one line.

A command-line tool should never answer a wrong path or a down node with a Python traceback: the
:func:`handles_errors` decorator catches the expected failures (bad home, unreachable node, a
node's 4xx answer, a bad argument) and prints ``error: ...`` on stderr with a non-zero exit code.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DEFAULT_NODE, NodeError
from node.config_checks import ConfigError

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

DEFAULT_HOME = Path.home() / ".fedchain"

HomeOpt = typer.Option(DEFAULT_HOME, "--home", help="Node home folder.", envvar="FEDCHAIN_HOME",
                       file_okay=False, resolve_path=True)
NodeOpt = typer.Option(DEFAULT_NODE, "--node", help="Base URL of the node's HTTP API.", envvar="FEDCHAIN_NODE")
JsonOpt = typer.Option(False, "--json", help="Print the node's raw JSON answer.")

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A user-facing failure of a command, printed as one line."""


def json_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict, each VALUE read as JSON (``true``, ``1.0``, ``"sign"``,
    ``{"feature_clip": 1.0}``); a CliError naming ``flag`` for anything else."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CliError(f"{flag} {key}: VALUE must be JSON (true, 1.5, \"sign\"), got {value!r}") from None
    return out


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(func: F) -> F:
    """Decorate a command so its expected failures exit with one line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CliError, ConfigError, NodeError) as exc:
            fail(str(exc))
        except OSError as exc:  # e.g. a home folder that cannot be created or written
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    """Raw JSON on stdout (unstyled, so it can be piped into jq)."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def short(node_id: str, n: int = 12) -> str:
    """A node id or hash shortened for tables; full ids are in ``--json``."""
    return node_id if len(node_id) <= n else node_id[:n] + "…"


def fields_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column key/value table, the shape every single-object command prints."""
    table = Table(title=title, show_header=False, box=None, title_justify="left", title_style="bold")
    table.add_column(style="cyan")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table
