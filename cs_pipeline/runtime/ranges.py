"""Running a job over a range of days on the persistent Dagster instance (``cs-pipeline run``,
``materialize``, ``import --run`` and the demo): check the job and the days first (``plan_range``), then
run it window by window (``run_range``), and add up what each stage did (``stage_totals``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import dagster as dg

from cs_pipeline.core.partitions import check_days_in_partitions
from cs_pipeline.core.settings import Settings
from cs_pipeline.runtime.runner import Materialized, RunSummary, day_windows, run_job_over_range


class UnknownJobError(ValueError):
    """No job of that name in the definitions (the message is Dagster's)."""


@dataclass(frozen=True)
class RangePlan:
    """A checked request to run ``job`` of ``defs`` over the UTC days ``first``..``last`` (inclusive);
    ``partitioned`` False: the job has no partitions and runs once."""

    defs: dg.Definitions
    job: str
    first: date
    last: date
    partitioned: bool

    @property
    def total(self) -> int:
        """Units of progress: days for a partitioned job, 1 otherwise."""
        return (self.last - self.first).days + 1 if self.partitioned else 1

    @property
    def label(self) -> str:
        """``job first..last`` (partitioned) or ``job``."""
        return f"{self.job} {self.first}..{self.last}" if self.partitioned else self.job


def job_is_partitioned(defs: dg.Definitions, job: str) -> bool:
    """Whether ``job`` runs per daily partition.

    Raises:
        UnknownJobError: ``defs`` has no such job.
    """
    try:
        return defs.resolve_job_def(job).partitions_def is not None
    except Exception as exc:  # Dagster raises its own error types for an unknown name
        raise UnknownJobError(str(exc)) from exc


def plan_range(settings: Settings, job: str, first: date, last: date,
               defs: dg.Definitions | None = None) -> RangePlan:
    """Check ``job`` and, for a partitioned job, that every day of ``first``..``last`` is a daily
    partition; ``defs`` default: ``build_definitions(settings)``.

    Raises:
        UnknownJobError: no such job.
        cs_pipeline.core.partitions.PartitionRangeError: a day before the first partition or after
            today (the message names the variable to change).
    """
    from cs_pipeline.definitions import build_definitions

    defs = defs or build_definitions(settings)
    partitioned = job_is_partitioned(defs, job)
    if partitioned:
        check_days_in_partitions(first, last, settings.partition_start, settings.partition_start_origin)
    return RangePlan(defs=defs, job=job, first=first, last=last, partitioned=partitioned)


def run_range(plan: RangePlan, instance: dg.DagsterInstance, days_per_run: int, full_refresh: bool = False,
              on_window: Callable[[int], None] | None = None,
              on_materialized: Callable[[Materialized], None] | None = None) -> list[RunSummary]:
    """Run ``plan`` on ``instance``, one Dagster run per window of at most ``days_per_run`` days, stopping
    at the first failed run. With ``full_refresh`` the first window runs with
    ``transform.dbt.FULL_REFRESH_TAG`` (dbt --full-refresh rebuilds every built day), the rest
    incrementally. ``on_window(units)`` is called after each run with its units of progress (days, or 1
    for an unpartitioned job); ``on_materialized`` during each run, per asset and day materialised
    (``runner.Materialized``: its stage and its share of a day's progress).

    Returns the runs' summaries (``success`` False and ``failed_checks`` for a failed run).

    Raises:
        Exception: what Dagster raises outside a step (a step's failure is in the summaries instead).
    """
    from cs_pipeline.transform.dbt import FULL_REFRESH_TAG

    def advance(first: date, last: date) -> None:
        if on_window is not None:
            on_window((last - first).days + 1 if plan.partitioned else 1)

    windows = day_windows(plan.first, plan.last, days_per_run) if plan.partitioned else [(plan.first, plan.last)]
    summaries: list[RunSummary] = []
    if full_refresh:  # only the first run rebuilds from raw; it covers every built day
        summaries += run_job_over_range(plan.defs, plan.job, *windows[0], instance, days_per_run, on_window=advance,
                                        tags={FULL_REFRESH_TAG: "true"}, raise_on_error=False,
                                        on_materialized=on_materialized)
        windows = windows[1:]
    if windows and all(s.success for s in summaries):
        summaries += run_job_over_range(plan.defs, plan.job, windows[0][0], plan.last, instance, days_per_run,
                                        on_window=advance, raise_on_error=False, on_materialized=on_materialized)
    return summaries


def stage_totals(summaries: list[RunSummary]) -> dict[str, Counter]:
    """Per stage (asset group), over all runs: counts under ``materialized``, ``checks passed`` and
    ``checks failed``, in the order the stages first appear."""
    stages: dict[str, Counter] = {}
    for summary in summaries:
        for stage, counts in summary.stages.items():
            stages.setdefault(stage, Counter()).update(counts)
    return stages
