"""Writing an import's landing files: ``run_import`` loads the mapping's tables into DuckDB (``read``),
runs each part's SQL (``transform``) and has DuckDB write each query's rows as CSV sorted by day (``days``),
which is then split into the day files the landing contract names. Snapshot sources without a status rule
are rendered once and written as a prefix per day; days a source has no rows get header-only files.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from cs_pipeline.feeds.imports.days import PIECE_WORKERS, DayRuns, write_days, write_pieces
from cs_pipeline.feeds.imports.days import path_literal as _path_literal
from cs_pipeline.feeds.imports.days import run as _run
from cs_pipeline.feeds.imports.read import CHUNK_ROWS, connect, load_table, quote
from cs_pipeline.feeds.imports.spec import ImportMapping, ImportReport, MappingError, Part
from cs_pipeline.feeds.imports.transform import PartSql, Params, logins_sql, part_sql, status_sql
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources


#: A formatted column with at most this share of distinct values, or at most ``DISTINCT_MIN``, is formatted
#: once per value and joined (``_distinct_values``); more, and it is formatted row by row.
DISTINCT_SHARE = 0.05
DISTINCT_MIN = 1000


def run_import(mapping: ImportMapping, source_dir: Path, out_dir: Path, chunk_rows: int = CHUNK_ROWS) -> ImportReport:
    """Write the landing files of ``mapping`` for every day in [start, end] into ``out_dir``.

    The tables the mapping uses are read once into DuckDB (text columns and file order), which joins,
    filters, maps, groups and writes them out of core: beyond its 512 MB buffer pool it spills to a
    temporary directory, so peak memory does not follow the file size. Event rows whose day is outside
    [start, end] are dropped (and counted); without ``start``/``end`` in the mapping, the days are those of
    the event data. Snapshot sources are written whole for every day. ``chunk_rows`` is kept for callers;
    the engine chooses its own batches.

    Raises:
        MappingError: a table file is missing or unreadable, or a mapped column is absent.
    """
    del chunk_rows
    report = ImportReport()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in mapping.tables.items():
        if not (source_dir / spec.file).is_file():
            raise MappingError(f"{mapping.name}: table {name}: {source_dir / spec.file} not found")
    used = {p.from_ for parts in mapping.sources.values() for p in parts}
    used |= {j.table for parts in mapping.sources.values() for p in parts for j in p.joins}
    used |= {p.status.churn_table for parts in mapping.sources.values() for p in parts if p.status}
    with tempfile.TemporaryDirectory(prefix="cs-import-", dir=out_dir) as tmp, connect(Path(tmp) / "spill") as con:
        work = Path(tmp)
        with_ids = {p.from_ for parts in mapping.sources.values() for p in parts
                    if any(c.row_id for c in p.columns.values())}
        day_columns = {name: tuple(sorted({c for parts in mapping.sources.values() for p in parts if p.from_ == name
                                           for c in (p.day_from, p.present_from) if c})) for name in used}
        columns = {name: load_table(con, f"t_{name}", mapping.tables[name], source_dir, row_ids=name in with_ids,
                                    day_columns=day_columns[name]) for name in sorted(used)}
        distinct = _distinct_values(con, mapping, columns)
        counted: dict[tuple[str, tuple[Any, ...]], list[Any]] = {}  # counting queries run, by text and values
        # 1. Event sources: every part (and its logins) sorted by day, in ranges of days (``DayRuns``).
        written: dict[str, list[DayRuns]] = {}
        for target in SOURCE_NAMES:
            if target in mapping.snapshot_sources or not mapping.sources.get(target):
                continue
            written[target] = []
            for i, part in enumerate(mapping.sources[target]):
                sql = _part(part, target, f"sources.{target}.{i}", columns, (mapping.start, mapping.end), day_columns, distinct)
                _count(con, sql, report, counted)
                landing = ", ".join(quote(c) for c in sources()[target].column_names)
                select = f"SELECT {landing}, _day, _rn FROM {sql.final}"
                run = DayRuns(con, sql.query(select), sql.params, work / f"{target}_{i}", target,
                              by_range=not part.group_by, ordered=None if part.group_by else sql.query(select, ordered=True))
                written[target].append(run)
                if part.login_per_active_day:  # grouped per day range of the part's rows (days of the part's)
                    written[target].append(DayRuns(con, sql.query(logins_sql(sql.final)), sql.params,
                                                   work / f"{target}_{i}_logins", target, ranges=run.ranges))
        seen = [day for runs in written.values() for run in runs for day in run.counts]
        first = mapping.start or (min(seen) if seen else None)
        last = mapping.end or (max(seen) if seen else None)
        if first is None or last is None:
            raise MappingError(f"{mapping.name}: no event day in the data; give start and end in the mapping")
        report.first_day, report.last_day = first, last
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        # 2. Snapshot sources, whole for every day: rows with a status rule per day from DuckDB, the others
        # rendered once, sorted by the day they appear, and written as a prefix per day.
        static: dict[str, list[tuple[list[date], bytes, list[int]]]] = {}
        for target in mapping.snapshot_sources:
            queries, static[target] = [], []
            landing = list(sources()[target].column_names)
            for i, part in enumerate(mapping.sources.get(target, [])):
                sql = _part(part, target, f"sources.{target}.{i}", columns, None, day_columns, distinct)
                _count(con, sql, report, counted)
                if part.status is not None:
                    queries.append((sql.query(status_sql(sql.final, part.status, landing, first, last, sql.params)),
                                    sql.params))
                else:
                    static[target].append(_rendered(con, sql, landing, work / f"{target}_{i}.csv"))
            written[target] = [DayRuns(con, query, params, work / f"{target}_{n}", target)
                               for n, (query, params) in enumerate(queries)]
        # 3. The pieces, and meanwhile the day files of sources without any (a static snapshot, or only the
        # header); then the others' day files, two sources at a time.
        for target in SOURCE_NAMES:
            if not mapping.sources.get(target):
                report.notes.append(f"{target}: no mapping; header-only files written")
        bare = [t for t in SOURCE_NAMES if not written.get(t)]
        # Day files go to a staging folder first (same file system) and replace the landing folder's only
        # once every one is written: a failure part-way leaves the previous import's files as they were.
        stage = Path(tmp) / "landing"
        stage.mkdir()
        done = write_pieces(con, [r for runs in written.values() for r in runs], report,
                            [partial(write_days, stage, t, days, [], static.get(t, [])) for t in bare])
        with ThreadPoolExecutor(max_workers=PIECE_WORKERS) as pool:
            done += list(pool.map(lambda t: write_days(stage, t, days, written[t], static.get(t, [])),
                                  [t for t in SOURCE_NAMES if written.get(t)]))
        for target, files, rows in done:
            report.files += files
            report.rows[target] += rows
        for path in stage.iterdir():
            os.replace(path, out_dir / path.name)
    report.rows.update({t: 0 for t in SOURCE_NAMES if t not in report.rows})
    if mapping.start is None or mapping.end is None:
        report.notes.append(f"days from the data: {first}..{last}")
    return report


def _part(part: Part, target: str, where: str, columns: dict[str, list[str]],
          days: tuple[date | None, date | None] | None, parsed: dict[str, tuple[str, ...]],
          distinct: dict[str, dict[str, str]]) -> PartSql:
    return part_sql(part, target, where, columns, days, row_ids=any(c.row_id for c in part.columns.values()),
                    parsed=parsed.get(part.from_, ()), distinct=distinct.get(part.from_))


def _distinct_values(con: duckdb.DuckDBPyConnection, mapping: ImportMapping,
                     columns: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """Per table, its columns with a timestamp ``format`` (a day column, typically) and few distinct values
    (at most ``DISTINCT_SHARE`` of the rows): the DuckDB table of those values (column ``#v``), so the format
    is computed once per value rather than once per row."""
    wanted = {(p.from_, c.column) for parts in mapping.sources.values() for p in parts for c in p.columns.values()
              if c.format is not None and c.value_map is None and c.column in columns[p.from_]}
    found: dict[str, dict[str, str]] = {}
    for n, (table, column) in enumerate(sorted(wanted)):
        source = quote(f"t_{table}")
        values, rows = con.execute(f"SELECT approx_count_distinct({quote(column)}), count(*) FROM {source}").fetchone()
        if values <= max(DISTINCT_MIN, rows * DISTINCT_SHARE):
            name = quote(f"distinct_{n}")
            con.execute(f"CREATE TABLE {name} AS SELECT DISTINCT {quote(column)} AS \"#v\" FROM {source} "
                        f"WHERE {quote(column)} IS NOT NULL")
            found.setdefault(table, {})[column] = name
    return found


def _count(con: duckdb.DuckDBPyConnection, sql: PartSql, report: ImportReport,
           seen: dict[tuple[str, tuple[Any, ...]], list[Any]] | None = None) -> None:
    """Add what ``sql`` drops or cannot map to ``report``: one counting query per CTE checked, one per
    value-mapped or formatted column. ``seen`` keeps each query's result (by its text and values, the
    parameters numbered in order of use): parts over the same rows (e.g. payments and invoices from one
    log) count them once."""
    seen = {} if seen is None else seen

    def fetch(query: str) -> list[Any]:
        key = _canonical(query, sql.params)
        if key not in seen:
            seen[key] = _run(con, query, sql.params).fetchall()
        return seen[key]

    by_cte: dict[str, list[tuple[str, str]]] = {}
    for key, cte, condition in sql.checks:
        by_cte.setdefault(cte, []).append((key, condition))
    for cte, checks in by_cte.items():
        counts = fetch(sql.query("SELECT " + ", ".join(f"count(*) FILTER (WHERE {c})" for _, c in checks)
                                 + f" FROM {cte}", upto=cte))[0]
        for (key, _), n in zip(checks, counts):
            if n:
                report.dropped[key] += int(n)
    for key, value, bad in sql.value_checks:
        rows = fetch(sql.query(f"SELECT value, n FROM (SELECT {value} AS value, count(*) AS n FROM kept "
                               f"WHERE {value} IS NOT NULL GROUP BY ALL) WHERE {bad}", upto="kept"))
        if rows:
            report.unmapped.setdefault(key, Counter()).update({str(v): int(n) for v, n in rows})


def _canonical(query: str, params: Params) -> tuple[str, tuple[Any, ...]]:
    """``query`` with its parameters renumbered in order of first use, and their values in that order."""
    order: dict[str, str] = {}
    text = re.sub(r"\$(p[0-9]+) ", lambda m: "$" + order.setdefault(m.group(1), f"q{len(order)}") + " ", query)
    return text, tuple(repr(params.values[name]) for name in order)


def _rendered(con: duckdb.DuckDBPyConnection, sql: PartSql, landing: list[str], path: Path) -> tuple[list[date], bytes, list[int]]:
    """A snapshot part without a status rule as CSV text sorted by ``_present_from`` (rows without one
    first, then file order): (each row's day, ``date.min`` for none; the text; each row's end offset), so
    a day's rows are a prefix of the text."""
    select = ", ".join(quote(c) for c in landing)
    _run(con, "CREATE OR REPLACE TEMP TABLE snapshot AS "
                + sql.query(f"SELECT {select}, _present_from, _rn FROM {sql.final}"), sql.params)
    order = "ORDER BY _present_from NULLS FIRST, _rn"
    con.execute(f"COPY (SELECT {select} FROM snapshot {order}) TO '{_path_literal(path)}' (FORMAT csv, HEADER false)")
    present = [row[0] or date.min for row in con.execute(f"SELECT _present_from FROM snapshot {order}").fetchall()]
    con.execute("DROP TABLE snapshot")
    text = path.read_bytes()
    ends = (np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10) + 1).tolist()
    if len(ends) != len(present):
        raise MappingError(f"{path.name}: a snapshot value contains a line break")
    return present, text, ends
