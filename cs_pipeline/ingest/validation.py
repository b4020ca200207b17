"""Record validation for raw ingestion: pure, vectorised (pyarrow.compute), no database.

Every record either passes all the rules of its source (DOMAIN.md, "Raw inputs") or is rejected with
the first rule it fails, as a reason code ``<rule>:<column>``:

=======================  ==========================================================================
reason                   rule
=======================  ==========================================================================
missing_required:<c>     required column null or blank
invalid_character:<c>    value contains a NUL byte (PostgreSQL text cannot hold it)
invalid_timestamp:<c>    not ISO 8601 (``YYYY-MM-DD[THH:MM[:SS[.f]]][Z|+HH:MM]``) or not a real instant
outside_partition_day:<c>  timestamp outside the file's UTC day (or after its end, for "not_after")
invalid_number:<c>       not a decimal number (NaN and infinities are not numbers here)
out_of_range:<c>         number below ``min_value`` or above ``max_value``
invalid_enum:<c>         value not in the column's value set
invalid_format:<c>       value does not match the column's pattern (country, currency)
invalid_json:depth       a JSON value nested deeper than ``jsonb.MAX_JSON_DEPTH`` (64) levels
invalid_json:<c>         not a JSON object
duplicate_key:<c>        (applied in the database, see ``loader``) key seen earlier in the file
unparseable_record       (reader) wrong number of fields, or a JSON line that is not an object
=======================  ==========================================================================

Timestamps without an offset are UTC. Valid records come out typed for the raw table (see
``load_schema``): timestamps as UTC instants rounded to the microsecond (PostgreSQL's precision), integers
as int32, everything else as text. A ``jsonb`` value passes only if PostgreSQL's ``jsonb`` accepts it too:
a JSON object without ``NaN``/``Infinity``, ``\\u0000`` or unpaired surrogate escapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cs_pipeline.ingest.jsonb import MAX_JSON_DEPTH, json_deeper_than, json_objects, pg_json_object
from cs_pipeline.ingest.sources import Column, Source
from cs_pipeline.ingest.values import (
    DECIMAL,
    INTEGER,
    ISO_TIMESTAMP,
    TIMESTAMPTZ,
    data_bytes,
    null_as,
    numeric_unstorable,
    parse_numbers,
    parse_timestamps,
    pg_number,
    to_microseconds,
)

__all__ = [
    "ARROW_TYPES", "DECIMAL", "INTEGER", "ISO_TIMESTAMP", "MAX_JSON_DEPTH", "ValidatedBatch", "load_schema",
    "parse_timestamps", "pg_json_object", "pg_number", "to_microseconds", "validate_batch",
]

#: Arrow type of each column type in a validated batch: numeric stays exact decimal text and jsonb stays
#: JSON text (PostgreSQL parses both); timestamps are UTC instants at PostgreSQL's microsecond precision.
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "jsonb": pa.string(),
    "numeric": pa.string(),
    "integer": pa.int32(),
    "timestamptz": TIMESTAMPTZ,
}


def load_schema(source: Source) -> pa.Schema:
    """The Arrow schema of ``ValidatedBatch.valid`` for ``source``: the source's columns in order,
    typed by ``ARROW_TYPES``."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in source.columns])


@dataclass
class ValidatedBatch:
    """The outcome of validating one batch.

    Attributes:
        valid: the passing records, typed by ``load_schema(source)`` (absent columns as nulls).
        valid_record_numbers: int64 record numbers of ``valid``'s rows.
        rejected_record_numbers: int64 record numbers of the rejected rows.
        rejected_reasons: reason code per rejected row (see module docstring).
        rejected_raw: the rejected records as JSON text (``{"column": "value", ...}``), as read.
        supplier_ids: distinct supplier ids among the valid rows.
        min_time, max_time: range of the source's time column among the valid rows (UTC), or None.
    """

    valid: pa.Table
    valid_record_numbers: np.ndarray
    rejected_record_numbers: np.ndarray
    rejected_reasons: list[str]
    rejected_raw: list[str]
    supplier_ids: set[str] = field(default_factory=set)
    min_time: datetime | None = None
    max_time: datetime | None = None


def _day_bounds(day: date) -> tuple[pa.Scalar, pa.Scalar]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    us = ARROW_TYPES["timestamptz"]
    return pa.scalar(start, type=us), pa.scalar(start + timedelta(days=1), type=us)


def _has_nul(values: pa.Array, data: bytes) -> pa.Array | None:
    """Mask of values containing a NUL byte, or None when ``data`` (``data_bytes(values)``) has none."""
    if data.find(b"\x00") < 0:
        return None
    return null_as(pc.match_substring(values, "\x00"), False)


def _too_deep(values: pa.Array) -> pa.Array:
    """Mask of JSON texts nested deeper than ``MAX_JSON_DEPTH`` (``json_deeper_than``). Only values
    longer than that many bytes can be, and only those of them holding more brackets are scanned, one by
    one: a batch of short values costs one length comparison."""
    mask = np.zeros(len(values), dtype=bool)
    if len(values) == values.null_count:
        return pa.array(mask)
    long = np.flatnonzero(null_as(pc.greater(pc.binary_length(values), MAX_JSON_DEPTH), False)
                          .to_numpy(zero_copy_only=False))
    if len(long):
        text = values.take(pa.array(long))
        brackets = pc.add(pc.count_substring(text, "["), pc.count_substring(text, "{"))
        for j in np.flatnonzero(pc.greater(brackets, MAX_JSON_DEPTH).to_numpy(zero_copy_only=False)):
            mask[long[j]] = json_deeper_than(text[int(j)].as_py())
    return pa.array(mask)


