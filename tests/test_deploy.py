"""deploy/: the systemd unit, Dockerfile and compose file run only commands the real CLI accepts.

No container engine runs here, so the images are not built; instead every ``fedchain ...``
command line these files contain is resolved against the real typer application (command path
and options parsed and type-checked, nothing executed), and the compose testnet's layout (homes,
ports, advertised hosts) is checked against what its own ``testnet create`` command produces.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from cli.main import app
from node.home import load_home

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMMAND = typer.main.get_command(app)


def resolve(args: list[str]):
    """Parse ``fedchain ARGS`` down to the leaf command's context; raises on any usage error."""
    ctx = COMMAND.make_context("fedchain", list(args))
    while hasattr(ctx.command, "resolve_command"):
        pending = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []), *ctx.args]
        name, sub, rest = ctx.command.resolve_command(ctx, pending)
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def fedchain_args(argv: list[str]) -> list[str]:
    """The arguments after the ``fedchain`` executable in an argv."""
    assert Path(argv[0]).name == "fedchain", argv
    return argv[1:]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def dockerfile_instruction(name: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile instruction (for HEALTHCHECK: of its CMD)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\b[^\[\n]*(\[.*\])\s*$", text, re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {name}"
    return json.loads(match.group(1))


def test_resolver_catches_bad_commands():
    """The check below would be worthless if the resolver accepted anything."""
    assert resolve(["node", "start", "--home", "/x"]).command_path == "fedchain node start"
    for bad in (["node", "stat"], ["testnet", "create", "4", "--bogus"], ["testnet", "create", "many"],
                ["status", "--node"]):
        with pytest.raises(Exception):
            resolve(bad)


def test_unit_file():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "fedchain.service").read_text())
    service = unit["Service"]
    ctx = resolve(fedchain_args(shlex.split(service["ExecStart"])))
    assert ctx.command_path == "fedchain node start"
    assert str(ctx.params["home"]) == "/var/lib/fedchain"
    assert service["User"] not in ("", "root")
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "fedchain"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    assert "torch==2.13.0" in text and "/whl/cpu" in text
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    entry = dockerfile_instruction("ENTRYPOINT")
    ctx = resolve(fedchain_args(entry + dockerfile_instruction("CMD")))
    assert ctx.command_path == "fedchain node start"
    health = dockerfile_instruction("HEALTHCHECK")
    assert resolve(fedchain_args(health)).command_path == "fedchain status"
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and "!node/**" in ignore


def test_compose_commands_parse():
    services = compose()["services"]
    assert set(services) == {"init", "node0", "node1", "node2", "node3"}
    for name, svc in services.items():
        assert svc["image"] == "fedchain:latest"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        ctx = resolve(svc["command"])  # the image's ENTRYPOINT is fedchain
        expected = "fedchain testnet create" if name == "init" else "fedchain node start"
        assert ctx.command_path == expected, name
        if name != "init":
            assert resolve(fedchain_args(svc["healthcheck"]["test"][1:])).command_path == "fedchain status"
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_layout_matches_what_init_creates(tmp_path):
    """Run the init service's own command into a temporary folder and compare with the services."""
    services = compose()["services"]
    init_args = list(services["init"]["command"])
    init_args[init_args.index("--dir") + 1] = str(tmp_path)
    result = CliRunner().invoke(app, init_args)
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, init_args)  # --exist-ok: a restarted init must succeed
    assert again.exit_code == 0, again.output
    for i in range(4):
        svc = services[f"node{i}"]
        home_arg = resolve(svc["command"]).params["home"]
        home = load_home(tmp_path / Path(home_arg).name)
        net = home.config.network
        assert net.host == "0.0.0.0"
        assert net.url == f"http://node{i}:{net.port}", "peers must dial the service name"
        assert svc["ports"] == [f"127.0.0.1:{net.port}:{net.port}"]
        assert svc["healthcheck"]["test"][-2] == f"http://127.0.0.1:{net.port}"
        assert all(re.fullmatch(r"http://node\d:\d+", url) for url in net.bootstrap)
        assert len(net.bootstrap) == 3
