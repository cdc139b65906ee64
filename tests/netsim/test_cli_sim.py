"""``fedchain sim net`` prints a run's figures and digest, and refuses inconsistent options."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.main import app


def test_sim_net_prints_figures_and_is_reproducible() -> None:
    runner = CliRunner()
    args = ["sim", "net", "--nodes", "8", "--delegates", "4", "--slots", "3", "--seed", "5"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "invariants                         all held" in first.output
    assert "finality latency" in first.output and "gossip delivery 1 KB" in first.output
    assert "update to final block" in first.output and "update fates" in first.output
    digest = [line for line in first.output.splitlines() if line.startswith("digest")]
    again = runner.invoke(app, args)
    assert digest and digest == [line for line in again.output.splitlines() if line.startswith("digest")]


def test_sim_net_refuses_a_heal_before_the_partition() -> None:
    out = CliRunner().invoke(app, ["sim", "net", "--nodes", "8", "--delegates", "4", "--partition-slot", "3",
                                   "--heal-slot", "2"])
    assert out.exit_code != 0 and "heal after the partition" in out.output
