"""Writing an import's landing files: event sources split by day and appended chunk by chunk, snapshot
sources written whole for every day, header-only files for the days a source has no rows. ``run_import``
drives reading (``read``), mapping (``transform``) and writing for a whole mapping.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from cs_pipeline.feeds.imports.read import CHUNK_ROWS, read_whole, table_chunks
from cs_pipeline.feeds.imports.spec import ImportMapping, ImportReport, MappingError
from cs_pipeline.feeds.imports.transform import (
    RowIds,
    SeenSet,
    aggregate,
    login_rows,
    part_frame,
    row_hashes,
    snapshot_status,
)
from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources


class _DayFiles:
    """Landing files appended to chunk by chunk: the first write of a file in this import replaces it."""

    def __init__(self, out_dir: Path, report: ImportReport) -> None:
        self.out_dir, self.report = out_dir, report
        self.started: set[tuple[str, date]] = set()

    def append(self, target: str, day: date, rows: pd.DataFrame) -> None:
        columns = list(sources()[target].column_names)
        first = (target, day) not in self.started
        if first:
            self.started.add((target, day))
            self.report.files += 1
        rows.to_csv(self.out_dir / landing_file_name(target, day), index=False, columns=columns,
                    mode="w" if first else "a", header=first)
        self.report.rows[target] += len(rows)

    def write_lines(self, target: str, day: date, pieces: list) -> None:
        """Write a whole day file from pre-rendered CSV lines (lists of lines, one list per part)."""
        columns = list(sources()[target].column_names)
        self.started.add((target, day))
        self.report.files += 1
        with open(self.out_dir / landing_file_name(target, day), "w", encoding="utf-8", newline="") as fh:
            fh.write(pd.DataFrame(columns=columns).to_csv(index=False, lineterminator="\n"))
            for lines in pieces:
                if lines:
                    fh.write("\n".join(lines) + "\n")
                self.report.rows[target] += len(lines)


class _SnapshotLines:
    """A snapshot part without a status rule, rendered as CSV once: sorted by ``_present_from`` (rows
    without one first), so a day's rows are a prefix of the lines (a snapshot over 540 days is written
    without rendering 540 frames)."""

    def __init__(self, frame: pd.DataFrame, columns: list[str]) -> None:
        frame = frame.sort_values("_present_from", na_position="first", kind="stable")
        self.frame, self.columns = frame, columns
        self.present = frame["_present_from"].to_numpy()
        text = frame[columns].to_csv(index=False, header=False, lineterminator="\n")
        lines = text.split("\n")[:-1] if text else []
        self.lines = lines if len(lines) == len(frame) else None  # a value with a line break: no fast path

    def count_until(self, day: date) -> int:
        present = self.frame["_present_from"]
        return int((present.isna() | (present <= pd.Timestamp(day))).sum())

    def until(self, day: date) -> list[str]:
        return (self.lines or [])[:self.count_until(day)]

    def frame_until(self, day: date) -> pd.DataFrame:
        return self.frame.iloc[:self.count_until(day)][self.columns]


def run_import(mapping: ImportMapping, source_dir: Path, out_dir: Path, chunk_rows: int = CHUNK_ROWS) -> ImportReport:
    """Write the landing files of ``mapping`` for every day in [start, end] into ``out_dir``.

    Event sources stream their table in chunks of ``chunk_rows`` rows: each chunk is mapped, rows whose
    day is outside [start, end] are dropped, and the rest are appended to the day's landing file, so
    peak memory follows the chunk size (joined and status tables are read whole). Parts with
    ``group_by`` keep one partial aggregate per group. Without ``start``/``end`` in the mapping, the
    days are those of the event data. Snapshot sources are written whole for every day.

    Raises:
        MappingError: a table file is missing or unreadable, or a mapped column is absent.
    """
    report = ImportReport()
    out_dir.mkdir(parents=True, exist_ok=True)
    streamed = {p.from_ for name, parts in mapping.sources.items() if name not in mapping.snapshot_sources
                for p in parts}
    whole = {j.table for parts in mapping.sources.values() for p in parts for j in p.joins}
    whole |= {p.status.churn_table for parts in mapping.sources.values() for p in parts if p.status}
    snapshot_from = {p.from_ for name, parts in mapping.sources.items() if name in mapping.snapshot_sources
                     for p in parts}
    for name, spec in mapping.tables.items():
        if not (source_dir / spec.file).is_file():
            raise MappingError(f"{mapping.name}: table {name}: {source_dir / spec.file} not found")
    tables = {name: read_whole(mapping.tables[name], source_dir) for name in sorted(whole | (snapshot_from - streamed))}
    files = _DayFiles(out_dir, report)
    seen_days: list[date] = []
    # 1. Event sources, streamed.
    for target in SOURCE_NAMES:
        if target in mapping.snapshot_sources:
            continue
        for i, part in enumerate(mapping.sources.get(target, [])):
            where = f"sources.{target}.{i}"
            ids = RowIds() if any(c.row_id for c in part.columns.values()) else None
            partials, logged_in = [], SeenSet()  # (supplier, day) pairs with a login written
            for chunk in table_chunks(part.from_, mapping, source_dir, tables):
                rows = part_frame(part, chunk, tables, target, report, where, ids.assign(chunk) if ids else None,
                                   days=(mapping.start, mapping.end))
                if part.group_by:
                    partials.append(aggregate(rows, part))
                    if sum(len(p) for p in partials) > chunk_rows:
                        partials = [aggregate(pd.concat(partials, ignore_index=True), part, combine=True)]
                    continue
                _write_days(files, target, rows, seen_days)
                if part.login_per_active_day and len(rows):
                    _write_logins(files, rows, logged_in, seen_days)
            if part.group_by and partials:
                rows = aggregate(pd.concat(partials, ignore_index=True), part, combine=True)
                _write_days(files, target, rows, seen_days)
                if part.login_per_active_day and len(rows):
                    _write_logins(files, rows, logged_in, seen_days)
    first = mapping.start or (min(seen_days) if seen_days else None)
    last = mapping.end or (max(seen_days) if seen_days else None)
    if first is None or last is None:
        raise MappingError(f"{mapping.name}: no event day in the data; give start and end in the mapping")
    report.first_day, report.last_day = first, last
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    # 2. Snapshot sources, whole for every day.
    for target in mapping.snapshot_sources:
        parts = mapping.sources.get(target, [])
        frames = []
        for i, part in enumerate(parts):
            where = f"sources.{target}.{i}"
            ids = RowIds() if any(c.row_id for c in part.columns.values()) else None
            pieces = []
            for chunk in table_chunks(part.from_, mapping, source_dir, tables):
                rows = part_frame(part, chunk, tables, target, report, where, ids.assign(chunk) if ids else None)
                pieces.append(aggregate(rows, part) if part.group_by else rows)
            frame = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
            if part.group_by and len(frame):
                frame = aggregate(frame, part, combine=True)
            frames.append((frame, part))
        columns = list(sources()[target].column_names)
        static = [_SnapshotLines(frame, columns) for frame, part in frames if part.status is None and not frame.empty]
        dynamic = [(frame, part) for frame, part in frames if part.status is not None and not frame.empty]
        for day in days:
            pieces = []
            for frame, part in dynamic:
                rows = frame.loc[frame["_present_from"].isna() | (frame["_present_from"] <= pd.Timestamp(day))].copy()
                if len(rows):
                    status, cancelled_at = snapshot_status(rows, tables[part.status.churn_table], part.status, day)
                    rows["status"], rows["cancelled_at"] = status, cancelled_at
                pieces.append(rows[columns])
            if static and not dynamic and all(lines.lines is not None for lines in static):
                files.write_lines(target, day, [lines.until(day) for lines in static])
                continue
            for lines in static:
                pieces.append(lines.frame_until(day))
            files.append(target, day, pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=columns))
    # 3. Header-only files for the days a source has no rows.
    for target in SOURCE_NAMES:
        if not mapping.sources.get(target):
            report.notes.append(f"{target}: no mapping; header-only files written")
        for day in days:
            if (target, day) not in files.started:
                files.append(target, day, pd.DataFrame(columns=list(sources()[target].column_names)))
    if mapping.start is None or mapping.end is None:
        report.notes.append(f"days from the data: {first}..{last}")
    return report


def _write_logins(files: _DayFiles, rows: pd.DataFrame, logged_in: SeenSet, seen_days: list[date]) -> None:
    """Append the logins of ``rows`` (``login_rows``) for the (supplier, day) pairs without one yet."""
    logins = login_rows(rows)
    pairs = row_hashes(logins[["supplier_id", "_day"]])
    new = ~logged_in.contains(pairs)
    logged_in.add(pairs[new])
    columns = [*sources()["activity_events"].column_names, "_day"]
    _write_days(files, "activity_events", logins.loc[new].reindex(columns=columns), seen_days)


def _write_days(files: _DayFiles, target: str, rows: pd.DataFrame, seen_days: list[date]) -> None:
    if rows.empty:
        return
    columns = list(sources()[target].column_names)
    for stamp, group in rows.groupby("_day", sort=True):
        day = pd.Timestamp(stamp).date()
        files.append(target, day, group[columns])
        seen_days.append(day)
