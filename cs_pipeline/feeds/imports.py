"""Importing a team's own data: an import mapping (YAML, validated) turns external tables (CSV) into
the four landing sources, one file per source per day, ready for the daily pipeline.

A mapping names the external tables, the days to write, and for each landing source one or more
*parts*: the table rows come from, joins that bring columns from other tables (first match, or the
latest by a column), an optional row filter, and per landing column a source column, a constant, a
value map (with a default, or unmapped values are reported and the record dropped), a timestamp format
and time of day. Event sources are split by the day of ``day_from``; snapshot sources (suppliers) are
written whole for every day, with rows present from ``present_from`` and a status derived from a churn
table. ``login_per_active_day`` adds one login per supplier and active day (for products whose export
has usage but no sessions). What did not map is counted in the returned report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cs_pipeline.core.config import load_yaml_model
from cs_pipeline.ingest.landing import landing_file_name
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources


class MappingError(ValueError):
    """The mapping file or the data it points at is invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Delimiter = Literal[",", "\t", ";", "|", "whitespace"]
AGGREGATES = ("min", "max", "first", "last", "count", "sum")


class TableSpec(_Strict):
    """One external table. ``format`` defaults from the extension (``.csv``/``.tsv``/``.txt`` -> csv,
    ``.jsonl``/``.ndjson`` -> jsonl, ``.parquet``); a ``.gz`` file is decompressed (csv, jsonl).
    ``delimiter`` ``whitespace`` splits on runs of spaces and tabs. Without a header, ``columns`` names
    the fields in order; ``skip_rows`` lines are skipped before the header or the first row."""

    file: str
    format: Literal["csv", "jsonl", "parquet"] | None = None
    delimiter: Delimiter = ","
    header: bool = True
    columns: list[str] | None = None
    encoding: str = "utf-8"
    skip_rows: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _named(self) -> TableSpec:
        if not self.header and not self.columns and self.resolved_format == "csv":
            raise ValueError("header: false needs columns: [names]")
        return self

    @property
    def resolved_format(self) -> str:
        """csv, jsonl or parquet (given, or from the file extension)."""
        if self.format:
            return self.format
        name = self.file.lower().removesuffix(".gz")
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return "jsonl"
        if name.endswith((".parquet", ".pq")):
            return "parquet"
        return "csv"


class Join(_Strict):
    table: str
    key: str  # the column both tables share
    columns: list[str] = Field(min_length=1)
    latest_by: str | None = None  # several matches: keep the row with the greatest value of this column
    earliest_by: str | None = None  # several matches: keep the row with the smallest value of this column

    @model_validator(mode="after")
    def _one_order(self) -> Join:
        if self.latest_by and self.earliest_by:
            raise ValueError("give latest_by or earliest_by, not both")
        return self


class ColumnMap(_Strict):
    column: str | None = None
    constant: Any = None
    value_map: dict[str, str | None] | None = None
    default: str | None = None
    format: str | None = None  # strptime format of a date/time column
    time: str = "00:00:00"  # time of day for date-only values (UTC)
    json_of: list[str] | None = None  # build a JSON object from these columns
    row_id: bool = False  # a stable id: hash of the source row plus its occurrence number
    aggregate: Literal["min", "max", "first", "last", "count", "sum"] | None = None  # with the part's group_by

    @model_validator(mode="after")
    def _one_source(self) -> ColumnMap:
        given = [self.column is not None, self.constant is not None, self.json_of is not None, self.row_id]
        if sum(given) > 1:
            raise ValueError("give one of column, constant, json_of or row_id")
        return self


class StatusRule(_Strict):
    """Supplier status per snapshot day: cancelled from the latest churn date on or before the day
    (until a later reactivation), trialing where ``trial_column`` is true, otherwise active."""

    churn_table: str
    key: str
    churn_date: str
    reactivation_column: str | None = None
    trial_column: str | None = None


class Part(_Strict):
    from_: str = Field(alias="from")
    joins: list[Join] = Field(default_factory=list)
    where: dict[str, list[str]] | None = None
    day_from: str | None = None  # event sources: the column whose date is the landing day
    present_from: str | None = None  # snapshot sources: rows appear from this date
    status: StatusRule | None = None
    login_per_active_day: bool = False
    group_by: list[str] | None = None  # derive: one row per group, columns combined by their aggregate
    columns: dict[str, ColumnMap]

    @model_validator(mode="after")
    def _aggregates(self) -> Part:
        if not self.group_by and any(c.aggregate for c in self.columns.values()):
            raise ValueError("aggregate needs group_by in the part")
        return self


