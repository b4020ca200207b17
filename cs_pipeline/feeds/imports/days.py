"""The day files of an import: each query's rows sorted by day and file order as CSV pieces (ranges of days,
written side by side by DuckDB connections of their own), split into the landing files by byte range.
``write.run_import`` builds the queries; this module runs and splits them.
"""

from __future__ import annotations

import mmap
import os
import shutil
from bisect import bisect_right
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np

from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.feeds.imports.read import quote
from cs_pipeline.feeds.imports.spec import ImportReport, MappingError
from cs_pipeline.feeds.imports.transform import Params
from cs_pipeline.ingest.sources import sources

#: An event part's rows are sorted and written in ranges of days of about this many rows (``DayRuns``).
RANGE_ROWS = 500_000
#: Pieces (day ranges) and day files written side by side, each piece by its own DuckDB connection.
PIECE_WORKERS = 2

Piece = tuple[Path, dict[date, int], dict[date, tuple[int, int]] | None]


class DayRuns:
    """One query's rows (landing columns, then ``_day`` and ``_rn``) as CSV files sorted by day and file
    order, read back day by day: ``counts`` holds the rows per day once ``finish`` ran. With ``by_range`` the
    rows are sorted and written per range of days holding about ``RANGE_ROWS`` rows (``ranges``), so that no
    sort outgrows the buffer pool and spills; ``ranges`` given (a query grouping rows by day, e.g. the logins):
    each range is grouped into a temporary table, counted and written from it; ``ordered`` given (the query
    in day and file order, ``PartSql.query(ordered=True)``): each range is filtered from it, not sorted
    again. ``jobs`` are the ranges to
    write (``write_pieces`` runs them). A value with a line break (a quoted multi-line field) cannot be split
    by lines: then DuckDB writes one file per day instead."""

    def __init__(self, con: duckdb.DuckDBPyConnection, query: str, params: Params, path: Path, target: str,
                 by_range: bool = False, ranges: list[tuple[date, date]] | None = None, ordered: str | None = None) -> None:
        self.query, self.params, self.target, self.ordered = query, params, target, ordered
        self.landing = ", ".join(quote(c) for c in sources()[target].column_names)
        self.path, self.parts, self.handle = path, None, None
        self.pieces: list[tuple[Path, dict[date, tuple[int, int]]]] = []
        self.counts: dict[date, int] = {}
        self.grouped = ranges is not None
        if ranges is None:
            self.counts = {day: int(n) for day, n in run(con,
                f"SELECT _day, count(*) FROM ({query}) WHERE _day IS NOT NULL GROUP BY _day", params).fetchall()}
            ranges = day_ranges(self.counts, RANGE_ROWS if by_range else None)
        self.ranges = ranges
        self.jobs = list(range(len(ranges)))
        self.day_piece: dict[date, int] = {}

    def write_piece(self, con: duckdb.DuckDBPyConnection, n: int) -> Piece:
        """Sort and write the range ``n`` with a connection of its own; its path, rows per day, byte ranges.

        Raises:
            MappingError: DuckDB failed on the range (e.g. a value it cannot convert); the message names the
                landing source and the days.
            OSError: the piece could not be written or read back."""
        try:
            return self._write_piece(con, n)
        except duckdb.Error as exc:
            low, high = self.ranges[n]
            raise MappingError(f"{self.target}: writing the rows of {low}..{high} failed: {exc}") from exc

    def _write_piece(self, con: duckdb.DuckDBPyConnection, n: int) -> Piece:
        low, high = self.ranges[n]
        within = Params(dict(self.params.values))
        inside = f"_day >= {within(low, 'DATE')} AND _day <= {within(high, 'DATE')}"
        piece = self.path.with_name(f"{self.path.name}.{n}")
        counts = {day: k for day, k in self.counts.items() if low <= day <= high}
        with con.cursor() as cur:
            if self.grouped:
                run(cur, f"CREATE TEMP TABLE day_range AS SELECT * FROM ({self.query}) WHERE {inside}", within)
                counts = {day: int(k) for day, k in cur.execute("SELECT _day, count(*) FROM day_range GROUP BY _day").fetchall()}
                cur.execute(f"COPY (SELECT {self.landing} FROM day_range ORDER BY _day, _rn) TO '{path_literal(piece)}' "
                            "(FORMAT csv, HEADER false)")
                cur.execute("DROP TABLE day_range")
            elif self.ordered:  # rows already in day and file order: the range only filters and projects them
                run(cur, f"COPY (SELECT {self.landing} FROM ({self.ordered}) WHERE {inside}) TO '{path_literal(piece)}' "
                         "(FORMAT csv, HEADER false)", within)
            else:
                run(cur, f"COPY (SELECT {self.landing} FROM ({self.query}) WHERE {inside} ORDER BY _day, _rn) "
                         f"TO '{path_literal(piece)}' (FORMAT csv, HEADER false)", within)
        return piece, counts, line_ends(piece, sorted(counts), counts)

    def finish(self, con: duckdb.DuckDBPyConnection, done: list[Piece], report: ImportReport) -> None:
        """Take the written pieces (in range order); count the rows into ``report``."""
        for piece, counts, ends in done:
            self.counts.update(counts)
            self.pieces.append((piece, ends or {}))
        report.rows[self.target] += sum(self.counts.values())
        if not all(ends is not None for _, _, ends in done):
            run(con, f"COPY (SELECT {self.landing}, _day FROM ({self.query}) WHERE _day IS NOT NULL) TO "
                     f"'{path_literal(self.path.with_suffix('.d'))}' (FORMAT csv, HEADER false, PARTITION_BY (_day))",
                     self.params)
            self.parts = {date.fromisoformat(folder.name.split("=", 1)[1]): sorted(folder.glob("*.csv"))
                          for folder in self.path.with_suffix(".d").glob("_day=*")}
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


