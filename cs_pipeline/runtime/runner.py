"""Running jobs and asset selections in-process over ranges of daily partitions (or once, for
unpartitioned jobs), with progress; and parsing a run's events: materialisations and check results per
stage, and the blocking checks that failed a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
from dagster._core.utils import make_new_run_id

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class RunSummary:
    """One run: its id, whether it succeeded, and the partition range it covered."""

    run_id: str
    success: bool
    start: date | None
    end: date | None
    failed_checks: list[str] = field(default_factory=list)
    stages: dict[str, Counter] = field(default_factory=dict)
    #: One line per failed step: the step (its asset), the run's days and the one-line reason.
    failed_steps: list[str] = field(default_factory=list)
    #: Non-blocking (WARN) checks that failed, by name: the run went on, but they say what to look at.
    warned_checks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Materialized:
    """One asset materialised for one day during a run: its stage (asset group), key (``marts/customer_health``),
    partition day (``YYYY-MM-DD``, None when unpartitioned) and the share of the run's progress it stands for, in
    days (1 / number of assets in the run: the run's days are done when every asset has every day)."""

    stage: str
    asset: str
    day: str | None
    days: float


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
    raise_on_error: bool = True,
    asset_selection: list[dg.AssetKey] | None = None,
    on_materialized: Callable[[Materialized], None] | None = None,
) -> list[RunSummary]:
    """Execute ``job_name`` in-process for [start, end], one run per window of ``days_per_run`` days
    (each run covers its window as one partition range, as a single-run backfill would). ``tags`` are
    added to every run (e.g. ``cs_pipeline.transform.dbt.FULL_REFRESH_TAG``). A job without
    partitions (``health_score_backtest_job``) runs once and ignores the range. ``asset_selection``
    narrows the job to those assets (and their checks). ``on_materialized`` is called during each run, for
    every asset and day it materialises (from the run's event stream), with that day's share of progress.

    Raises:
        dagster.DagsterExecutionStepExecutionError (or a subclass): a step failed and ``raise_on_error``;
            earlier windows stay materialised. Otherwise the summary says ``success=False`` and names
            the failed blocking checks.
    """
    job = defs.resolve_job_def(job_name)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    graph = defs.resolve_asset_graph()
    options = {"run_config": quiet, "instance": instance, "raise_on_error": raise_on_error}
    if asset_selection is not None:
        options["asset_selection"] = asset_selection
    assets = len(asset_selection) if asset_selection is not None else len(job.asset_layer.selected_asset_keys)

    def listen() -> dict:
        """A run id whose events go to ``on_materialized`` (``instance.add_event_listener``), as options."""
        if on_materialized is None:
            return {}
        run_id = make_new_run_id()
        share = 1.0 / max(1, assets)  # days of progress per materialisation: the run has each asset and day

        def heard(entry) -> None:
            event = entry.dagster_event
            if event is None or event.event_type != dg.DagsterEventType.ASSET_MATERIALIZATION:
                return
            key = event.asset_key
            group = graph.get(key).group_name if key is not None and graph.has(key) else "other"
            on_materialized(Materialized(group, key.to_user_string() if key else "?", event.partition, share))

        instance.add_event_listener(run_id, heard)
        return {"run_id": run_id}

    if job.partitions_def is None:
        result = job.execute_in_process(**options, **listen(), tags=dict(tags or {}))
        summary = _summary(result, graph, None, None)
        if on_window is not None:
            on_window(start, end)
        return [summary]
    summaries = []
    for first, last in day_windows(start, end, days_per_run):
        run = listen()
        if first == last:
            result = job.execute_in_process(**options, **run, partition_key=first.isoformat(), tags=dict(tags or {}))
        else:
            result = job.execute_in_process(
                **options, **run, tags={**(tags or {}), RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()})
        summaries.append(_summary(result, graph, first, last))
        if on_window is not None:
            on_window(first, last)
        if not result.success:
            break
    return summaries


def _summary(result, graph, first: date | None, last: date | None) -> RunSummary:
    stages: dict[str, Counter] = {}
    for event in result.get_asset_materialization_events():
        key = event.asset_key
        group = graph.get(key).group_name if graph.has(key) else "other"
        stages.setdefault(group, Counter())["materialized"] += 1
    for evaluation in result.get_asset_check_evaluations():
        group = graph.get(evaluation.asset_key).group_name if graph.has(evaluation.asset_key) else "other"
        stages.setdefault(group, Counter())["checks passed" if evaluation.passed else "checks failed"] += 1
    span = "" if first is None else f" for {first}" if first == last else f" for {first}..{last}"
    evaluations = result.get_asset_check_evaluations()
    return RunSummary(result.run_id, result.success, first, last,
                      failed_checks=describe_failed_checks(evaluations), stages=stages,
                      failed_steps=[f"{step}{span}: {reason}" for step, reason in failed_steps(result.all_events)],
                      warned_checks=sorted({f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations
                                            if not e.passed and e.severity == dg.AssetCheckSeverity.WARN}))


def failed_steps(events) -> list[tuple[str, str]]:
    """(step, one-line reason) of each failed step among a run's ``events`` (Dagster events): the step key
    (``raw__activity_events`` is asset raw/activity_events) and the first line of what the step raised
    (a ``dagster.Failure``'s description, else the error's message), secrets masked, at most 300 characters.
    Issue 29: the terminal names the failing asset and why, not only "a step failed"."""
    from cs_pipeline.core.warehouse import mask_secrets

    out = []
    for event in events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        text = (data.user_failure_data.description if data.user_failure_data else "") or ""
        error = data.error
        while not text and error is not None:  # the innermost message names the cause
            text = (error.message or "").strip()
            if text.startswith(("dagster._core.errors.", "DagsterExecutionStepExecutionError")) and error.cause:
                text, error = "", error.cause
        line = mask_secrets(next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error"))
        out.append((event.step_key or "?", line[:300]))
    return out


def describe_failed_checks(evaluations) -> list[str]:
    """One line per failed check of severity ERROR (the blocking ones): the check, and per failed
    expectation its type, column and observed value (from the ``failed_expectations`` metadata of the
    Great Expectations checks), or the check's other metadata.

    ``evaluations``: ``dagster.AssetCheckEvaluation`` objects (``ExecuteInProcessResult.get_asset_check_evaluations()``).
    """
    lines = []
    for evaluation in evaluations:
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        metadata = evaluation.metadata or {}
        failed = metadata.get("failed_expectations")
        parts = []
        if failed is not None:
            day = metadata.get("day_shown")
            for item in failed.value:
                if item.get("severity") != "critical":
                    continue
                column = f" on {item['column']}" if item.get("column") else ""
                observed = item.get("observed_value")
                if observed is None and item.get("unexpected_count") is not None:
                    observed = f"{item['unexpected_count']} unexpected, e.g. {item.get('unexpected_sample')}"
                parts.append(f"{item['expectation']}{column} (observed {observed})")
            where = f" on {day.value}" if day is not None else ""
            lines.append(f"check {name} failed{where}: " + "; ".join(parts))
        else:
            shown = ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in metadata.items())
            lines.append(f"check {name} failed: {shown}")
    return lines
