"""The end-of-run summary printed by ``cs-pipeline demo``: what the pipeline found, from the database."""

from __future__ import annotations

from datetime import date

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from cs_pipeline.settings import Settings
from cs_pipeline.warehouse import resolve_endpoints


def _exists(conn: psycopg.Connection, qualified: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0]


def ingest_counts(conn: psycopg.Connection) -> list[tuple[str, int, int]]:
    """(source, rows loaded, rows rejected) per raw source, from ``ops.load_audit``."""
    return conn.execute(
        "SELECT source, sum(rows_loaded)::bigint, sum(rows_rejected)::bigint FROM ops.load_audit "
        "GROUP BY source ORDER BY source"
    ).fetchall()


def print_summary(settings: Settings, console: Console, as_of: date) -> None:
    """Print the demo summary for ``as_of`` (the latest partition day)."""
    endpoints = resolve_endpoints(settings)
    with psycopg.connect(endpoints.warehouse) as conn:
        table = Table(title="raw ingestion (all days)")
        for col in ("source", "rows loaded", "rows rejected"):
            table.add_column(col, justify="right" if col != "source" else "left")
        for source, loaded, rejected in ingest_counts(conn):
            table.add_row(source, f"{loaded:,}", f"{rejected:,}")
        console.print(table)
        for qualified in ("marts.dim_suppliers", "marts.supplier_engagement_daily", "marts.customer_health"):
            if _exists(conn, qualified):
                schema, name = qualified.split(".")
                n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()[0]
                console.print(f"{qualified}: {n:,} rows")
    console.print(f"warehouse: {endpoints.warehouse}")
    console.print("open the UI: cs-pipeline dev")
