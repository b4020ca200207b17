"""Writing an import's landing files: ``run_import`` loads the mapping's tables into DuckDB (``read``),
runs each part's SQL (``transform``) and has DuckDB write each query's rows as one CSV sorted by day,
which is then split into the day files the landing contract names. Snapshot sources without a status rule
are rendered once and written as a prefix per day; days a source has no rows get header-only files.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import tempfile
from bisect import bisect_right
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import date, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np

from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.feeds.imports.read import CHUNK_ROWS, connect, load_table, quote
from cs_pipeline.feeds.imports.spec import ImportMapping, ImportReport, MappingError, Part
from cs_pipeline.feeds.imports.transform import PartSql, Params, logins_sql, part_sql, status_sql
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources


#: A formatted column with at most this share of distinct values, or at most ``DISTINCT_MIN``, is formatted
#: once per value and joined (``_distinct_values``); more, and it is formatted row by row.
DISTINCT_SHARE = 0.05
DISTINCT_MIN = 1000
#: An event part's rows are sorted and written in ranges of days of about this many rows (``_DayRuns``).
RANGE_ROWS = 500_000
#: Pieces (day ranges) written side by side, each by its own DuckDB connection (``_DayRuns``).
PIECE_WORKERS = 2


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
        # 1. Event sources: every part (and its logins) sorted by day, in ranges of days (``_DayRuns``).
        written: dict[str, list[_DayRuns]] = {}
        for target in SOURCE_NAMES:
            if target in mapping.snapshot_sources or not mapping.sources.get(target):
                continue
            written[target] = []
            for i, part in enumerate(mapping.sources[target]):
                sql = _part(part, target, f"sources.{target}.{i}", columns, (mapping.start, mapping.end), day_columns, distinct)
                _count(con, sql, report, counted)
                landing = ", ".join(quote(c) for c in sources()[target].column_names)
                run = _DayRuns(con, sql.query(f"SELECT {landing}, _day, _rn FROM {sql.final}"), sql.params,
                               work / f"{target}_{i}", report, target, by_range=not part.group_by)
                written[target].append(run)
                if part.login_per_active_day:  # grouped per day range of the part's rows, as the part is written
                    written[target].append(_DayRuns(con, sql.query(logins_sql(sql.final)), sql.params,
                                                    work / f"{target}_{i}_logins", report, target, ranges=run.ranges))
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
            written[target] = [_DayRuns(con, query, params, work / f"{target}_{n}", report, target)
                               for n, (query, params) in enumerate(queries)]
        # 3. Name the files per day: a day's pieces, the snapshot prefixes, or only the header.
        for target in SOURCE_NAMES:
            if not mapping.sources.get(target):
                report.notes.append(f"{target}: no mapping; header-only files written")
            header = ",".join(_csv_field(c) for c in sources()[target].column_names) + "\n"
            pieces = static.get(target, [])
            for day in days:
                counts = [bisect_right(present, day) for present, _, _ in pieces]
                prefixes = [memoryview(text)[:ends[n - 1] if n else 0] for n, (_, text, ends) in zip(counts, pieces)]
                _write_day(out_dir / landing_file_name(target, day), header, written.get(target, []), day, prefixes)
                report.files += 1
                report.rows[target] += sum(counts)
        for runs in written.values():
            for run in runs:
                run.close()
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


class _DayRuns:
    """One query's rows (landing columns, then ``_day`` and ``_rn``) as CSV files sorted by day and file
    order, read back day by day: ``counts`` holds the rows per day. With ``by_range`` the rows are sorted and
    written per range of days holding about ``RANGE_ROWS`` rows (``ranges``), so that no sort outgrows the
    buffer pool and spills; ``ranges`` given (a query grouping rows by day, e.g. the logins): each range is
    grouped into a temporary table, counted and written from it. A value with a line break (a quoted
    multi-line field) cannot be split by lines: then DuckDB writes one file per day instead."""

    def __init__(self, con: duckdb.DuckDBPyConnection, query: str, params: Params, path: Path,
                 report: ImportReport, target: str, by_range: bool = False,
                 ranges: list[tuple[date, date]] | None = None) -> None:
        landing = ", ".join(quote(c) for c in sources()[target].column_names)
        self.path, self.parts, self.handle, self.pieces = path, None, None, []
        self.counts: dict[date, int] = {}
        grouped = ranges is not None
        if ranges is None:
            self.counts = {day: int(n) for day, n in _run(con,
                f"SELECT _day, count(*) FROM ({query}) WHERE _day IS NOT NULL GROUP BY _day", params).fetchall()}
            ranges = _day_ranges(self.counts, RANGE_ROWS if by_range else None)
        self.ranges = ranges
        totals = dict(self.counts)

        def write_piece(n: int, low: date, high: date) -> tuple[Path, dict[date, int], dict[date, tuple[int, int]] | None]:
            within = Params(dict(params.values))
            rows = f"SELECT * FROM ({query}) WHERE _day >= {within(low, 'DATE')} AND _day <= {within(high, 'DATE')}"
            piece = path.with_name(f"{path.name}.{n}")
            with con.cursor() as cur:  # a connection of its own: pieces are written side by side
                if grouped:
                    _run(cur, f"CREATE TEMP TABLE day_range AS {rows}", within)
                    counts = {day: int(k) for day, k in cur.execute("SELECT _day, count(*) FROM day_range GROUP BY _day").fetchall()}
                    cur.execute(f"COPY (SELECT {landing} FROM day_range ORDER BY _day, _rn) TO '{_path_literal(piece)}' "
                                "(FORMAT csv, HEADER false)")
                    cur.execute("DROP TABLE day_range")
                else:
                    counts = {day: k for day, k in totals.items() if low <= day <= high}
                    _run(cur, f"COPY (SELECT {landing} FROM ({rows}) ORDER BY _day, _rn) TO '{_path_literal(piece)}' "
                              "(FORMAT csv, HEADER false)", within)
            return piece, counts, _line_ends(piece, sorted(counts), counts)

        side_by_side = len(ranges) > 1 and PIECE_WORKERS > 1
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        if side_by_side:  # one DuckDB thread per piece: less CPU than two threads on every piece (no merging)
            con.execute("SET threads = 1")
        try:
            with ThreadPoolExecutor(max_workers=PIECE_WORKERS if side_by_side else 1) as pool:
                done = list(pool.map(write_piece, range(len(ranges)), [r[0] for r in ranges], [r[1] for r in ranges]))
        finally:
            con.execute(f"SET threads = {int(threads)}")
        for piece, counts, ends in done:
            self.counts.update(counts)
            self.pieces.append((piece, ends or {}))
        lines_whole = all(ends is not None for _, _, ends in done)
        report.rows[target] += sum(self.counts.values())
        if not lines_whole:
            _run(con, f"COPY (SELECT {landing}, _day FROM ({query}) WHERE _day IS NOT NULL) TO "
                        f"'{_path_literal(path.with_suffix('.d'))}' (FORMAT csv, HEADER false, PARTITION_BY (_day))",
                        params)
            self.parts = {date.fromisoformat(folder.name.split("=", 1)[1]): sorted(folder.glob("*.csv"))
                          for folder in path.with_suffix(".d").glob("_day=*")}
        self.day_piece = {day: n for n, (_, ends) in enumerate(self.pieces) for day in ends}

    def copy_day(self, day: date, out: BinaryIO) -> None:
        """Append the rows of ``day`` to ``out`` (days are asked for in ascending order); the bytes are
        copied by the kernel (``os.sendfile``), not read into Python."""
        if self.parts is not None:
            for piece in self.parts.get(day, []):
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        elif day in self.day_piece:
            n = self.day_piece[day]
            if self.handle is None or self.handle.name != str(self.pieces[n][0]):
                self.close()
                self.handle = open(self.pieces[n][0], "rb")  # noqa: SIM115 (closed by close())
            start, end = self.pieces[n][1][day]
            out.flush()
            while start < end:
                sent = os.sendfile(out.fileno(), self.handle.fileno(), start, end - start)
                if sent == 0:  # the file is shorter than its scanned ranges: changed while importing
                    raise OSError(f"{self.handle.name} ended at byte {start}, before the rows of {day} (changed "
                                  f"during the import?): import again")
                start += sent

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _day_ranges(counts: dict[date, int], rows: int | None) -> list[tuple[date, date]]:
    """Consecutive (first, last) ranges of the days in ``counts``, each closed once it holds at least ``rows``
    rows (None: one range of every day)."""
    ranges: list[tuple[date, date]] = []
    start, held = None, 0
    for day in sorted(counts):
        start, held = start or day, held + counts[day]
        if rows is not None and held >= rows:
            ranges.append((start, day))
            start, held = None, 0
    if start is not None:
        ranges.append((start, max(counts)))
    return ranges


def _line_ends(path: Path, days: list[date], counts: dict[date, int]) -> dict[date, tuple[int, int]] | None:
    """Byte ranges (start, end) of each day's lines in ``path`` (its lines sorted by day, ``counts`` per day),
    found by scanning the mapped file for newlines in 16 MB blocks (mapped, not read: no copy into Python);
    None when the file has another number of lines than the counts add up to (a value with a line break)."""
    bounds = np.cumsum([counts[d] for d in days])  # the line count at the end of each day
    ends: list[int] = []
    seen = 0
    size = path.stat().st_size
    with open(path, "rb") as fh, (mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else nullcontext(b"")) as data:
        text = np.frombuffer(data, dtype=np.uint8)
        for offset in range(0, size, 1 << 24):
            newlines = np.flatnonzero(text[offset:offset + (1 << 24)] == 10)
            wanted = bounds[(bounds > seen) & (bounds <= seen + len(newlines))]
            ends += (offset + newlines[wanted - seen - 1] + 1).tolist()
            seen += len(newlines)
        del text  # the map closes only once no array points into it
    if seen != (int(bounds[-1]) if len(bounds) else 0):
        return None
    return {day: (ends[i - 1] if i else 0, ends[i]) for i, day in enumerate(days)}


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


def _write_day(path: Path, header: str, runs: list[_DayRuns], day: date, prefixes: list[memoryview]) -> None:
    with open(path, "wb") as out:
        out.write(header.encode("utf-8"))
        for run in runs:
            run.copy_day(day, out)
        for prefix in prefixes:
            out.write(prefix)


def _csv_field(name: str) -> str:
    return f'"{name}"' if any(ch in name for ch in ',"\n') else name


def _run(con: duckdb.DuckDBPyConnection, query: str, params: Params) -> duckdb.DuckDBPyConnection:
    return con.execute(query, params.of(query))


def _path_literal(path: Path) -> str:
    return str(path).replace("'", "''")