class ImportMapping(_Strict):
    name: str
    description: str = ""
    tables: dict[str, TableSpec]
    start: date | None = None  # default: the earliest event day in the data
    end: date | None = None  # default: the latest event day in the data
    snapshot_sources: list[str] = Field(default_factory=lambda: ["suppliers"])
    #: The product's own feature catalogue (CSV, the columns of dbt_project/seeds/feature_catalogue.csv),
    #: relative to the mapping file; the import records it in CS_PIPELINE_HOME for later runs.
    catalogue: str | None = None
    sources: dict[Literal["suppliers", "activity_events", "support_tickets", "billing_events"], list[Part]]

    @model_validator(mode="after")
    def _consistent(self) -> ImportMapping:
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        for name, parts in self.sources.items():
            known = set(sources()[name].column_names)
            for i, part in enumerate(parts):
                for table in [part.from_, *(j.table for j in part.joins)]:
                    if table not in self.tables:
                        raise ValueError(f"sources.{name}.{i}: unknown table {table!r}")
                unknown = set(part.columns) - known
                if unknown:
                    raise ValueError(f"sources.{name}.{i}: unknown landing column(s) {sorted(unknown)}")
        return self


def load_mapping(path: Path) -> ImportMapping:
    """Load and validate an import mapping.

    Raises:
        MappingError: missing file, invalid YAML or fields (the message names file and field).
    """
    return load_yaml_model(path, ImportMapping, MappingError, "mapping")


def check_event_names(mapping: ImportMapping, catalogue: tuple[str, ...], catalogue_path: Path) -> None:
    """Check the event names the mapping itself writes (constants, value maps and their defaults of
    ``activity_events.event_name``, and ``login`` for ``login_per_active_day``) against the catalogue in
    force, before any file is read. Names taken from a data column are checked by ingestion, which
    rejects a record whose event is not in the catalogue (``invalid_enum``).

    Raises:
        MappingError: a name is not in the catalogue (names the mapping, the events and the catalogue file).
    """
    unknown: dict[str, str] = {}
    known = set(catalogue)
    for i, part in enumerate(mapping.sources.get("activity_events", [])):
        where = f"sources.activity_events.{i}"
        spec = part.columns.get("event_name")
        names = []
        if spec is not None:
            if spec.constant is not None:
                names.append(str(spec.constant))
            names += [v for v in (spec.value_map or {}).values() if v is not None]
            if spec.default is not None:
                names.append(spec.default)
        if part.login_per_active_day:
            names.append("login")
        for name in names:
            if name not in known:
                unknown.setdefault(name, where)
    if unknown:
        listed = ", ".join(f"{name!r} ({where})" for name, where in unknown.items())
        raise MappingError(f"{mapping.name}: event name(s) {listed} not in the feature catalogue {catalogue_path}; "
                           f"add them to the catalogue (login_per_active_day needs a 'login' row) or map to its events")


@dataclass
class ImportReport:
    """What an import wrote and what did not map.

    Attributes:
        files: landing files written. rows: rows written per landing source. unmapped: per mapped column,
            the values with no mapping and their counts. dropped: records dropped, per reason.
        first_day, last_day: the days written (the mapping's, or the data's when the mapping has none).
    """

    files: int = 0
    rows: Counter = field(default_factory=Counter)
    unmapped: dict[str, Counter] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    first_day: date | None = None
    last_day: date | None = None


#: Rows per chunk when streaming a table: peak memory follows this, not the file size.
CHUNK_ROWS = 100_000


