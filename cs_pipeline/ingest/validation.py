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
invalid_json:<c>         not a JSON object
duplicate_key:<c>        (applied in the database, see ``loader``) key seen earlier in the file
unparseable_record       (reader) wrong number of fields, or a JSON line that is not an object
=======================  ==========================================================================

Timestamps without an offset are UTC; valid ones are normalised to carry an explicit offset so that
PostgreSQL reads them the same way whatever its session time zone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cs_pipeline.ingest.sources import Column, Source

ISO_TIMESTAMP = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_HAS_TIME = r"^\d{4}-\d{2}-\d{2}[T ]"
_TIME_PART_WITH_OFFSET = r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
DECIMAL = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?\s*$"
INTEGER = r"^\s*[+-]?\d{1,9}\s*$"

_TS_TYPE = pa.timestamp("ns", tz="UTC")


@dataclass
class ValidatedBatch:
    """The outcome of validating one batch.

    Attributes:
        valid: the passing records, columns in the source's order (absent columns as nulls), strings.
        valid_record_numbers: int64 record numbers of ``valid``'s rows.
        rejected_record_numbers: int64 record numbers of the rejected rows.
        rejected_reasons: reason code per rejected row (see module docstring).
        rejected_raw: the rejected records as JSON text (``{"column": "value", ...}``).
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
    return pa.scalar(start, type=_TS_TYPE), pa.scalar(start + timedelta(days=1), type=_TS_TYPE)


def normalise_timestamps(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Normalise ISO 8601 strings to explicit-offset strings and parse them.

    Returns ``(normalised_text, parsed)``: both null where the input is null or invalid. Strings
    without an offset are taken as UTC; a date alone is midnight UTC.
    """
    try:  # fast path: every value already carries an offset and parses
        parsed = pc.cast(values, _TS_TYPE)
        shaped = pc.fill_null(pc.match_substring_regex(values, ISO_TIMESTAMP), True)
        if pc.all(shaped).as_py():
            return values, parsed
    except pa.ArrowInvalid:
        pass
    shaped = pc.fill_null(pc.match_substring_regex(values, ISO_TIMESTAMP), False)
    candidates = pc.if_else(shaped, values, pa.scalar(None, pa.string()))
    has_time = pc.fill_null(pc.match_substring_regex(candidates, _HAS_TIME), False)
    with_time = pc.if_else(has_time, candidates, pc.binary_join_element_wise(candidates, "T00:00:00", ""))
    has_offset = pc.fill_null(pc.match_substring_regex(with_time, _TIME_PART_WITH_OFFSET), False)
    text = pc.if_else(has_offset, with_time, pc.binary_join_element_wise(with_time, "Z", ""))
    try:
        parsed = pc.cast(text, _TS_TYPE)
    except pa.ArrowInvalid:
        # Rare: a well-shaped but impossible instant (month 13, Feb 30). Parse one by one.
        parsed_list = []
        for item in text.to_pylist():
            if item is None:
                parsed_list.append(None)
                continue
            try:
                parsed_list.append(pc.cast(pa.array([item]), _TS_TYPE)[0].as_py())
            except pa.ArrowInvalid:
                parsed_list.append(None)
        parsed = pa.array(parsed_list, type=_TS_TYPE)
        text = pc.if_else(pc.is_null(parsed), pa.scalar(None, pa.string()), text)
    return text, parsed


def _has_nul(values: pa.Array) -> pa.Array | None:
    """Mask of values containing a NUL byte, or None when the column's data buffer has none."""
    buffers = values.buffers()
    data = buffers[2] if len(buffers) > 2 else None
    if data is None or memoryview(data).tobytes().find(b"\x00") < 0:
        return None
    return pc.fill_null(pc.match_substring(values, "\x00"), False)


