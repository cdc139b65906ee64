"""The report marks sections whose numbers predate the code they describe."""

from bench.report import PIPELINE_SINCE, stale_note

BEFORE, AFTER = "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
assert BEFORE < PIPELINE_SINCE < AFTER


def test_a_whole_result_measured_before_the_change_is_marked_stale() -> None:
    assert "measured 2026-01-01" in stale_note("fl_chain", {"measured_at": BEFORE})
    assert stale_note("fl_chain", {"measured_at": AFTER}) == ""


def test_a_benchmark_that_does_not_depend_on_the_pipeline_is_never_marked() -> None:
    assert stale_note("chain", {"measured_at": BEFORE}) == ""


def test_a_result_run_in_parts_names_the_parts_that_are_older_than_the_change() -> None:
    # the whole file was written after the change, but one part kept the rows of an earlier run
    result = {"measured_at": AFTER, "part_measured_at": {"sim": BEFORE, "fl": AFTER}}
    note = stale_note("scalability", result)
    assert "part sim" in note and "fl" not in note.split("part sim")[1].split("measured")[0]
    assert stale_note("scalability", {"measured_at": AFTER,
                                      "part_measured_at": {"sim": AFTER, "fl": AFTER}}) == ""


def test_a_section_is_marked_by_the_latest_change_to_the_code_it_depends_on() -> None:
    """netsim depends on gossip's defaults only, fl_chain on the learning pipeline only, the fleet
    of real FL daemons on both: measured between the two changes, only the fleet is stale, and its
    note names the later change."""
    from bench.report import GOSSIP_SINCE

    first, last = sorted([PIPELINE_SINCE, GOSSIP_SINCE])
    assert first < last
    later = "gossip" if last == GOSSIP_SINCE else "client pipeline"
    assert later in stale_note("fleet", {"measured_at": first})
    assert stale_note("fleet", {"measured_at": AFTER}) == ""
    assert stale_note("netsim", {"measured_at": GOSSIP_SINCE}) == ""
    assert stale_note("fl_chain", {"measured_at": PIPELINE_SINCE}) == ""
    assert stale_note("netsim", {"measured_at": BEFORE}) != "" != stale_note("fl_chain", {"measured_at": BEFORE})