def read_table(spec: TableSpec, source_dir: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Stream the table ``spec`` in chunks of at most ``chunk_rows`` rows.

    Every column is a pandas ``str`` column (Arrow-backed strings, missing values NA; blanks are
    missing), so a value reads the same whatever the format; ``.gz`` is decompressed by extension.

    Raises:
        MappingError: the file is missing or cannot be parsed (the message names the file).
    """
    path = source_dir / spec.file
    if not path.is_file():
        raise MappingError(f"table file {path} not found")
    fmt = spec.resolved_format
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _as_strings(batch.to_pandas())
        elif fmt == "jsonl":
            reader = pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows, encoding=spec.encoding,
                                  compression="infer")
            with reader:
                for chunk in reader:
                    yield _as_strings(chunk)
        else:
            sep = r"\s+" if spec.delimiter == "whitespace" else spec.delimiter
            options: dict[str, Any] = {"sep": sep, "dtype": str, "keep_default_na": False, "na_values": [""],
                                       "encoding": spec.encoding, "skiprows": spec.skip_rows,
                                       "compression": "infer", "chunksize": chunk_rows}
            if spec.header:
                options["header"] = 0
            else:
                options.update(header=None, names=spec.columns, index_col=False)
            with pd.read_csv(path, **options) as reader:
                for chunk in reader:
                    if spec.header and spec.columns:
                        chunk.columns = spec.columns
                    yield chunk
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"{path.name}: cannot read as {fmt}: {exc}") from exc


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        text = values.astype(str).where(values.notna())
        out[str(column)] = text.astype(str).where(values.notna()).replace({"": None})
    return out.astype(str).where(out.notna())


def _read_whole(spec: TableSpec, source_dir: Path) -> pd.DataFrame:
    chunks = list(read_table(spec, source_dir))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


class _SeenSet:
    """The 64-bit hashes seen so far: one sorted numpy array, 8 bytes per distinct hash (not a Python set),
    grown by a linear merge (``np.insert`` at ``searchsorted`` positions), so adding a chunk costs one copy of
    the array, not a concatenation, an argsort and a gather."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` were added before."""
        if not len(self.keys):
            return np.zeros(len(hashes), dtype=bool)
        pos = np.searchsorted(self.keys, hashes).clip(max=len(self.keys) - 1)
        return self.keys[pos] == hashes

    def add(self, hashes: np.ndarray) -> None:
        """Add ``hashes`` (any order, repeats allowed)."""
        new = np.unique(hashes)
        new = new[~self.contains(new)]
        if len(new):
            self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)


class _SeenCounts:
    """How often each 64-bit hash was seen so far: a ``_SeenSet`` of the hashes seen at least once, and a
    dict of the extra occurrences of the few seen more than once (repeated rows are rare), so millions of
    rows cost 8 bytes each."""

    def __init__(self) -> None:
        self.seen = _SeenSet()
        self.repeats: dict[int, int] = {}  # hash -> occurrences beyond the first

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Occurrences so far of each of ``hashes`` (0 for a new one)."""
        counts = self.seen.contains(hashes).astype(np.int64)
        if self.repeats:
            found = np.flatnonzero(counts)
            counts[found] += np.fromiter((self.repeats.get(int(h), 0) for h in hashes[found]), np.int64, len(found))
        return counts

    def add(self, hashes: np.ndarray) -> None:
        unique, counts = np.unique(hashes, return_counts=True)
        total = self.lookup(unique) + counts
        for h, n in zip(unique[total > 1].tolist(), total[total > 1].tolist()):
            self.repeats[h] = n - 1
        self.seen.add(unique)


def _hashes(frame: pd.DataFrame) -> np.ndarray:
    """A stable 64-bit hash per row (pandas' ``hash_pandas_object`` with its fixed key)."""
    return pd.util.hash_pandas_object(frame.astype(object).where(frame.notna(), None), index=False).to_numpy()


class _RowIds:
    """Stable row ids for one table: ``<16 hex digits of the row's hash>-<occurrence number>``, the
    hash over every source column, the occurrence counting identical rows in file order from 1, so
    re-importing the same file gives the same ids."""

    def __init__(self) -> None:
        self.seen = _SeenCounts()

    def assign(self, frame: pd.DataFrame) -> pd.Series:
        if frame.empty:
            return pd.Series([], index=frame.index, dtype=object)
        hashes = _hashes(frame)
        occurrence = pd.Series(hashes).groupby(hashes, sort=False).cumcount().to_numpy() + self.seen.lookup(hashes) + 1
        self.seen.add(hashes)
        ids = [f"{int(h):016x}-{int(n)}" for h, n in zip(hashes, occurrence)]
        return pd.Series(ids, index=frame.index, dtype=object)


def _column(frame: pd.DataFrame, spec: ColumnMap, target: str, report: ImportReport, where: str,
            row_ids: pd.Series | None = None) -> pd.Series:
    if spec.row_id:
        return row_ids if row_ids is not None else pd.Series(None, index=frame.index, dtype=object)
    if spec.json_of is not None:
        missing = [c for c in spec.json_of if c not in frame]
        if missing:
            raise MappingError(f"{where}.{target}: json_of column(s) {missing} not in the data")
        return pd.Series([json.dumps({c: r[c] for c in spec.json_of if r[c] is not None and r[c] == r[c] and r[c] != ""})
                          for r in frame[spec.json_of].astype(object).to_dict("records")], index=frame.index, dtype=object)
    if spec.column is None:
        return pd.Series(spec.constant, index=frame.index, dtype=object)
    if spec.column not in frame:
        raise MappingError(f"{where}.{target}: column {spec.column!r} not in the data")
    values = frame[spec.column].astype(object).where(frame[spec.column].notna(), None)
    if spec.value_map is not None:
        mapped = values.map(lambda v: spec.value_map.get(v, "\0unmapped") if v is not None else None)
        unmapped = mapped == "\0unmapped"
        if unmapped.any():
            if spec.default is not None:
                mapped[unmapped] = spec.default
            else:
                report.unmapped.setdefault(f"{where}.{target}", Counter()).update(values[unmapped].tolist())
        values = mapped
    if spec.format is not None:
        parsed = pd.to_datetime(values, format=spec.format, errors="coerce", utc=True)
        bad = parsed.isna() & values.notna()
        if bad.any():
            report.unmapped.setdefault(f"{where}.{target}:format", Counter()).update(values[bad].astype(str).tolist())
        offset = pd.to_timedelta(spec.time)
        values = (parsed + offset).dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype(object).where(parsed.notna(), None)
    return values


def _join(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], join: Join, report: ImportReport, where: str) -> pd.DataFrame:
    other = tables[join.table]
    if join.latest_by:
        other = other.sort_values(join.latest_by, kind="stable").drop_duplicates(join.key, keep="last")
    elif join.earliest_by:
        other = other.sort_values(join.earliest_by, kind="stable").drop_duplicates(join.key, keep="first")
    else:
        other = other.drop_duplicates(join.key, keep="first")
    merged = frame.merge(other[[join.key, *join.columns]], on=join.key, how="left", suffixes=("", f"_{join.table}"))
    merged.index = frame.index
    misses = merged[join.columns[0]].isna() & frame[join.key].notna()
    if misses.any():
        report.dropped[f"{where}: no match in {join.table} on {join.key}"] += int(misses.sum())
    return merged


