"""runtime.ranges (issue 25: what ``cs-pipeline run``/``materialize``/``demo`` do between parsing and
printing): the job and calendar are checked before anything runs; a range runs window by window with
only the first run a full refresh, stopping at a failed run; stage totals add up over runs. Real Dagster
runs of a small daily-partitioned asset on an ephemeral instance."""

# (No ``from __future__ import annotations``: Dagster inspects the context annotation.)

from collections import Counter
from datetime import date, timedelta

import dagster as dg
import pytest

from cs_pipeline.core.partitions import PartitionRangeError
from cs_pipeline.runtime.ranges import RangePlan, UnknownJobError, plan_range, run_range, stage_totals
from cs_pipeline.runtime.runner import RunSummary
from cs_pipeline.transform.dbt import FULL_REFRESH_TAG

DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01")
FIRST = date(2025, 1, 1)


def _defs(fail_on: date | None = None) -> dg.Definitions:
    @dg.asset(partitions_def=DAILY, group_name="probe")
    def probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        window = context.partition_key_range
        if fail_on is not None and window.start <= fail_on.isoformat() <= window.end:
            raise dg.Failure(f"planned failure on {fail_on}")
        return dg.MaterializeResult(metadata={"full_refresh": context.run.tags.get(FULL_REFRESH_TAG, "false")})

    @dg.asset(group_name="probe")
    def once() -> None:
        return None

    return dg.Definitions(assets=[probe, once], jobs=[
        dg.define_asset_job("probe_job", selection=[probe]),
        dg.define_asset_job("once_job", selection=[once])])


def _runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return sorted(instance.get_runs(), key=lambda r: r.tags.get("dagster/asset_partition_range_start",
                                                                r.tags.get("dagster/partition", "")))


def test_an_unknown_job_is_refused_before_anything_runs(settings):
    with pytest.raises(UnknownJobError, match="no_such_job"):
        plan_range(settings, "no_such_job", FIRST, FIRST, defs=_defs())


def test_a_day_outside_the_partitions_is_refused_naming_the_variable(settings):
    day = settings.partition_start - timedelta(days=1)
    with pytest.raises(PartitionRangeError, match="CS_PIPELINE_PARTITION_START"):
        plan_range(settings, "daily_customer_success", day, day)


def test_a_job_without_partitions_runs_once_whatever_the_range(settings):
    plan = RangePlan(defs=_defs(), job="once_job", first=FIRST, last=FIRST + timedelta(days=9), partitioned=False)
    assert plan.total == 1 and plan.label == "once_job"
    instance = dg.DagsterInstance.ephemeral()
    progress: list[int] = []
    summaries = run_range(plan, instance, days_per_run=3, on_window=progress.append)
    assert [s.success for s in summaries] == [True] and progress == [1] and len(instance.get_runs()) == 1


def test_only_the_first_window_is_a_full_refresh_and_progress_counts_days():
    plan = RangePlan(defs=_defs(), job="probe_job", first=FIRST, last=FIRST + timedelta(days=6), partitioned=True)
    assert plan.total == 7 and plan.label == "probe_job 2025-01-01..2025-01-07"
    instance = dg.DagsterInstance.ephemeral()
    progress: list[int] = []
    summaries = run_range(plan, instance, days_per_run=3, full_refresh=True, on_window=progress.append)
    assert [(s.start, s.end, s.success) for s in summaries] == [
        (date(2025, 1, 1), date(2025, 1, 3), True), (date(2025, 1, 4), date(2025, 1, 6), True),
        (date(2025, 1, 7), date(2025, 1, 7), True)]
    assert progress == [3, 3, 1]
    assert [r.tags.get(FULL_REFRESH_TAG) for r in _runs(instance)] == ["true", None, None]
    assert stage_totals(summaries) == {"probe": Counter({"materialized": 7})}


def test_a_failed_window_stops_the_range():
    plan = RangePlan(defs=_defs(fail_on=date(2025, 1, 5)), job="probe_job", first=FIRST,
                     last=FIRST + timedelta(days=8), partitioned=True)
    instance = dg.DagsterInstance.ephemeral()
    summaries = run_range(plan, instance, days_per_run=3)
    assert [(s.start, s.success) for s in summaries] == [(date(2025, 1, 1), True), (date(2025, 1, 4), False)]
    assert len(instance.get_runs()) == 2


def test_a_failed_full_refresh_run_runs_nothing_after_it():
    plan = RangePlan(defs=_defs(fail_on=FIRST), job="probe_job", first=FIRST, last=FIRST + timedelta(days=5),
                     partitioned=True)
    summaries = run_range(plan, dg.DagsterInstance.ephemeral(), days_per_run=3, full_refresh=True)
    assert [(s.start, s.success) for s in summaries] == [(FIRST, False)]


def test_stage_totals_add_up_over_runs_in_first_seen_order():
    runs = [RunSummary("a", True, None, None, stages={"ingest": Counter({"materialized": 4, "checks passed": 2})}),
            RunSummary("b", True, None, None, stages={"health": Counter({"materialized": 1}),
                                                      "ingest": Counter({"materialized": 4, "checks failed": 1})})]
    totals = stage_totals(runs)
    assert list(totals) == ["ingest", "health"]
    assert totals["ingest"] == Counter({"materialized": 8, "checks passed": 2, "checks failed": 1})
