"""Running jobs in-process from the CLI over ranges of daily partitions, with progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class RunSummary:
    """One run: its id, whether it succeeded, and the partition range it covered."""

    run_id: str
    success: bool
    start: date
    end: date


def day_windows(start: date, end: date, days_per_run: int) -> list[tuple[date, date]]:
    """Split the inclusive range [start, end] into consecutive windows of at most ``days_per_run`` days."""
    if end < start:
        raise ValueError(f"empty range: {start} > {end}")
    windows = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + timedelta(days=days_per_run - 1))
        windows.append((cursor, last))
        cursor = last + timedelta(days=1)
    return windows


def run_job_over_range(
    defs: dg.Definitions,
    job_name: str,
    start: date,
    end: date,
    instance: dg.DagsterInstance,
    days_per_run: int = 31,
    on_window: Callable[[date, date], None] | None = None,
    tags: dict[str, str] | None = None,
) -> list[RunSummary]:
    """Execute ``job_name`` in-process for [start, end], one run per window of ``days_per_run`` days
    (each run covers its window as one partition range, as a single-run backfill would). ``tags`` are
    added to every run (e.g. ``cs_pipeline.transform.dbt.FULL_REFRESH_TAG``).

    Raises:
        dagster.DagsterExecutionStepExecutionError (or a subclass): a step failed; earlier windows
            stay materialised.
    """
    job = defs.resolve_job_def(job_name)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    summaries = []
    for first, last in day_windows(start, end, days_per_run):
        if first == last:
            result = job.execute_in_process(run_config=quiet, instance=instance, partition_key=first.isoformat(),
                                            tags=dict(tags or {}))
        else:
            result = job.execute_in_process(
                run_config=quiet,
                instance=instance,
                tags={**(tags or {}), RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
            )
        summaries.append(RunSummary(result.run_id, result.success, first, last))
        if on_window is not None:
            on_window(first, last)
    return summaries