def _parse_days(values: pd.Series) -> pd.Series:
    """Days (``datetime64[ns]`` at midnight, NaT where unparseable) of a column of dates: compact
    ``YYYYMMDD``, ISO 8601 (fast paths), else any format pandas recognises."""
    text = values.astype(object).where(values.notna(), None)
    if not len(text):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    compact = text.str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(compact), format="%Y%m%d", errors="coerce")
    rest = ~compact & text.notna()
    if rest.any():
        iso = pd.to_datetime(text.where(rest), format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
        parsed = parsed.where(~rest, iso)
        retry = rest & parsed.isna()
        if retry.any():
            mixed = pd.to_datetime(text.where(retry), format="mixed", errors="coerce", utc=True).dt.tz_localize(None)
            parsed = parsed.where(~retry, mixed)
    return parsed.astype("datetime64[ns]").dt.normalize()


def _part_frame(part: Part, frame: pd.DataFrame, tables: dict[str, pd.DataFrame], target: str,
                report: ImportReport, where: str, row_ids: pd.Series | None = None,
                days: tuple[date | None, date | None] | None = None) -> pd.DataFrame:
    """The landing rows of one chunk of ``part``'s table: landing columns plus helper columns
    ``_day``, ``_present_from``, ``_key``, ``_trial`` and ``_g0``.. (the group_by values)."""
    for join in part.joins:
        frame = _join(frame, tables, join, report, where)
    if part.where:
        for column, allowed in part.where.items():
            keep = frame[column].isin(allowed)
            frame = frame.loc[keep]
            if row_ids is not None:
                row_ids = row_ids.loc[keep[keep].index]
    if days is not None and part.day_from:  # event sources: drop the rows outside the days before mapping them
        day = _parse_days(frame[part.day_from])
        keep = _in_range(day, *days)
        outside = int((~keep & day.notna()).sum())
        if outside:
            report.dropped[f"{target}: outside {days[0] or '-'}..{days[1] or '-'}"] += outside
        undated = int(day.isna().sum())
        if undated:
            report.dropped[f"{where}: no day in {part.day_from}"] += undated
        frame = frame.loc[keep]
        if row_ids is not None:
            row_ids = row_ids.loc[frame.index]
    out = pd.DataFrame({col: _column(frame, spec, col, report, where, row_ids) for col, spec in part.columns.items()},
                       index=frame.index)
    for col in sources()[target].column_names:
        if col not in out:
            out[col] = None
    mapped_unmapped = pd.Series(False, index=out.index)
    for col, spec in part.columns.items():
        if spec.value_map is not None and spec.default is None:
            mapped_unmapped |= out[col] == "\0unmapped"
    if mapped_unmapped.any():
        report.dropped[f"{where}: unmapped values"] += int(mapped_unmapped.sum())
        out = out.loc[~mapped_unmapped]
        frame = frame.loc[out.index]
    none = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    out["_day"] = _parse_days(frame[part.day_from]) if part.day_from else none
    out["_present_from"] = _parse_days(frame[part.present_from]) if part.present_from else none
    if part.status is not None:
        out["_key"] = frame[part.status.key].to_numpy()
        out["_trial"] = (frame[part.status.trial_column].astype(str).str.lower() == "true").to_numpy() \
            if part.status.trial_column else False
    for i, column in enumerate(part.group_by or []):
        if column not in frame:
            raise MappingError(f"{where}: group_by column {column!r} not in the data")
        out[f"_g{i}"] = frame[column].to_numpy()
    return out[[*sources()[target].column_names, *[c for c in out.columns if c.startswith("_")]]]


#: How partial aggregates of consecutive chunks combine.
_COMBINE = {"min": "min", "max": "max", "first": "first", "last": "last", "count": "sum", "sum": "sum"}


def _aggregate(frame: pd.DataFrame, part: Part, combine: bool = False) -> pd.DataFrame:
    """One row per ``group_by`` group (keys in ``_g0``..): each landing column by its ``aggregate``
    (default ``first``, the first non-missing value in file order); numbers compare as numbers for
    min/max when every value of the column is numeric; helper columns: earliest ``_day`` and
    ``_present_from``, first ``_key``, last ``_trial``. ``combine`` merges partial aggregates."""
    keys = [f"_g{i}" for i in range(len(part.group_by or []))]
    if frame.empty:
        return frame
    how: dict[str, str] = {}
    data = frame.copy()
    for column in frame.columns:
        if column in keys:
            continue
        spec = part.columns.get(column)
        agg = spec.aggregate if spec and spec.aggregate else "first"
        if column in ("_day", "_present_from"):
            agg = "min"
        elif column == "_trial":
            agg = "last"
        if combine:
            agg = _COMBINE[agg]
        elif agg == "count":
            data[column] = 1
            agg = "sum"
        if agg == "sum":
            data[column] = pd.to_numeric(data[column], errors="coerce")
        elif agg in ("min", "max") and column not in ("_day", "_present_from"):
            numbers = pd.to_numeric(data[column], errors="coerce")
            if numbers.notna().sum() == data[column].notna().sum():
                data[column] = numbers
        if data[column].dtype == object and column not in ("_key", "_trial"):
            data[column] = data[column].astype(str).where(data[column].notna())  # Arrow strings: vectorised min/max
        how[column] = agg
    grouped = data.groupby(keys, sort=False, dropna=False).agg(how).reset_index()
    for column, agg in how.items():  # back to text for the landing file (ints without ".0")
        if agg in ("sum", "min", "max") and pd.api.types.is_numeric_dtype(grouped[column]) and column != "_trial":
            values = grouped[column]
            whole = values.dropna().eq(values.dropna().round()).all()
            grouped[column] = values.map(lambda v: None if pd.isna(v) else (str(int(v)) if whole else repr(float(v))))
    return grouped


def _status(snapshot: pd.DataFrame, churn: pd.DataFrame, rule: StatusRule, day: date) -> tuple[pd.Series, pd.Series]:
    events = churn.loc[pd.to_datetime(churn[rule.churn_date], errors="coerce").dt.date <= day]
    if rule.reactivation_column:
        events = events.assign(_re=events[rule.reactivation_column].astype(str).str.lower() == "true")
    else:
        events = events.assign(_re=False)
    events = events.assign(_d=pd.to_datetime(events[rule.churn_date]).dt.date).sort_values("_d")
    last = events.drop_duplicates(rule.key, keep="last").set_index(rule.key)
    cancelled_on = last["_d"].where(~last["_re"])
    when = snapshot["_key"].map(cancelled_on)
    status = pd.Series("active", index=snapshot.index, dtype=object)
    status[snapshot["_trial"].astype(bool)] = "trialing"
    status[when.notna()] = "cancelled"
    cancelled_at = when.map(lambda d: f"{d.isoformat()}T00:00:00Z" if isinstance(d, date) else None)
    return status, cancelled_at


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


def _logins(rows: pd.DataFrame) -> pd.DataFrame:
    """One login per supplier and day of ``rows`` (with ``_day``): at 08:00 UTC, by the day's first
    user of that supplier, or the supplier's own id when the rows have no user."""
    firsts = rows.assign(user_id=rows["user_id"].where(rows["user_id"].notna(), rows["supplier_id"])) \
        .drop_duplicates(["supplier_id", "_day"])[["supplier_id", "user_id", "_day"]].copy()
    days = firsts["_day"].dt.strftime("%Y-%m-%d")
    firsts["event_id"] = "login-" + firsts["supplier_id"].astype(str) + "-" + days
    firsts["event_name"] = "login"
    firsts["occurred_at"] = days + "T08:00:00Z"
    return firsts


def _in_range(days: pd.Series, start: date | None, end: date | None) -> pd.Series:
    keep = days.notna()
    if start is not None:
        keep &= days >= pd.Timestamp(start)
    if end is not None:
        keep &= days <= pd.Timestamp(end)
    return keep


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
    tables = {name: _read_whole(mapping.tables[name], source_dir) for name in sorted(whole | (snapshot_from - streamed))}
    files = _DayFiles(out_dir, report)
    seen_days: list[date] = []
    # 1. Event sources, streamed.
    for target in SOURCE_NAMES:
        if target in mapping.snapshot_sources:
            continue
        for i, part in enumerate(mapping.sources.get(target, [])):
            where = f"sources.{target}.{i}"
            ids = _RowIds() if any(c.row_id for c in part.columns.values()) else None
            partials, logged_in = [], _SeenSet()  # (supplier, day) pairs with a login written
            for chunk in _chunks(part.from_, mapping, source_dir, tables):
                rows = _part_frame(part, chunk, tables, target, report, where, ids.assign(chunk) if ids else None,
                                   days=(mapping.start, mapping.end))
                if part.group_by:
                    partials.append(_aggregate(rows, part))
                    if sum(len(p) for p in partials) > chunk_rows:
                        partials = [_aggregate(pd.concat(partials, ignore_index=True), part, combine=True)]
                    continue
                _write_days(files, target, rows, seen_days)
                if part.login_per_active_day and len(rows):
                    _write_logins(files, rows, logged_in, seen_days)
            if part.group_by and partials:
                rows = _aggregate(pd.concat(partials, ignore_index=True), part, combine=True)
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
            ids = _RowIds() if any(c.row_id for c in part.columns.values()) else None
            pieces = []
            for chunk in _chunks(part.from_, mapping, source_dir, tables):
                rows = _part_frame(part, chunk, tables, target, report, where, ids.assign(chunk) if ids else None)
                pieces.append(_aggregate(rows, part) if part.group_by else rows)
            frame = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
            if part.group_by and len(frame):
                frame = _aggregate(frame, part, combine=True)
            frames.append((frame, part))
        columns = list(sources()[target].column_names)
        static = [_SnapshotLines(frame, columns) for frame, part in frames if part.status is None and not frame.empty]
        dynamic = [(frame, part) for frame, part in frames if part.status is not None and not frame.empty]
        for day in days:
            pieces = []
            for frame, part in dynamic:
                rows = frame.loc[frame["_present_from"].isna() | (frame["_present_from"] <= pd.Timestamp(day))].copy()
                if len(rows):
                    status, cancelled_at = _status(rows, tables[part.status.churn_table], part.status, day)
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


def _chunks(table: str, mapping: ImportMapping, source_dir: Path, tables: dict[str, pd.DataFrame]) -> Iterator[pd.DataFrame]:
    if table in tables:
        yield tables[table]
    else:
        yield from read_table(mapping.tables[table], source_dir)


def _write_logins(files: _DayFiles, rows: pd.DataFrame, logged_in: _SeenSet, seen_days: list[date]) -> None:
    """Append the logins of ``rows`` (``_logins``) for the (supplier, day) pairs without one yet."""
    logins = _logins(rows)
    pairs = _hashes(logins[["supplier_id", "_day"]])
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
