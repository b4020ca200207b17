"""The ingest stage's tables: ``raw.<source>``, ``raw.rejected_rows`` and ``ops.load_audit``, created idempotently.

Raw tables are LIST-partitioned by ``_partition_date`` (one child table per landing day), so replacing
a day is a TRUNCATE + COPY of its own child table inside one transaction.
"""

from __future__ import annotations

from datetime import date

import psycopg
from psycopg import sql

from cs_pipeline.core.db import ddl_transaction, ensure_schemas
from cs_pipeline.ingest.sources import Source, sources


def _column_ddl(source: Source) -> sql.Composed:
    parts = []
    for column in source.columns:
        not_null = sql.SQL(" NOT NULL") if column.required else sql.SQL("")
        parts.append(sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.type), not_null))
    parts += [
        sql.SQL("_partition_date date NOT NULL"),
        sql.SQL("_source_file text NOT NULL"),
        sql.SQL("_record_number bigint NOT NULL"),
        sql.SQL("_loaded_at timestamptz NOT NULL DEFAULT now()"),
    ]
    return sql.SQL(",\n  ").join(parts)


def ensure_raw_tables(conn: psycopg.Connection) -> None:
    """Create the raw tables, ``raw.rejected_rows`` and ``ops.load_audit`` if they do not exist (the
    schemas too, so the stage also works on a fresh database).

    Safe to run concurrently from several processes (serialised by an advisory lock). Commits.
    """
    ensure_schemas(conn)
    with ddl_transaction(conn):
        for source in sources().values():
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (\n  {}\n) PARTITION BY LIST (_partition_date)").format(
                    sql.Identifier("raw", source.name), _column_ddl(source)
                )
            )
        # The newest suppliers day (stg_wedsync__suppliers: the latest snapshot, read by several dbt models
        # and tests every run): without an index max(_partition_date) reads every partition (0.5 s a query
        # at 10,000 suppliers x 365 days, issue 18); with it, one index probe per partition.
        conn.execute("CREATE INDEX IF NOT EXISTS suppliers_partition_date_idx ON raw.suppliers (_partition_date)")
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS raw.rejected_rows (
              source text NOT NULL,
              partition_date date NOT NULL,
              source_file text NOT NULL,
              record_number bigint,
              raw_record text,
              reason text NOT NULL,
              _loaded_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS rejected_rows_source_day_idx "
            "ON raw.rejected_rows (source, partition_date)"
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS ops.load_audit (
              source text NOT NULL,
              partition_date date NOT NULL,
              source_file text NOT NULL,
              file_bytes bigint NOT NULL,
              records_in_file bigint NOT NULL,
              rows_loaded bigint NOT NULL,
              rows_rejected bigint NOT NULL,
              load_seconds double precision NOT NULL,
              loaded_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (source, partition_date)
            )
            """
        )


def partition_table_name(source: str, day: date) -> str:
    """Name of the child table holding ``day`` of ``raw.<source>``: ``<source>__pYYYYMMDD``."""
    return f"{source}__p{day:%Y%m%d}"


def ensure_partition(conn: psycopg.Connection, source: str, day: date) -> sql.Identifier:
    """Create the child table of ``raw.<source>`` for ``day`` if missing, in its own short transaction.

    Creating a partition locks the parent table, so it is done (and committed) before the load
    transaction, which then locks only the child. Creates the raw tables first on a fresh database.
    Returns the child's qualified identifier.
    """
    child = sql.Identifier("raw", partition_table_name(source, day))
    with ddl_transaction(conn):
        # Checked inside the transaction, so no implicit transaction is left open around the load.
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"raw.{source}",)).fetchone()[0]:
            ensure_raw_tables(conn)  # a fresh database: the stage creates its own tables
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES IN ({})").format(
                child, sql.Identifier("raw", source), sql.Literal(day)
            )
        )
    return child