def _numbers(values: pa.Array, integer: bool) -> tuple[pa.Array, pa.Array]:
    """(failing-mask, float64 values) for decimal or integer text; NaN and infinities fail."""
    target = pa.int64() if integer else pa.float64()
    try:  # fast path: Arrow's parser accepts every value
        number = pc.cast(values, target)
        if integer or pc.all(pc.fill_null(pc.is_finite(number), True)).as_py():
            return pa.array(np.zeros(len(values), dtype=bool)), pc.cast(number, pa.float64())
    except pa.ArrowInvalid:
        pass
    shaped = pc.fill_null(pc.match_substring_regex(values, INTEGER if integer else DECIMAL), False)
    cleaned = pc.if_else(shaped, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    number = pc.cast(cleaned, pa.float64())
    return pc.and_(pc.is_valid(values), pc.invert(shaped)), number


def _json_objects(values: pa.Array) -> pa.Array:
    """Boolean per value: null or a JSON object. A fast path parses the batch with json on one
    joined string; only on failure is each value checked alone."""
    present = values.drop_null()
    if len(present) == 0:
        return pa.array(np.ones(len(values), dtype=bool))
    looks = pc.fill_null(pc.match_substring_regex(values, r"^\s*\{[\s\S]*\}\s*$"), True)
    if pc.all(looks).as_py():
        try:
            parsed = json.loads("[" + ",".join(present.to_pylist()) + "]")
            if len(parsed) == len(present) and all(isinstance(p, dict) for p in parsed):
                return pa.array(np.ones(len(values), dtype=bool))
        except ValueError:
            pass
    out = np.ones(len(values), dtype=bool)
    for i, item in enumerate(values.to_pylist()):
        if item is None:
            continue
        try:
            out[i] = isinstance(json.loads(item), dict)
        except ValueError:
            out[i] = False
    return pa.array(out)


def _column_checks(
    column: Column, values: pa.Array, day: date
) -> tuple[list[tuple[str, pa.Array]], pa.Array]:
    """(rule, failing-mask) pairs for one column in rule order, and the column's output values."""
    checks: list[tuple[str, pa.Array]] = []
    present = pc.is_valid(values)
    if column.required:
        blank = pc.fill_null(pc.utf8_is_space(values), True) if values.null_count < len(values) else pc.is_null(values)
        checks.append((f"missing_required:{column.name}", blank))
    nul = _has_nul(values)
    if nul is not None:
        checks.append((f"invalid_character:{column.name}", nul))
    out = values
    if column.type == "timestamptz":
        text, parsed = normalise_timestamps(values)
        checks.append((f"invalid_timestamp:{column.name}", pc.and_(present, pc.is_null(parsed))))
        if column.day_window:
            start, end = _day_bounds(day)
            after = pc.fill_null(pc.greater_equal(parsed, end), False)
            outside = after if column.day_window == "not_after" else pc.or_(
                after, pc.fill_null(pc.less(parsed, start), False)
            )
            checks.append((f"outside_partition_day:{column.name}", outside))
        out = text
    elif column.type in ("numeric", "integer"):
        failing, number = _numbers(values, column.type == "integer")
        checks.append((f"invalid_number:{column.name}", failing))
        out = pc.if_else(failing, pa.scalar(None, pa.string()), pc.utf8_trim_whitespace(values))
        if column.min_value is not None or column.max_value is not None:
            too_low = pc.less(number, column.min_value) if column.min_value is not None else None
            too_high = pc.greater(number, column.max_value) if column.max_value is not None else None
            bad = too_low if too_high is None else too_high if too_low is None else pc.or_(too_low, too_high)
            checks.append((f"out_of_range:{column.name}", pc.fill_null(bad, False)))
    elif column.type == "jsonb":
        checks.append((f"invalid_json:{column.name}", pc.invert(_json_objects(values))))
    if column.allowed is not None:
        member = pc.is_in(values, value_set=pa.array(column.allowed, type=pa.string()))
        checks.append((f"invalid_enum:{column.name}", pc.and_(present, pc.invert(member))))
    if column.pattern is not None:
        ok = pc.fill_null(pc.match_substring_regex(values, column.pattern), False)
        checks.append((f"invalid_format:{column.name}", pc.and_(present, pc.invert(ok))))
    return checks, out


def validate_batch(table: pa.Table, record_numbers: np.ndarray, source: Source, day: date) -> ValidatedBatch:
    """Validate one batch of string records of ``source`` for the landing day ``day`` (UTC).

    Args:
        table: string columns named as the source's columns; absent optional columns may be missing.
        record_numbers: int64 record number per row (1-based position in the file).
        source: the source's column rules.
        day: the file's partition day; "inside" timestamps must fall in [day 00:00, day+1 00:00) UTC.

    Returns:
        ValidatedBatch: the passing records (normalised) and the rejected ones with their reasons.
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
    ok = pa.array(~failing_any)
    valid = pa.table({name: pc.filter(arr, ok) for name, arr in outputs.items()})
    record_numbers = np.asarray(record_numbers, dtype=np.int64)
    ok_np = ~failing_any
    rejected_idx = np.flatnonzero(~ok_np)
    rejected_raw: list[str] = []
    if len(rejected_idx):
        originals = table.take(pa.array(rejected_idx)).to_pylist()
        rejected_raw = [json.dumps(row, ensure_ascii=False) for row in originals]
    result = ValidatedBatch(
        valid=valid,
        valid_record_numbers=record_numbers[ok_np],
        rejected_record_numbers=record_numbers[~ok_np],
        rejected_reasons=reasons.tolist(),
        rejected_raw=rejected_raw,
    )
    if "supplier_id" in valid.column_names and valid.num_rows:
        result.supplier_ids = set(pc.unique(valid.column("supplier_id")).to_pylist())
    if source.time_column and valid.num_rows:
        parsed = pc.cast(valid.column(source.time_column), _TS_TYPE)
        bounds = pc.min_max(parsed).as_py()
        result.min_time, result.max_time = bounds["min"], bounds["max"]
    return result
