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
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cs_pipeline.ingest.landing import landing_file_name
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources
from cs_pipeline.core.config import load_yaml_model


class MappingError(ValueError):
    """The mapping file or the data it points at is invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TableSpec(_Strict):
    file: str


class Join(_Strict):
    table: str
    key: str  # the column both tables share
    columns: list[str] = Field(min_length=1)
    latest_by: str | None = None  # several matches: keep the row with the greatest value of this column


class ColumnMap(_Strict):
    column: str | None = None
    constant: Any = None
    value_map: dict[str, str | None] | None = None
    default: str | None = None
    format: str | None = None  # strptime format of a date/time column
    time: str = "00:00:00"  # time of day for date-only values (UTC)
    json_of: list[str] | None = None  # build a JSON object from these columns

    @model_validator(mode="after")
    def _one_source(self) -> ColumnMap:
        given = [self.column is not None, self.constant is not None, self.json_of is not None]
        if sum(given) > 1:
            raise ValueError("give one of column, constant or json_of")
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
    columns: dict[str, ColumnMap]


class ImportMapping(_Strict):
    name: str
    description: str = ""
    tables: dict[str, TableSpec]
    start: date
    end: date
    snapshot_sources: list[str] = Field(default_factory=lambda: ["suppliers"])
    sources: dict[Literal["suppliers", "activity_events", "support_tickets", "billing_events"], list[Part]]

    @model_validator(mode="after")
    def _consistent(self) -> ImportMapping:
        if self.end < self.start:
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


@dataclass
class ImportReport:
    """What an import wrote and what did not map."""

    files: int = 0
    rows: Counter = field(default_factory=Counter)
    unmapped: dict[str, Counter] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def _column(frame: pd.DataFrame, spec: ColumnMap, target: str, report: ImportReport, where: str) -> pd.Series:
    if spec.json_of is not None:
        missing = [c for c in spec.json_of if c not in frame]
        if missing:
            raise MappingError(f"{where}.{target}: json_of column(s) {missing} not in the data")
        return pd.Series([json.dumps({c: r[c] for c in spec.json_of if r[c] not in (None, "")})
                          for r in frame[spec.json_of].to_dict("records")], index=frame.index, dtype=object)
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
        values = (parsed + offset).dt.strftime("%Y-%m-%dT%H:%M:%SZ").where(parsed.notna(), None)
    return values


def _join(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], join: Join, report: ImportReport, where: str) -> pd.DataFrame:
    other = tables[join.table]
    if join.latest_by:
        other = other.sort_values(join.latest_by).drop_duplicates(join.key, keep="last")
    else:
        other = other.drop_duplicates(join.key, keep="first")
    merged = frame.merge(other[[join.key, *join.columns]], on=join.key, how="left", suffixes=("", f"_{join.table}"))
    misses = merged[join.columns[0]].isna() & frame[join.key].notna().to_numpy()
    if misses.any():
        report.dropped[f"{where}: no match in {join.table} on {join.key}"] += int(misses.sum())
    return merged


def _part_frame(part: Part, tables: dict[str, pd.DataFrame], target: str, report: ImportReport, where: str) -> pd.DataFrame:
    frame = tables[part.from_].copy()
    for join in part.joins:
        frame = _join(frame, tables, join, report, where)
    if part.where:
        for column, allowed in part.where.items():
            frame = frame.loc[frame[column].isin(allowed)]
    out = pd.DataFrame({col: _column(frame, spec, col, report, where) for col, spec in part.columns.items()},
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
    out["_day"] = pd.to_datetime(frame[part.day_from], errors="coerce").dt.date if part.day_from else None
    out["_present_from"] = pd.to_datetime(frame[part.present_from], errors="coerce").dt.date if part.present_from else None
    if part.status is not None:
        out["_key"] = frame[part.status.key].to_numpy()
        out["_trial"] = (frame[part.status.trial_column].astype(str).str.lower() == "true").to_numpy() \
            if part.status.trial_column else False
    return out[[*sources()[target].column_names, *[c for c in out.columns if c.startswith("_")]]]


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


def run_import(mapping: ImportMapping, source_dir: Path, out_dir: Path) -> ImportReport:
    """Write the landing files of ``mapping`` for every day in [start, end] into ``out_dir``.

    Raises:
        MappingError: a table file is missing or a mapped column is absent.
    """
    tables = {}
    for name, spec in mapping.tables.items():
        path = source_dir / spec.file
        if not path.is_file():
            raise MappingError(f"{mapping.name}: table {name}: {path} not found")
        tables[name] = pd.read_csv(path, dtype=str, keep_default_na=False).replace({"": None})
    report = ImportReport()
    out_dir.mkdir(parents=True, exist_ok=True)
    days = [mapping.start + timedelta(days=i) for i in range((mapping.end - mapping.start).days + 1)]
    for target in SOURCE_NAMES:
        columns = list(sources()[target].column_names)
        parts = mapping.sources.get(target, [])
        if not parts:
            report.notes.append(f"{target}: no mapping; header-only files written")
        frames = [(_part_frame(p, tables, target, report, f"sources.{target}.{i}"), p) for i, p in enumerate(parts)]
        for day in days:
            pieces = []
            for frame, part in frames:
                if target in mapping.snapshot_sources:
                    rows = frame.loc[frame["_present_from"].isna() | (frame["_present_from"] <= day)].copy()
                    if part.status is not None and len(rows):
                        status, cancelled_at = _status(rows, tables[part.status.churn_table], part.status, day)
                        rows["status"], rows["cancelled_at"] = status, cancelled_at
                    pieces.append(rows[columns])
                else:
                    rows = frame.loc[frame["_day"] == day]
                    pieces.append(rows[columns])
                    if part.login_per_active_day and len(rows):
                        logins = rows.drop_duplicates("supplier_id")[["supplier_id"]].copy()
                        logins["event_id"] = "login-" + logins["supplier_id"] + "-" + day.isoformat()
                        logins["event_name"] = "login"
                        logins["occurred_at"] = f"{day.isoformat()}T08:00:00Z"
                        pieces.append(logins.reindex(columns=columns))
            day_frame = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=columns)
            day_frame.to_csv(out_dir / landing_file_name(target, day), index=False, columns=columns)
            report.files += 1
            report.rows[target] += len(day_frame)
        if not days:
            continue
        outside = sum(int(((f["_day"] < mapping.start) | (f["_day"] > mapping.end)).sum())
                      for f, p in frames if target not in mapping.snapshot_sources)
        if outside:
            report.dropped[f"{target}: outside {mapping.start}..{mapping.end}"] += outside
    return report