def _column_checks(
    column: Column, values: pa.Array, day: date
) -> tuple[list[tuple[str, pa.Array]], pa.Array]:
    """(rule, failing-mask) pairs for one column in rule order, and the column's output values
    (typed by ``ARROW_TYPES``)."""
    checks: list[tuple[str, pa.Array]] = []
    present = pc.is_valid(values)
    if column.required:
        blank = null_as(pc.utf8_is_space(values), True) if values.null_count < len(values) else pc.is_null(values)
        checks.append((f"missing_required:{column.name}", blank))
    data = data_bytes(values)
    nul = _has_nul(values, data)
    if nul is not None:
        checks.append((f"invalid_character:{column.name}", nul))
    out = values
    if column.type == "timestamptz":
        parsed = parse_timestamps(values)
        checks.append((f"invalid_timestamp:{column.name}", pc.and_(present, pc.is_null(parsed))))
        out = to_microseconds(parsed)  # the instant PostgreSQL stores: the day window applies to it
        if column.day_window:
            start, end = _day_bounds(day)
            after = null_as(pc.greater_equal(out, end), False)
            outside = after if column.day_window == "not_after" else pc.or_(
                after, null_as(pc.less(out, start), False)
            )
            checks.append((f"outside_partition_day:{column.name}", outside))
    elif column.type in ("numeric", "integer"):
        failing, number, out = parse_numbers(values, column.type == "integer")
        checks.append((f"invalid_number:{column.name}", failing))
        bad = None
        if column.min_value is not None or column.max_value is not None:
            too_low = pc.less(number, column.min_value) if column.min_value is not None else None
            too_high = pc.greater(number, column.max_value) if column.max_value is not None else None
            bad = too_low if too_high is None else too_high if too_low is None else pc.or_(too_low, too_high)
        if column.type == "numeric":
            unstorable = numeric_unstorable(out)
            if unstorable is not None:
                bad = unstorable if bad is None else pc.or_kleene(bad, unstorable)
        if bad is not None:
            checks.append((f"out_of_range:{column.name}", null_as(bad, False)))
    elif column.type == "jsonb":
        checks.append(("invalid_json:depth", _too_deep(values)))
        checks.append((f"invalid_json:{column.name}", pc.invert(json_objects(values, data))))
    if column.allowed is not None:
        member = pc.is_in(values, value_set=pa.array(column.allowed, type=pa.string()))
        checks.append((f"invalid_enum:{column.name}", pc.and_(present, pc.invert(member))))
    if column.pattern is not None:
        matches = null_as(pc.match_substring_regex(values, column.pattern), False)
        checks.append((f"invalid_format:{column.name}", pc.and_(present, pc.invert(matches))))
    return checks, out


def validate_batch(table: pa.Table, record_numbers: np.ndarray, source: Source, day: date) -> ValidatedBatch:
    """Validate one batch of string records of ``source`` for the landing day ``day`` (UTC).

    Args:
        table: string columns named as the source's columns; absent optional columns may be missing.
        record_numbers: int64 record number per row (1-based position in the file).
        source: the source's column rules.
        day: the file's partition day; "inside" timestamps must fall in [day 00:00, day+1 00:00) UTC.

    Returns:
        ValidatedBatch: the passing records (typed by ``load_schema``) and the rejected ones with
            their reasons.
    """
    n = table.num_rows
    outputs: dict[str, pa.Array] = {}
    all_checks: list[tuple[str, pa.Array]] = []
    for column in source.columns:
        if column.name in table.column_names:
            values = table.column(column.name).combine_chunks()
        else:
            values = pa.nulls(n, type=pa.string())
        checks, out = _column_checks(column, values, day)
        outputs[column.name] = out
        all_checks += checks
    failing_any = np.zeros(n, dtype=bool)
    masks = []
    for rule, failing in all_checks:
        mask = failing.to_numpy(zero_copy_only=False)
        failing_any |= mask
        masks.append((rule, mask))
    bad_idx = np.flatnonzero(failing_any)
    reasons = np.full(len(bad_idx), None, dtype=object)
    for rule, mask in masks:  # the first failing rule, in column and rule order, is the reason
        hit = mask[bad_idx] & (reasons == None)  # noqa: E711 (element-wise)
        reasons[hit] = rule
    ok_np = ~failing_any
    columns = list(outputs.values())
    if len(bad_idx):
        ok = pa.array(ok_np)
        columns = [pc.filter(arr, ok) for arr in columns]
    valid = pa.Table.from_arrays(columns, schema=load_schema(source))
    record_numbers = np.asarray(record_numbers, dtype=np.int64)
    rejected_raw: list[str] = []
    if len(bad_idx):
        originals = table.take(pa.array(bad_idx)).to_pylist()
        rejected_raw = [json.dumps(row, ensure_ascii=False) for row in originals]
    result = ValidatedBatch(
        valid=valid,
        valid_record_numbers=record_numbers[ok_np],
        rejected_record_numbers=record_numbers[bad_idx],
        rejected_reasons=reasons.tolist(),
        rejected_raw=rejected_raw,
    )
    if "supplier_id" in valid.column_names and valid.num_rows:
        result.supplier_ids = set(pc.unique(valid.column("supplier_id")).to_pylist())
    if source.time_column and valid.num_rows:
        bounds = pc.min_max(valid.column(source.time_column)).as_py()
        result.min_time, result.max_time = bounds["min"], bounds["max"]
    return result
