"""Typed values in text columns, vectorised with pyarrow.compute: ISO 8601 timestamps (to UTC instants at
PostgreSQL's microsecond precision) and decimal or integer numbers (within what PostgreSQL's ``numeric``
and ``integer`` hold). Pure functions; the rules that use them are in ``validation``.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ISO_TIMESTAMP = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_HAS_TIME = r"^\d{4}-\d{2}-\d{2}[T ]"
_TIME_PART_WITH_OFFSET = r"[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
DECIMAL = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?\s*$"
INTEGER = r"^\s*[+-]?\d{1,9}\s*$"

_TS_TYPE = pa.timestamp("ns", tz="UTC")
#: PostgreSQL's timestamptz precision: the type of a validated timestamp column.
TIMESTAMPTZ = pa.timestamp("us", tz="UTC")


def null_as(mask: pa.Array, value: bool) -> pa.Array:
    """``mask`` with its nulls replaced by ``value``. Kleene logic rather than ``pc.fill_null``, which is
    about twenty times slower on booleans."""
    if mask.null_count == 0:
        return mask
    return pc.or_kleene(mask, pc.is_null(mask)) if value else pc.and_kleene(mask, pc.is_valid(mask))



def parse_timestamps(values: pa.Array) -> pa.Array:
    """Parse ISO 8601 strings (the shape ``ISO_TIMESTAMP``) to UTC instants, ``timestamp[ns, UTC]``.

    Strings without an offset are UTC; a date alone is midnight UTC. Null where the input is null, not
    of that shape, or not a real instant (month 13, Feb 30, outside Arrow's nanosecond range 1677-2262).
    """
    try:  # fast path: Arrow's ISO 8601 parser takes every value (what it takes always has that shape)
        return pc.cast(values, _TS_TYPE)
    except pa.ArrowInvalid:
        pass
    shaped = null_as(pc.match_substring_regex(values, ISO_TIMESTAMP), False)
    candidates = pc.replace_substring(pc.if_else(shaped, values, pa.scalar(None, pa.string())), "z", "Z")
    has_time = null_as(pc.match_substring_regex(candidates, _HAS_TIME), False)
    with_time = pc.if_else(has_time, candidates, pc.binary_join_element_wise(candidates, "T00:00:00", ""))
    has_offset = null_as(pc.match_substring_regex(with_time, _TIME_PART_WITH_OFFSET), False)
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
        return pc.cast(parsed, TIMESTAMPTZ)  # exact: no value has sub-microsecond digits
    except pa.ArrowInvalid:
        ns = pc.fill_null(pc.cast(parsed, pa.int64()), 0)
        micros = (ns.to_numpy() + 500) // 1000
        mask = pc.is_null(parsed).to_numpy(zero_copy_only=False)
        return pa.array(micros, type=pa.int64(), mask=mask).cast(TIMESTAMPTZ)


def data_bytes(values: pa.Array) -> bytes:
    """The string column's data buffer (all values back to back; may reach past a slice), or b""."""
    buffers = values.buffers()
    data = buffers[2] if len(buffers) > 2 else None
    return b"" if data is None else memoryview(data).cast("B").tobytes()






_INT32_MAX = 2**31 - 1


def parse_numbers(values: pa.Array, integer: bool) -> tuple[pa.Array, pa.Array, pa.Array]:
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
        if fits and (integer or pc.all(null_as(pc.is_finite(number), True)).as_py()):
            out = pc.cast(number, pa.int32()) if integer else values
            return pa.array(np.zeros(len(values), dtype=bool)), pc.cast(number, pa.float64()), out
    except pa.ArrowInvalid:
        pass
    shaped = null_as(pc.match_substring_regex(values, INTEGER if integer else DECIMAL), False)
    cleaned = pc.if_else(shaped, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    number = pc.cast(cleaned, pa.float64())
    out = pc.cast(cleaned, pa.int32()) if integer else cleaned
    return pc.and_(pc.is_valid(values), pc.invert(shaped)), number, out


#: PostgreSQL's numeric: at most 131,072 digits before the decimal point and 16,383 after it
#: (NUMERIC_DSCALE_MAX), and in text input an exponent within +-1000 (NUMERIC_MAX_PRECISION).
NUMERIC_MAX_INTEGER_DIGITS = 131_072
NUMERIC_MAX_SCALE = 16_383
NUMERIC_MAX_EXPONENT = 1_000
SHORT_NUMBER = 40  # characters: a shorter decimal text is always within PostgreSQL's numeric


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


def numeric_unstorable(text: pa.Array) -> pa.Array | None:
    """Mask of decimal texts PostgreSQL's numeric cannot hold (``pg_number``), or None if all fit.
    Only values longer than ``SHORT_NUMBER`` characters are checked one by one."""
    if len(text) == 0 or text.null_count == len(text):
        return None
    long = null_as(pc.greater(pc.utf8_length(text), SHORT_NUMBER), False)
    if not pc.any(long).as_py():
        return None
    mask = np.zeros(len(text), dtype=bool)
    for i in np.flatnonzero(long.to_numpy(zero_copy_only=False)):
        mask[i] = not pg_number(text[int(i)].as_py())
    return pa.array(mask)

