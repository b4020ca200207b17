"""Commands for data in and out: ``generate`` (synthetic landing files), ``import`` (a team's own exports
through an import mapping) and ``report`` (the health report of a day)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from cs_pipeline.cli.common import (
    app,
    console,
    fail,
    load_settings,
    parse_day,
    print_counts,
    run_range,
    today,
)
from cs_pipeline.core.settings import CALENDAR_FILE, ENV_PARTITION_START


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

    settings = load_settings()
    first = parse_day(start) if start else today() - timedelta(days=days)
    cfg = GeneratorConfig(suppliers=suppliers, days=days, start=first, seed=seed,
                          out=out or settings.landing_dir, fmt=fmt, gzip=gzip)
    try:
        counts = run_generate(cfg, progress=True)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    print_counts(f"generated {first} .. {first + timedelta(days=days - 1)} in {cfg.out}", "rows", counts)


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
    from cs_pipeline.core.settings import ENV_FEATURE_CATALOGUE
    from cs_pipeline.feeds.imports import (
        MappingError,
        check_event_names,
        load_mapping,
        run_import,
    )

    settings = load_settings()
    try:
        spec = load_mapping(mapping)
        if spec.catalogue:  # the product's own catalogue: recorded in CS_PIPELINE_HOME for later runs
            recorded = record_catalogue(mapping.parent / spec.catalogue, settings.home)
            console.print(f"feature catalogue {spec.catalogue} recorded in {recorded}", soft_wrap=True)
            if settings.feature_catalogue not in (None, recorded):
                console.print(f"[yellow]note:[/yellow] {ENV_FEATURE_CATALOGUE} is set and wins over it", soft_wrap=True)
        check_event_names(spec, event_names(), active_catalogue_path())
        result = run_import(spec, from_dir, out or settings.landing_dir)
    except (MappingError, CatalogueError) as exc:
        raise fail(str(exc), 2, soft_wrap=True) from exc
    from cs_pipeline.core.settings import remember_partition_start

    remembered = remember_partition_start(settings.home, result.first_day)
    print_counts(f"import {spec.name}: {result.first_day}..{result.last_day}, {result.files} files", "rows written",
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
        settings = load_settings()  # the calendar may have moved
        run_range(settings, "daily_customer_success", result.first_day, result.last_day, 62,
                  settings.home / "logs" / "import.log")


@app.command()
def report(
    as_of: Annotated[str, typer.Option("--as-of", help="Day of the report, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="HTML file to write; the CSV goes beside it (.csv).")],
) -> None:
    """Export the health report for a day: HTML with charts, and the day's scores as CSV."""
    from cs_pipeline.app.report import export_report
    from cs_pipeline.runtime.warehouse import connect

    day = parse_day(as_of)
    with connect(load_settings()) as conn:
        try:
            html_path, csv_path = export_report(conn, day, out)
        except ValueError as exc:
            raise fail(str(exc), 1) from exc
    console.print(f"wrote {html_path} and {csv_path}")
