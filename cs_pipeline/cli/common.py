"""What the command modules share: the typer app, the console, settings with one-line errors, day
parsing, count tables, the quiet log redirection and running a job over a range with progress."""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cs_pipeline.core.settings import Settings, SettingsError

app = typer.Typer(help="cs_pipeline: customer-success data pipeline (Dagster + dbt + PostgreSQL).",
                  no_args_is_help=True, add_completion=False)
console = Console()


def load_settings() -> Settings:
    """The settings from the environment, with the feature catalogue checked; exit 2 with one line naming
    the variable (or file) and the fix when they are wrong."""
    from cs_pipeline.core.catalogue import CatalogueError, load_catalogue
    from cs_pipeline.health.scorecard import ScorecardError, load_scorecard

    try:
        settings = Settings.from_env()
        if settings.feature_catalogue is not None:
            load_catalogue(settings.feature_catalogue)  # a bad catalogue: one line naming the file and the fix
        load_scorecard(settings.scorecard)  # a bad scorecard fails now, not when customer_health runs
        return settings
    except (SettingsError, CatalogueError, ScorecardError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def today() -> date:
    """Today, UTC."""
    return datetime.now(timezone.utc).date()


def parse_day(value: str) -> date:
    """``YYYY-MM-DD`` as a date; exit 2 with one line otherwise."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {value!r} is not a day (YYYY-MM-DD)")
        raise typer.Exit(2) from exc


def fail(message: str, code: int, soft_wrap: bool = False) -> typer.Exit:
    """Print ``error: message`` and return the ``typer.Exit(code)`` to raise."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=soft_wrap)
    return typer.Exit(code)


def print_counts(title: str, label: str, counts: dict[str, int]) -> None:
    """A two-column table: source, and its count under ``label``."""
    table = Table(title=title)
    table.add_column("source")
    table.add_column(label, justify="right")
    for source, count in counts.items():
        table.add_row(source, f"{count:,}")
    console.print(table)


@contextlib.contextmanager
def quiet(log: Path):
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


def progress_display() -> "Progress":
    """The progress display of a run over days, within 80 columns: the stage (asset group) and day of the
    newest materialisation, a bar, days done of the total (fractions as the run's assets finish a day) and
    the elapsed time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    return Progress(TextColumn("{task.fields[stage]}", table_column=Column(width=26, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=22), TextColumn("{task.fields[done]}"), TimeElapsedColumn(), console=console)


def run_range(settings: Settings, job: str, first: date, last: date, days_per_run: int,
              log: Path | None = None, defs=None, full_refresh: bool = False, announce_log: bool = True) -> None:
    """``runtime.ranges.run_range`` with a progress display (per day and stage, from each run's
    materialisations), the per-stage table and one line per failed run; exit 2 for an unknown job or a day
    outside the partitions, 1 when a run failed. ``announce_log`` False: the caller printed the log's path."""
    from cs_pipeline.core.partitions import PartitionRangeError
    from cs_pipeline.runtime import ranges
    from cs_pipeline.runtime.instance import get_instance

    try:
        plan = ranges.plan_range(settings, job, first, last, defs=defs)
    except ranges.UnknownJobError as exc:
        raise fail(str(exc), 2) from exc
    except PartitionRangeError as exc:
        raise fail(str(exc), 2, soft_wrap=True) from exc
    instance = get_instance(settings)
    if log and announce_log:
        console.print(f"dbt and Dagster logs: {log}", soft_wrap=True)
    console.print(plan.label + (f" ({plan.total} day{'s' if plan.total > 1 else ''})" if plan.partitioned else ""))
    unit = "days" if plan.partitioned else "runs"
    done = [0.0, 0.0]  # units of finished runs; share of the running one

    with progress_display() as progress:
        task = progress.add_task("", total=plan.total, stage="starting", done=f"0/{plan.total} {unit}")

        def show() -> None:
            completed = min(plan.total, done[0] + done[1])
            progress.update(task, completed=completed, done=f"{completed:.1f}/{plan.total} {unit}")

        def materialized(m) -> None:
            done[1] += m.days
            progress.update(task, stage=f"{m.stage} {m.day or ''}".strip())
            show()

        def window(units: int) -> None:
            done[0], done[1] = done[0] + units, 0.0
            show()

        try:
            with quiet(log) if log else contextlib.nullcontext():
                summaries = ranges.run_range(plan, instance, days_per_run, full_refresh=full_refresh,
                                             on_window=window, on_materialized=materialized)
        except Exception as exc:  # not a failed step (those are in the summaries): report it
            console.print(f"[red]run failed:[/red] {str(exc).splitlines()[0] if str(exc) else exc!r}")
            if log:
                console.print(f"details: {log}")
            raise typer.Exit(1) from exc
        progress.update(task, stage="done" if all(s.success for s in summaries) else "failed")
    print_stage_summary(ranges.stage_totals(summaries))
    warned = sorted({name for s in summaries for name in s.warned_checks})
    if warned:
        console.print(f"[yellow]checks that warned:[/yellow] {', '.join(warned)}", soft_wrap=True, markup=False)
    failed = [s for s in summaries if not s.success]
    if failed:
        for summary in failed:
            span = f" for {summary.start}..{summary.end}" if summary.start else ""
            console.print(f"[red]run {summary.run_id} failed{span}[/red]", soft_wrap=True)
            for line in [*summary.failed_steps, *summary.failed_checks]:
                console.print(f"  {line}", soft_wrap=True, markup=False)
            if not summary.failed_checks and not summary.failed_steps and log:
                console.print(f"  a step failed: see {log}")
        raise typer.Exit(1)
    console.print(f"{len(summaries)} run(s) succeeded" + (f" for {plan.total} day(s)" if plan.partitioned else ""))


def print_stage_summary(stages: dict) -> None:
    """Per stage (asset group): assets materialised, checks passed and failed, over all runs."""
    if not stages:
        return
    table = Table(title="per stage")
    for column in ("stage", "materialized", "checks passed", "checks failed"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, counts in stages.items():
        table.add_row(stage, str(counts["materialized"]), str(counts["checks passed"]), str(counts["checks failed"]))
    console.print(table)
