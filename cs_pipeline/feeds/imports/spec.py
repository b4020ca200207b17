"""The import mapping's model: the YAML a team writes (tables, days, and per landing source the parts
with their joins, filters and column maps), validated by pydantic when loaded, and the report an import
returns. No file is read here beyond the mapping itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from difflib import get_close_matches
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cs_pipeline.core.config import load_yaml_model
from cs_pipeline.ingest.sources import sources


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
        if self.json_of is not None and not self.json_of:  # it would build no SQL expression at all
            raise ValueError("json_of lists no column: name the columns of the JSON object, or use constant: '{}'")
        return self


class StatusRule(_Strict):
    """Supplier status per snapshot day. ``churn_on: churn_event`` (default): cancelled from the latest
    churn date on or before the day (until a later reactivation). ``churn_on: last_subscription_end``: the
    churn table lists subscriptions, ``churn_date`` is their end date (empty: still running) and the optional
    ``start_date`` their start; cancelled on a day when every subscription started by then has ended on or
    before it, from the last end (a new subscription makes the supplier active again). Then trialing where
    ``trial_column`` is true, otherwise active."""

    churn_table: str
    key: str
    churn_date: str
    churn_on: Literal["churn_event", "last_subscription_end"] = "churn_event"
    start_date: str | None = None  # last_subscription_end: a subscription counts from this day
    reactivation_column: str | None = None
    trial_column: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StatusRule:
        if self.churn_on == "last_subscription_end" and self.reactivation_column:
            raise ValueError("reactivation_column goes with churn_on: churn_event (a new subscription reactivates)")
        if self.churn_on == "churn_event" and self.start_date:
            raise ValueError("start_date goes with churn_on: last_subscription_end")
        return self


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
                    hints = {u: get_close_matches(u, sorted(known), n=1, cutoff=0.6) for u in sorted(unknown)}
                    said = ", ".join(f"{u!r} (did you mean {h[0]!r}?)" if h else repr(u) for u, h in hints.items())
                    raise ValueError(f"sources.{name}.{i}: unknown landing column(s) {said}")
        return self


def load_mapping(path: Path) -> ImportMapping:
    """Load and validate an import mapping.

    Raises:
        MappingError: missing file, invalid YAML or fields (the message names file and field, and for an
            unknown key the closest known key: "did you mean 'latest_by'?").
    """
    try:
        return load_yaml_model(path, ImportMapping, MappingError, "mapping")
    except MappingError as exc:
        if not isinstance(exc.__cause__, ValidationError):
            raise
        hints = [hint for error in exc.__cause__.errors() if (hint := _did_you_mean(error))]
        if not hints:
            raise
        raise MappingError(f"{exc}; {'; '.join(hints)}") from exc.__cause__


def _did_you_mean(error: dict[str, Any]) -> str | None:
    """For an unknown key (``extra_forbidden``) or landing source name, the closest known key (difflib)."""
    loc = list(error["loc"])
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = [f.alias or name for name, f in model.model_fields.items()] if model else []
    elif error["type"] == "literal_error" and loc[:1] == ["sources"] and loc[-1:] == ["[key]"]:
        known = list(sources())
        loc = loc[:-1]
    else:
        return None
    close = get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f"{'.'.join(str(p) for p in loc)}: did you mean {close[0]!r}?" if close else None


def _model_at(loc: list[Any]) -> type[BaseModel] | None:
    """The mapping model that holds the keys at ``loc`` (list indexes and dict keys skipped)."""
    kind: Any = ImportMapping
    for step in loc:
        while get_origin(kind) in (list, dict, Union, UnionType):
            args = [a for a in get_args(kind) if a is not type(None)]
            kind = args[-1] if get_origin(kind) is not Union and get_origin(kind) is not UnionType else args[0]
            if isinstance(step, int) or not (isinstance(kind, type) and issubclass(kind, BaseModel)):
                break
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            fields = {f.alias or name: f for name, f in kind.model_fields.items()}
            if step in fields:
                kind = fields[step].annotation
    while get_origin(kind) in (list, dict, Union, UnionType):
        kind = [a for a in get_args(kind) if a is not type(None)][-1]
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


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
