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

Timestamps without an offset are UTC. Valid records come out typed for the raw table (see
``load_schema``): timestamps as UTC instants rounded to the microsecond (PostgreSQL's precision), integers
as int32, everything else as text. A ``jsonb`` value passes only if PostgreSQL's ``jsonb`` accepts it too:
a JSON object without ``NaN``/``Infinity``, ``\\u0000`` or unpaired surrogate escapes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from cs_pipeline.ingest.sources import Column, Source

ISO_TIMESTAMP = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_HAS_TIME = r"^\d{4}-\d{2}-\d{2}[T ]"
_TIME_PART_WITH_OFFSET = r"[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
DECIMAL = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?\s*$"
INTEGER = r"^\s*[+-]?\d{1,9}\s*$"

_TS_TYPE = pa.timestamp("ns", tz="UTC")

#: Arrow type of each column type in a validated batch: numeric stays exact decimal text and jsonb stays
#: JSON text (PostgreSQL parses both); timestamps are UTC instants at PostgreSQL's microsecond precision.
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "jsonb": pa.string(),
    "numeric": pa.string(),
    "integer": pa.int32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
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


def _null_as(mask: pa.Array, value: bool) -> pa.Array:
    """``mask`` with its nulls replaced by ``value``. Kleene logic rather than ``pc.fill_null``, which is
    about twenty times slower on booleans."""
    if mask.null_count == 0:
        return mask
    return pc.or_kleene(mask, pc.is_null(mask)) if value else pc.and_kleene(mask, pc.is_valid(mask))


def _day_bounds(day: date) -> tuple[pa.Scalar, pa.Scalar]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    us = ARROW_TYPES["timestamptz"]
    return pa.scalar(start, type=us), pa.scalar(start + timedelta(days=1), type=us)


def parse_timestamps(values: pa.Array) -> pa.Array:
    """Parse ISO 8601 strings (the shape ``ISO_TIMESTAMP``) to UTC instants, ``timestamp[ns, UTC]``.

    Strings without an offset are UTC; a date alone is midnight UTC. Null where the input is null, not
    of that shape, or not a real instant (month 13, Feb 30, outside Arrow's nanosecond range 1677-2262).
    """
    try:  # fast path: Arrow's ISO 8601 parser takes every value (what it takes always has that shape)
        return pc.cast(values, _TS_TYPE)
    except pa.ArrowInvalid:
        pass
    shaped = _null_as(pc.match_substring_regex(values, ISO_TIMESTAMP), False)
    candidates = pc.replace_substring(pc.if_else(shaped, values, pa.scalar(None, pa.string())), "z", "Z")
    has_time = _null_as(pc.match_substring_regex(candidates, _HAS_TIME), False)
    with_time = pc.if_else(has_time, candidates, pc.binary_join_element_wise(candidates, "T00:00:00", ""))
    has_offset = _null_as(pc.match_substring_regex(with_time, _TIME_PART_WITH_OFFSET), False)
    text = pc.if_else(has_offset, with_time, pc.binary_join_element_wise(with_time, "Z", ""))
    try:
        return pc.cast(text, _TS_TYPE)
    except pa.ArrowInvalid:
        # Rare: a well-shaped but impossible instant (month 13, Feb 30). Parse one by one.
        parsed = []
        for item in text.to_pylist():
            try:
                parsed.append(None if item is None else pc.cast(pa.array([item]), _TS_TYPE)[0].as_py())
            except pa.ArrowInvalid:
                parsed.append(None)
        return pa.array(parsed, type=_TS_TYPE)


def to_microseconds(parsed: pa.Array) -> pa.Array:
    """``timestamp[ns, UTC]`` -> ``timestamp[us, UTC]``, rounding half up to the microsecond as
    PostgreSQL's timestamptz input does (it keeps microseconds)."""
    try:
        return pc.cast(parsed, ARROW_TYPES["timestamptz"])  # exact: no value has sub-microsecond digits
    except pa.ArrowInvalid:
        ns = pc.fill_null(pc.cast(parsed, pa.int64()), 0)
        micros = (ns.to_numpy() + 500) // 1000
        mask = pc.is_null(parsed).to_numpy(zero_copy_only=False)
        return pa.array(micros, type=pa.int64(), mask=mask).cast(ARROW_TYPES["timestamptz"])


def _data_bytes(values: pa.Array) -> bytes:
    """The string column's data buffer (all values back to back; may reach past a slice), or b""."""
    buffers = values.buffers()
    data = buffers[2] if len(buffers) > 2 else None
    return b"" if data is None else memoryview(data).cast("B").tobytes()


def _has_nul(values: pa.Array, data: bytes) -> pa.Array | None:
    """Mask of values containing a NUL byte, or None when ``data`` (``_data_bytes(values)``) has none."""
    if data.find(b"\x00") < 0:
        return None
    return _null_as(pc.match_substring(values, "\x00"), False)


_INT32_MAX = 2**31 - 1


def _numbers(values: pa.Array, integer: bool) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(failing-mask, float64 values, output) for decimal or integer text.

    NaN and infinities fail; integers must fit PostgreSQL's ``integer`` (at most 9 digits on the slow
    path, within int32 on the fast one). The output is int32 for integers and the trimmed text for
    decimals (PostgreSQL's numeric keeps its scale exactly); null where failing.
    """
    target = pa.int64() if integer else pa.float64()
    try:  # fast path: Arrow's parser accepts every value
        number = pc.cast(values, target)
        bounds = pc.min_max(number).as_py()
        fits = not integer or bounds["min"] is None or (-_INT32_MAX <= bounds["min"] and bounds["max"] <= _INT32_MAX)
        if fits and (integer or pc.all(_null_as(pc.is_finite(number), True)).as_py()):
            out = pc.cast(number, pa.int32()) if integer else values
            return pa.array(np.zeros(len(values), dtype=bool)), pc.cast(number, pa.float64()), out
    except pa.ArrowInvalid:
        pass
    shaped = _null_as(pc.match_substring_regex(values, INTEGER if integer else DECIMAL), False)
    cleaned = pc.if_else(shaped, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    number = pc.cast(cleaned, pa.float64())
    out = pc.cast(cleaned, pa.int32()) if integer else cleaned
    return pc.and_(pc.is_valid(values), pc.invert(shaped)), number, out


#: PostgreSQL's numeric: at most 131,072 digits before the decimal point and 16,383 after it
#: (NUMERIC_DSCALE_MAX), and in text input an exponent within +-1000 (NUMERIC_MAX_PRECISION).
NUMERIC_MAX_INTEGER_DIGITS = 131_072
NUMERIC_MAX_SCALE = 16_383
NUMERIC_MAX_EXPONENT = 1_000
_SHORT_NUMBER = 40  # characters: a shorter decimal text is always within PostgreSQL's numeric


def pg_number(text: str) -> bool:
    """True if the decimal number ``text`` (already of the ``DECIMAL`` or JSON number shape) fits
    PostgreSQL's ``numeric``: integer digits, scale and written exponent within the limits above."""
    try:
        value = Decimal(text.strip())
    except ArithmeticError:
        return False
    if not value.is_finite():
        return False
    mantissa = text.strip().lower().partition("e")
    if mantissa[2] and abs(int(mantissa[2])) > NUMERIC_MAX_EXPONENT:
        return False
    sign, digits, exponent = value.as_tuple()
    integer_digits = len(digits) + exponent
    scale = max(0, -exponent)
    return integer_digits <= NUMERIC_MAX_INTEGER_DIGITS and scale <= NUMERIC_MAX_SCALE


def _numeric_unstorable(text: pa.Array) -> pa.Array | None:
    """Mask of decimal texts PostgreSQL's numeric cannot hold (``pg_number``), or None if all fit.
    Only values longer than ``_SHORT_NUMBER`` characters are checked one by one."""
    if len(text) == 0 or text.null_count == len(text):
        return None
    long = _null_as(pc.greater(pc.utf8_length(text), _SHORT_NUMBER), False)
    if not pc.any(long).as_py():
        return None
    mask = np.zeros(len(text), dtype=bool)
    for i in np.flatnonzero(long.to_numpy(zero_copy_only=False)):
        mask[i] = not pg_number(text[int(i)].as_py())
    return pa.array(mask)


class _NotJson(ValueError):
    pass


def _json_number(text: str) -> Decimal:
    if not pg_number(text):
        raise _NotJson(f"{text[:40]} is outside PostgreSQL's numeric")
    return Decimal(text)


def _reject_constant(name: str) -> None:
    raise _NotJson(f"{name} is not JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _pg_text(value) -> bool:
    """True if every string (and key) in a decoded JSON value is text PostgreSQL can store: no NUL
    (from ``\\u0000``) and no unpaired surrogate."""
    if isinstance(value, str):
        return "\x00" not in value and not _SURROGATE.search(value)
    if isinstance(value, dict):
        return all(_pg_text(k) and _pg_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_pg_text(v) for v in value)
    return True


def pg_json_object(text: str) -> bool:
    """True if ``text`` is a JSON object that PostgreSQL's ``jsonb`` accepts (no ``NaN``/``Infinity``,
    no ``\\u0000``, no unpaired surrogate escape, no number outside ``numeric`` (``pg_number``), nesting
    within Python's recursion limit)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_json_number, parse_int=_json_number)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and _pg_text(value)


# Tokens the fast JSON parser accepts but PostgreSQL's jsonb does not: values holding one are checked alone.
_JSON_RISKY = (b"NaN", b"Infinity", b"\\u0000", b"\\ud", b"\\uD")
_JSON_RISKY_PATTERN = re.compile(rb"[eE][+-]?\d{4}|\d{%d}" % _SHORT_NUMBER)
#: Values with this many ``{``/``[`` or more are parsed alone (Python's parser refuses deep nesting;
#: Arrow's accepts any depth, and PostgreSQL's jsonb input then runs out of stack).
_JSON_DEEP = 64
_JSON_PARSE = pajson.ParseOptions(explicit_schema=pa.schema([]), unexpected_field_behavior="ignore")


def _json_objects(values: pa.Array, data: bytes) -> pa.Array:
    """Boolean per value: null, or a JSON object PostgreSQL's ``jsonb`` accepts (``pg_json_object``).

    Fast path: values that start with ``{`` and end with ``}`` are parsed together as JSON lines by
    Arrow's C++ parser; if it reads them all as exactly one object each, they pass. Values holding a line
    break, a NUL byte or a risky token (``_JSON_RISKY``), and all values when the fast path fails, are
    checked alone. ``data`` is ``_data_bytes(values)``.
    """
    n = len(values)
    ok = np.ones(n, dtype=bool)
    if values.null_count == n:
        return pa.array(ok)
    candidate = _null_as(pc.and_(pc.starts_with(values, "{"), pc.ends_with(values, "}")), False)
    for token in (b"\n", b"\r", b"\x00", *_JSON_RISKY):
        if data.find(token) >= 0:
            holds = _null_as(pc.match_substring(values, token.decode()), False)
            candidate = pc.and_(candidate, pc.invert(holds))
    if _JSON_RISKY_PATTERN.search(data):  # long numbers, large exponents
        holds = _null_as(pc.match_substring_regex(values, _JSON_RISKY_PATTERN.pattern.decode()), False)
        candidate = pc.and_(candidate, pc.invert(holds))
    # Every candidate holds at least one bracket, so only a surplus of _JSON_DEEP can hide a deep value.
    if data.count(b"{") + data.count(b"[") - (n - values.null_count) >= _JSON_DEEP - 1:
        deep = _null_as(pc.greater_equal(pc.count_substring_regex(values, r"[\[{]"), _JSON_DEEP), False)
        candidate = pc.and_(candidate, pc.invert(deep))
    alone = pc.and_(pc.is_valid(values), pc.invert(candidate)).to_numpy(zero_copy_only=False)
    fast = pc.filter(values, candidate)
    if len(fast):
        lines = pc.binary_join_element_wise(fast, "", "\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
        buffer = lines.buffers()[2][offsets[0]:offsets[-1]]
        try:
            parsed = pajson.read_json(
                pa.BufferReader(buffer),
                read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(buffer), 1 << 16)),
                parse_options=_JSON_PARSE,
            ).num_rows
        except pa.ArrowInvalid:
            parsed = -1
        if parsed != len(fast):  # a value that is not exactly one object: check every value alone
            alone = pc.is_valid(values).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(alone):
        ok[i] = pg_json_object(values[int(i)].as_py())
    return pa.array(ok)


def _column_checks(
    column: Column, values: pa.Array, day: date
) -> tuple[list[tuple[str, pa.Array]], pa.Array]:
    """(rule, failing-mask) pairs for one column in rule order, and the column's output values
    (typed by ``ARROW_TYPES``)."""
    checks: list[tuple[str, pa.Array]] = []
    present = pc.is_valid(values)
    if column.required:
        blank = _null_as(pc.utf8_is_space(values), True) if values.null_count < len(values) else pc.is_null(values)
        checks.append((f"missing_required:{column.name}", blank))
    data = _data_bytes(values)
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
            after = _null_as(pc.greater_equal(out, end), False)
            outside = after if column.day_window == "not_after" else pc.or_(
                after, _null_as(pc.less(out, start), False)
            )
            checks.append((f"outside_partition_day:{column.name}", outside))
    elif column.type in ("numeric", "integer"):
        failing, number, out = _numbers(values, column.type == "integer")
        checks.append((f"invalid_number:{column.name}", failing))
        bad = None
        if column.min_value is not None or column.max_value is not None:
            too_low = pc.less(number, column.min_value) if column.min_value is not None else None
            too_high = pc.greater(number, column.max_value) if column.max_value is not None else None
            bad = too_low if too_high is None else too_high if too_low is None else pc.or_(too_low, too_high)
        if column.type == "numeric":
            unstorable = _numeric_unstorable(out)
            if unstorable is not None:
                bad = unstorable if bad is None else pc.or_kleene(bad, unstorable)
        if bad is not None:
            checks.append((f"out_of_range:{column.name}", _null_as(bad, False)))
    elif column.type == "jsonb":
        checks.append((f"invalid_json:{column.name}", pc.invert(_json_objects(values, data))))
    if column.allowed is not None:
        member = pc.is_in(values, value_set=pa.array(column.allowed, type=pa.string()))
        checks.append((f"invalid_enum:{column.name}", pc.and_(present, pc.invert(member))))
    if column.pattern is not None:
        matches = _null_as(pc.match_substring_regex(values, column.pattern), False)
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
