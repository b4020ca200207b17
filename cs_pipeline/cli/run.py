"""Commands that run the pipeline: ``run`` (a job over a range of days), ``materialize`` (a selection of
assets) and ``demo`` (generate, backfill, sensor, interventions, backtest, summary)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from cs_pipeline.cli.common import (
    app,
    console,
    fail,
    load_settings,
    parse_day,
    quiet,
    run_range,
    today,
)


@app.command()
def run(
    start: Annotated[str | None, typer.Option(help="First partition day YYYY-MM-DD (partitioned jobs).")] = None,
    end: Annotated[str | None, typer.Option(help="Last partition day (default: START).")] = None,
    job: Annotated[str, typer.Option(help="Job to run, e.g. health_score_backtest_job (unpartitioned: no --start).")] = "daily_customer_success",
    days_per_run: Annotated[int, typer.Option(min=1, help="Days per Dagster run (single-run backfills).")] = 31,
    full_refresh: Annotated[bool, typer.Option(
        "--full-refresh", help="Rebuild the dbt marts from raw (dbt --full-refresh) in the first run; every "
                               "day up to the newest built day is rebuilt, later runs continue incrementally.")] = False,
) -> None:
    """Run a job over a range of daily partitions (or once, for a job without partitions), recorded in
    the persistent Dagster instance; dbt and Dagster logs go to $CS_PIPELINE_HOME/logs/run.log."""
    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.runtime.ranges import UnknownJobError, job_is_partitioned

    settings = load_settings()
    if start is None:
        try:
            partitioned = job_is_partitioned(build_definitions(settings), job)
        except UnknownJobError as exc:
            raise fail(str(exc), 2) from exc
        if partitioned:
            raise fail(f"job {job} is partitioned by day: give --start YYYY-MM-DD", 2)
        first = last = today()
    else:
        first = parse_day(start)
        last = parse_day(end) if end else first
    run_range(settings, job, first, last, days_per_run, settings.home / "logs" / "run.log", full_refresh=full_refresh)


@app.command()
def materialize(
    select: Annotated[str, typer.Option(help="Assets: keys like raw/suppliers (comma-separated, + and * for "
                                               "neighbours), or Dagster's selection syntax (group:health).")],
    partition: Annotated[str | None, typer.Option(help="One partition day YYYY-MM-DD.")] = None,
    start: Annotated[str | None, typer.Option(help="First day of a range.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day of a range (default: START).")] = None,
    days_per_run: Annotated[int, typer.Option(min=1, help="Days per Dagster run.")] = 31,
) -> None:
    """Materialise a selection of assets (and their checks) for a day or a range, on the persistent
    instance (history in the UI); dbt and Dagster logs go to $CS_PIPELINE_HOME/logs/materialize.log."""
    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.runtime.selection import (
        SELECTION_JOB,
        partitioned_kinds,
        resolve_selection,
        with_selection_job,
    )

    settings = load_settings()
    if partition and (start or end):
        raise fail("give --partition or --start/--end, not both", 2)
    defs = build_definitions(settings)
    try:
        keys = resolve_selection(select, defs)
    except Exception as exc:  # an unknown key or bad syntax
        raise fail(f"--select {select!r}: {str(exc).splitlines()[0] if str(exc) else exc!r}", 2) from exc
    if not keys:
        raise fail(f"--select {select!r} matches no asset", 2)
    partitioned = partitioned_kinds(defs, keys)
    if len(partitioned) > 1:
        raise fail("the selection mixes daily-partitioned and unpartitioned assets; materialise them separately", 2)
    if True in partitioned:
        if not (partition or start):
            raise fail("these assets are partitioned by day: give --partition or --start", 2)
        first = parse_day(partition or start)
        last = parse_day(end) if end else first
    else:
        first = last = today()
    console.print(f"materialising {len(keys)} asset(s): {', '.join(sorted(k.to_user_string() for k in keys))}")
    run_range(settings, SELECTION_JOB, first, last, days_per_run, settings.home / "logs" / "materialize.log",
              defs=with_selection_job(defs, keys))


@app.command()
def demo(
    suppliers: Annotated[int, typer.Option(min=1, help="Number of supplier accounts.")] = 400,
    days: Annotated[int, typer.Option(min=2, help="Days of history.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    days_per_run: Annotated[int, typer.Option(min=1, help="Days per Dagster run for the history backfill.")] = 60,
) -> None:
    """Generate data, run the whole pipeline through Dagster on the embedded default (history as a
    backfill, then the newest day as the daily run), evaluate the escalation sensor, deliver the
    interventions, backtest the scorecards and print a summary."""
    from cs_pipeline.app.summary import print_summary
    from cs_pipeline.feeds.generate import GeneratorConfig
    from cs_pipeline.feeds.generate import generate as run_generate
    from cs_pipeline.runtime.demo import backtest_and_outcomes, escalate
    from cs_pipeline.runtime.instance import get_instance

    settings = load_settings()
    first = today() - timedelta(days=days)
    last = today() - timedelta(days=1)
    log = settings.home / "logs" / "demo.log"
    for heading in DEMO_STEPS[:1]:
        console.rule(heading)
    run_generate(GeneratorConfig(suppliers=suppliers, days=days, start=first, seed=seed,
                                 out=settings.landing_dir), progress=True)
    console.rule(DEMO_STEPS[1])
    console.print(f"dbt and Dagster logs: {log}", soft_wrap=True)
    if last > first:
        run_range(settings, "daily_customer_success", first, last - timedelta(days=1), days_per_run, log,
                  announce_log=False)
    run_range(settings, "daily_customer_success", last, last, 1, log, announce_log=False)
    console.rule(DEMO_STEPS[2])
    instance = get_instance(settings)
    with quiet(log):
        ticks = escalate(settings, instance)
    console.print(f"sensor: {len(ticks.run_keys)} run request(s): {', '.join(ticks.run_keys) or ticks.skip_message}")
    console.print(f"second tick: {ticks.second_requests} run request(s) ({ticks.second_skip_message or 'nothing new'})")
    console.rule(DEMO_STEPS[3])
    with quiet(log):
        backtest_and_outcomes(settings, instance)
    console.rule(DEMO_STEPS[4])
    print_summary(settings, console, as_of=last)
    console.print(f"BI tools (read-only role): {bi_url(settings)}", soft_wrap=True)


#: The demo's step headings (each fits an 80-column terminal with the rule's decoration).
DEMO_STEPS = ("1. synthetic WedSync landing files",
              "2. daily_customer_success: history as a backfill, then the newest day",
              "3. risk_escalation_sensor and intervention_job",
              "4. backtest and intervention outcomes",
              "5. summary")


def bi_url(settings) -> str:
    """The BI role's connection, password masked (as ``cs-pipeline db url --bi``): what the demo's reader
    connects a BI tool with, rather than the pipeline's own (superuser) connection."""
    from cs_pipeline.app.dashboard.connection import dashboard_conninfo, prepare_dashboard_access
    from cs_pipeline.core.warehouse import describe

    if settings.embedded:
        prepare_dashboard_access(settings)
    return describe(dashboard_conninfo(settings))
