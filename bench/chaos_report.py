"""The chaos benchmark's outputs from its JSON alone: the plot, the summary line and the
``bench/REPORT.md`` section (``python -m bench report`` rebuilds the section from the JSON)."""

from __future__ import annotations

from bench.common import RESULTS, md_table


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"kill": "tab:red", "pause": "tab:orange", "restart": "tab:blue"}
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    heights = result["heights_over_time"]
    ax[0].plot([t for _, t in heights], [h for h, _ in heights], color="black", lw=1)
    for _, kind, start, stop in result["fault_windows"]:
        ax[0].axvspan(start, stop, color=colours[kind], alpha=0.25, lw=0)
    ax[0].set(title="final height (shaded: a node down, by fault kind)", xlabel="s since chaos began",
              ylabel="height")
    for kind, colour in colours.items():
        points = [(f["at_s"], f["slots_to_next_final"]) for f in result["faults"]
                  if f["kind"] == kind and f["slots_to_next_final"] is not None]
        ax[1].scatter([p[0] for p in points], [p[1] for p in points], color=colour, label=kind, s=18)
    base = result["liveness_slots"]["baseline_no_fault"]
    for q, style in (("p50", "--"), ("p95", ":")):
        if q in base:
            ax[1].axhline(base[q], color="grey", ls=style, label=f"no fault {q}")
    ax[1].set(title="slots from a fault to the next final block", xlabel="s since chaos began", ylabel="slots")
    ax[1].legend(fontsize=7)
    for name, series in result["rss_over_time"].items():
        ax[2].plot([t for t, _ in series], [v for _, v in series], lw=1, label=name)
    ax[2].set(title="resident memory per daemon", xlabel="s since chaos began", ylabel="MiB")
    ax[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "chaos.png", dpi=100)
    plt.close(fig)


def table(result: dict) -> str:
    inv, upd = result["invariants"], result["updates"]["honest"]["totals"]
    live = result["liveness_slots"]
    return (f"faults {len(result['faults'])}, final height {result['chain']['final_height_end']}; "
            f"reverted {inv['final_blocks_reverted']}, disagreeing heights {inv['heights_disagreeing']} "
            f"of {inv['heights_compared']}; honest updates sent {upd['sent']}, lost {upd['lost']}; "
            f"slots to next final p50/p95 {live['after_fault'].get('p50', float('nan')):.2f}/"
            f"{live['after_fault'].get('p95', float('nan')):.2f} "
            f"(no fault {live['baseline_no_fault'].get('p50', float('nan')):.2f}/"
            f"{live['baseline_no_fault'].get('p95', float('nan')):.2f})")


WITHHOLDER = """ A withholding delegate's precommit reaches the chain only through commits that
blocks carry (its own blocks' last commit holds its own vote, or an honest node that missed the
precommits decided from its next-height proposal): see the table above."""


def _met(value: int) -> str:
    return "met" if value == 0 else f"**not met ({value})**"


