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


def test_a_section_is_marked_by_the_change_to_the_code_it_depends_on() -> None:
    """The fleet of real daemons depends on gossip's defaults, not on the learning pipeline: a
    fleet measured after the pipeline changed but before gossip did is stale for gossip's sake."""
    from bench.report import GOSSIP_SINCE

    assert PIPELINE_SINCE < GOSSIP_SINCE
    assert "gossip" in stale_note("fleet", {"measured_at": PIPELINE_SINCE})
    assert stale_note("fleet", {"measured_at": AFTER}) == ""
    assert stale_note("fl_chain", {"measured_at": PIPELINE_SINCE}) == ""