def write_pieces(con: duckdb.DuckDBPyConnection, runs: list[DayRuns], report: ImportReport,
                 beside: list[Callable[[], Any]]) -> list[Any]:
    """Write every piece of ``runs``, ``PIECE_WORKERS`` at a time, each on one DuckDB thread (one thread per
    sort costs less CPU than two merging each; the connection's thread count is restored after), the
    ``beside`` jobs (e.g. day files that need no piece) in the same pool; then ``finish`` each run. Returns
    the results of ``beside``."""
    jobs = [(r, n) for r in runs for n in r.jobs]
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    if len(jobs) > 1 and PIECE_WORKERS > 1:
        con.execute("SET threads = 1")
    try:
        with ThreadPoolExecutor(max_workers=PIECE_WORKERS) as pool:
            extra = [pool.submit(job) for job in beside]
            written = [pool.submit(r.write_piece, con, n) for r, n in jobs]
            try:
                pieces = [w.result() for w in written]
                results = [e.result() for e in extra]
            except BaseException:  # the first failure (or Ctrl-C) stops the queued pieces, not only the caller
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        con.execute(f"SET threads = {int(threads)}")
    for r in runs:
        r.finish(con, [p for (owner, _), p in zip(jobs, pieces) if owner is r], report)
    return results


def write_days(out_dir: Path, target: str, days: list[date], runs: list[DayRuns],
               static: list[tuple[list[date], bytes, list[int]]]) -> tuple[str, int, int]:
    """Write the day files of ``target``: per day the header, the day's rows of each run, then the prefix
    of each static snapshot present by that day. Returns (target, files, static rows written)."""
    header = ",".join(_csv_field(c) for c in sources()[target].column_names) + "\n"
    files = rows = 0
    try:
        for day in days:
            counts = [bisect_right(present, day) for present, _, _ in static]
            prefixes = [memoryview(text)[:ends[n - 1] if n else 0] for n, (_, text, ends) in zip(counts, static)]
            with open(out_dir / landing_file_name(target, day), "wb") as out:
                out.write(header.encode("utf-8"))
                for r in runs:
                    r.copy_day(day, out)
                for prefix in prefixes:
                    out.write(prefix)
            files += 1
            rows += sum(counts)
    finally:
        for r in runs:
            r.close()
    return target, files, rows


def day_ranges(counts: dict[date, int], rows: int | None) -> list[tuple[date, date]]:
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


def line_ends(path: Path, days: list[date], counts: dict[date, int]) -> dict[date, tuple[int, int]] | None:
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


def _csv_field(name: str) -> str:
    return f'"{name}"' if any(ch in name for ch in ',"\n') else name


def run(con: duckdb.DuckDBPyConnection, query: str, params: Params) -> duckdb.DuckDBPyConnection:
    return con.execute(query, params.of(query))


def path_literal(path: Path) -> str:
    return str(path).replace("'", "''")
