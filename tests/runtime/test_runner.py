"""The runner (runtime.runner, issue 17): a failed blocking check is named with its expectation and observed value;
jobs without partitions run once."""

from __future__ import annotations

from datetime import date

import dagster as dg

from cs_pipeline.runtime.runner import run_job_over_range

DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01")


@dg.asset(key=["raw", "things"], partitions_def=DAILY,
          check_specs=[dg.AssetCheckSpec("gx_raw_things", asset=["raw", "things"], blocking=True)])
def things():
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="gx_raw_things", passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "day_shown": dg.MetadataValue.text("2025-01-02"),
        "failed_expectations": dg.MetadataValue.json([
            {"expectation": "expect_table_row_count_to_be_between", "column": None, "severity": "critical",
             "observed_value": 3, "unexpected_count": None},
            {"expectation": "expect_column_values_to_not_be_null", "column": "user_id", "severity": "warning",
             "observed_value": None, "unexpected_count": 2}])})


@dg.asset(key=["marts", "after"], deps=[things], partitions_def=DAILY)
def after():
    return dg.MaterializeResult()


@dg.asset(key=["marts", "backtest"])
def backtest():
    return dg.MaterializeResult()


DEFS = dg.Definitions(assets=[things, after, backtest], jobs=[
    dg.define_asset_job("daily", selection=[things, after]),
    dg.define_asset_job("unpartitioned", selection=[backtest])])


def test_a_failed_blocking_check_is_named_with_expectation_and_observed_value():
    with dg.instance_for_test() as instance:
        [summary] = run_job_over_range(DEFS, "daily", date(2025, 1, 2), date(2025, 1, 2), instance,
                                       raise_on_error=False)
    assert not summary.success
    assert summary.failed_checks == ["check raw/things:gx_raw_things failed on 2025-01-02: "
                                     "expect_table_row_count_to_be_between (observed 3)"]


def test_a_job_without_partitions_runs_once_whatever_the_range():
    with dg.instance_for_test() as instance:
        summaries = run_job_over_range(DEFS, "unpartitioned", date(2025, 1, 1), date(2025, 3, 1), instance)
    assert [(s.success, s.start) for s in summaries] == [(True, None)]
    assert summaries[0].stages == {"default": {"materialized": 1}}



@dg.asset(key=["raw", "loaded"], partitions_def=DAILY, group_name="ingest")
def loaded():
    return dg.MaterializeResult()


@dg.asset(key=["marts", "built"], deps=[loaded], partitions_def=DAILY, group_name="marts")
def built():
    return dg.MaterializeResult()


PROGRESS_DEFS = dg.Definitions(assets=[loaded, built], jobs=[dg.define_asset_job("days", selection=[loaded, built])])


def test_progress_is_reported_per_asset_and_day_while_the_run_goes():
    """Issue 29 item 7: the progress display hears each asset's day as it is materialised, before the run (the
    window of days) ends, with its stage, not only 0 % until the window is done."""
    heard, windows = [], []
    with dg.instance_for_test() as instance:
        summaries = run_job_over_range(
            PROGRESS_DEFS, "days", date(2025, 1, 2), date(2025, 1, 4), instance, days_per_run=3,
            on_window=lambda first, last: windows.append((len(heard), first, last)), on_materialized=heard.append)
    assert [s.success for s in summaries] == [True]
    assert windows == [(6, date(2025, 1, 2), date(2025, 1, 4))]  # all heard before the window's end
    assert sorted((m.stage, m.asset, m.day) for m in heard) == sorted(
        [("ingest", "raw/loaded", f"2025-01-0{d}") for d in (2, 3, 4)]
        + [("marts", "marts/built", f"2025-01-0{d}") for d in (2, 3, 4)])
    assert [m.stage for m in heard][:3] == ["ingest"] * 3  # in the order the run materialised them
    assert sum(m.days for m in heard) == 3  # two assets: half a day each