def report(result: dict) -> str:
    from bench.chaos import RECOVERY_TIMEOUT_S  # here: bench.chaos imports this module

    s, inv, live = result["setup"], result["invariants"], result["liveness_slots"]
    upd, load, b = result["updates"]["honest"], result["load"], result["budget"]
    tot = upd["totals"]
    kinds = {k: sum(f["kind"] == k for f in result["faults"]) for k in s["kinds"]}
    unrecovered = sum(f["recovery_s"] is None for f in result["faults"])
    byz = ", ".join(f"{name}: {' + '.join(v)}" for name, v in s["byzantine"].items())
    fate_rows = [[f"node{i}", r["sent"], r["releases"], r["considered"], r["made_stale"], r["superseded"],
                  r["sender_down"], r["pending_at_end"], r["lost"]] for i, r in upd["per_node"].items()]
    fate_rows.append(["all honest", tot["sent"], "-", tot["considered"], tot["made_stale"], tot["superseded"],
                      tot["sender_down"], tot["pending_at_end"], tot["lost"]])
    byz_rows = []
    for name, e in result["byzantine"].items():
        did = [f"{k}: {v} log lines" for k, v in e["fault_log_lines"].items()]
        if "blocks_with_evidence_against_it" in e:
            did.append(f"{e['blocks_with_evidence_against_it']} blocks carry evidence against it, slashed "
                       f"{e['slashed_total']}, jailed at the end: {e['jailed_at_end']}")
        if "commits_with_its_signature" in e:
            did.append(f"its precommit is in {e['commits_with_its_signature']} commits, "
                       f"{e['of_which_in_its_own_blocks']} of them carried by its own blocks")
        if "flood_txs_in_blocks" in e:
            did.append(f"{e['flood_txs_in_blocks']} flood transactions in blocks (at most "
                       f"{e['flood_txs_per_block_max']} per block)")
        if "honest_sync_backoffs_at_end" in e:
            did.append(f"honest sync back-offs at the end: {sum(e['honest_sync_backoffs_at_end'].values()):.0f}")
        byz_rows.append([name, "; ".join(did)])
    res_rows = [[name, r["restarts"], r["rss_start_mb"], r["rss_end_mb"], r["rss_peak_mb"],
                 r["loop_lag_p99_ms_median"], r["loop_lag_p99_ms_max"]] for name, r in result["resources"].items()]
    a, base = live["after_fault"], live["baseline_no_fault"]
    steady = [name for name, r in result["resources"].items() if r["restarts"] == 0]
    span = result["chain"]["chaos_s"]

    def rss_at(name: str, at: float) -> float:
        return min(result["rss_over_time"][name], key=lambda p: abs(p[0] - at), default=(at, 0.0))[1]

    growth = {name: (rss_at(name, span / 2) - rss_at(name, 0), rss_at(name, span) - rss_at(name, span / 2))
              for name in steady}
    lags = [r["loop_lag_p99_ms_median"] for r in result["resources"].values() if r["loop_lag_p99_ms_median"]]
    flood = next((e for e in result["byzantine"].values() if "flood_txs_in_blocks" in e), None)
    flood_avg = flood["flood_txs_in_blocks"] / max(1, result["chain"]["final_height_end"]) if flood else 0.0
    return f"""## Chaos: Byzantine delegates, crashes, pauses and restarts on the FL testnet

{'Quick run (`--quick`)' if result['quick'] else 'Full run'}: {s['nodes']} FL daemons (the default FL testnet, `fedchain
testnet create {s['nodes']} --app fl`, 2 s slots), Byzantine delegates {byz}; honest nodes
{', '.join(s['honest'])}. After {s['warmup_s']:.0f} s without faults, for {result['chain']['chaos_s']:.0f} s a schedule
(seed {result['seed']}) picks an honest node and a fault at random: SIGKILL then a restart after
{s['down_s'][0]:.0f}-{s['down_s'][1]:.0f} s, SIGSTOP then SIGCONT after as long, or a clean restart (SIGTERM,
start); it waits until the node has caught up, then {s['gap_s'][0]:.0f}-{s['gap_s'][1]:.0f} s, then the next
fault. One honest node is down at a time: {b['voters']} voters need a quorum of {b['quorum']}, so
{b['voters'] - b['quorum']} may be silent, of which the withholding delegates take {b['withholding']}
(the other Byzantine behaviours still vote). Faults: {len(result['faults'])} ({', '.join(f'{v} {k}' for k, v in kinds.items())}),
{unrecovered} node(s) not caught up within {RECOVERY_TIMEOUT_S:.0f} s. Command: `python -m bench chaos{' --quick' if result['quick'] else ''}`
(measured {result['measured_at']}, wall time {result['wall_time_s']:.0f} s).

Load: this 2-core machine was shared with other test runs: 1-minute load average
{load['loadavg_1m_mean']:.1f} on average (max {load['loadavg_1m_max']:.1f}), CPUs busy
{load['machine_busy_pct']:.0f}% of the run, of which the testnet's daemons used
{load['testnet_cpu_pct_of_machine']:.0f} points; latencies below are noisy accordingly.

| invariant | measured | goal |
|---|---|---|
| final blocks reverted (every node's `/blocks`, read {inv['block_reports']} times in all, and its `/subscribe` stream) | {inv['final_blocks_reverted']} | 0: {_met(inv['final_blocks_reverted'])} |
| heights at which honest nodes hold different blocks (of {inv['heights_compared']} heights every honest node reported) | {inv['heights_disagreeing']} | 0: {_met(inv['heights_disagreeing'])} |
| honest updates lost (of {tot['sent']} sent) | {tot['lost']} | 0: {_met(tot['lost'])} |
| heights whose `/fl/updates` record lists other updates than the block's payload | {inv['fl_records_differing_from_blocks']} | 0 |

Liveness, in slots from a fault until the chain finalized its next block (the earliest
`final_block` event of any honest node): p50 {a.get('p50', float('nan')):.2f}, p95 {a.get('p95', float('nan')):.2f}, max
{a.get('max', float('nan')):.2f} over {a['n']} faults ({a['never']} never followed by a final block); the same measure at
{base['n']} random instants of the fault-free warm-up: p50 {base.get('p50', float('nan')):.2f}, p95
{base.get('p95', float('nan')):.2f}. A node took {result['recovery_s'].get('p50', float('nan')):.1f} s (p50),
{result['recovery_s'].get('p95', float('nan')):.1f} s (p95) from its restart or SIGCONT until it had caught up.

What became of every update an honest trainer sent (its own updates in its blob store, checked
against the privacy releases in `/fl/privacy`; the definitions are in `bench/chaos_updates.py`).
*Considered*: a final block lists it (accepted or rejected). *Made stale*: the trainer finished
it after its base had left the window (its node was behind, catching up, or training took longer
than {result['updates']['max_staleness']} + 1 blocks); every node refuses it as `stale_base`.
*Superseded*: its sender made a newer update before a block took it (pools keep the newest per
sender). *Sender down*: its base aged out while its sender was down. *Pending*: still usable when
the run ended. *Lost*: none of these: the sender stayed up, kept re-announcing it, made nothing
newer, and no block took it before its base aged out.

{md_table(["node", "sent", "releases", "considered", "made stale", "superseded", "sender down", "pending", "lost"],
          fate_rows)}

What the Byzantine delegates did (their own `FAULT` log lines, and the chain):

{md_table(["node", "activity"], byz_rows)}

Memory from `/proc` (from the start of the chaos; over every process of a restarted node) and the
event-loop lag p99 its `/metrics` reported (each value covers the last 2,400 ticks of 50 ms):

{md_table(["node", "restarts", "RSS start (MiB)", "RSS end", "RSS peak", "loop lag p99 median (ms)", "max"],
          res_rows)}

Observations. Memory of the daemons that ran the whole time ({', '.join(steady)}) grew by
{', '.join(f'{g[0]:.1f}' for g in growth.values())} MiB in the first half of the chaos and by
{', '.join(f'{g[1]:.1f}' for g in growth.values())} MiB in the second (the end column above also
holds the benchmark's final reads of every block and round record). The
event-loop lag p99 (median per node) was {min(lags, default=0):.0f}-{max(lags, default=0):.0f} ms at this load,
around the 50 ms goal of the FL section.{WITHHOLDER if any("commits_with_its_signature" in e
                                                           for e in result["byzantine"].values()) else ""} The flooder got {flood_avg:.1f} transactions per block on average, not the 16 its quota allows:
a node gossips a transaction once, and a peer that has not yet applied the block that emptied
the sender's quota refuses the next batch as over quota (or out of order) and never gets it
again, so that batch waits for a proposer that took it (at worst the flooder's own slot). That is the
gap reproduced in `tests/integration/test_chaos_findings.py` (an honest transaction accepted while
its node had no peers is never included if that node never proposes). A restarted node's sync
asks the peer claiming the most first, the height liar, and waits out its 8 s empty answer
before the honest peers, which is part of every recovery time above. A daemon asked to stop
waits for its `/subscribe` clients (45 s measured, the other reproduction in that file), so the
benchmark closes its own stream before a clean restart; otherwise each would end in SIGKILL.

![chaos](results/chaos.png)
"""
