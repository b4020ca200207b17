"""What PostgreSQL's ``jsonb`` accepts, checked in Python before a value reaches the database: a JSON
object without ``NaN``/``Infinity``, ``\\u0000`` or unpaired surrogate escapes, no number outside
``numeric``, and nested no deeper than ``MAX_JSON_DEPTH``. The depth is measured without parsing
(``json_deeper_than``: iterative, so no ``RecursionError`` whatever the input), because Python's parser and
PostgreSQL's jsonb input both recurse once per level.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from cs_pipeline.ingest.values import SHORT_NUMBER, null_as, pg_number

#: Deepest nesting of objects and arrays a JSON value may have (a scalar is 0, ``{}`` and ``[]`` are 1,
#: ``{"a": [1]}`` is 2); a deeper value is rejected as ``invalid_json:depth``. A JSON-lines record is one
#: level more: its columns are the values.
MAX_JSON_DEPTH = 64

#: A JSON string (skipped whole: brackets inside strings do not nest) or one bracket.
_TOKENS = {str: re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S),
           bytes: re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)}
_OPEN = {str: ("[", "{"), bytes: (b"[", b"{")}
_CLOSE = {str: ("]", "}"), bytes: (b"]", b"}")}


def json_deeper_than(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text ``text`` nests objects and arrays more than ``limit`` levels deep at some
    point (brackets inside strings do not count). Iterative and linear in the length of ``text``; a
    text with ``limit`` brackets or fewer is answered without scanning. Malformed JSON is measured the
    same way (the parser then rejects it for its own reasons)."""
    kind = bytes if isinstance(text, bytes | bytearray) else str
    opening = _OPEN[kind]
    if text.count(opening[0]) + text.count(opening[1]) <= limit:
        return False
    closing = _CLOSE[kind]
    depth = 0
    for match in _TOKENS[kind].finditer(text):
        token = match.group()
        if token in opening:
            depth += 1
            if depth > limit:
                return True
        elif token in closing:
            depth = max(depth - 1, 0)
    return False


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
    no ``\\u0000``, no unpaired surrogate escape, no number outside ``numeric`` (``pg_number``),
    nesting within ``MAX_JSON_DEPTH``, checked first and iteratively)."""
    if json_deeper_than(text):
        return False
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_json_number, parse_int=_json_number)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and _pg_text(value)


# Tokens the fast JSON parser accepts but PostgreSQL's jsonb does not: values holding one are checked alone.
_JSON_RISKY = (b"NaN", b"Infinity", b"\\u0000", b"\\ud", b"\\uD")
_JSON_RISKY_PATTERN = re.compile(rb"[eE][+-]?\d{4}|\d{%d}" % SHORT_NUMBER)
#: Values with this many ``{``/``[`` or more are parsed alone (Python's parser refuses deep nesting;
#: Arrow's accepts any depth, and PostgreSQL's jsonb input then runs out of stack).
_JSON_DEEP = 64
_JSON_PARSE = pajson.ParseOptions(explicit_schema=pa.schema([]), unexpected_field_behavior="ignore")


def json_objects(values: pa.Array, data: bytes) -> pa.Array:
    """Boolean per value: null, or a JSON object PostgreSQL's ``jsonb`` accepts (``pg_json_object``).

    Fast path: values that start with ``{`` and end with ``}`` are parsed together as JSON lines by
    Arrow's C++ parser; if it reads them all as exactly one object each, they pass. Values holding a line
    break, a NUL byte or a risky token (``_JSON_RISKY``), and all values when the fast path fails, are
    checked alone. ``data`` is ``data_bytes(values)``.
    """
    n = len(values)
    ok = np.ones(n, dtype=bool)
    if values.null_count == n:
        return pa.array(ok)
    candidate = null_as(pc.and_(pc.starts_with(values, "{"), pc.ends_with(values, "}")), False)
    for token in (b"\n", b"\r", b"\x00", *_JSON_RISKY):
        if data.find(token) >= 0:
            holds = null_as(pc.match_substring(values, token.decode()), False)
            candidate = pc.and_(candidate, pc.invert(holds))
    if _JSON_RISKY_PATTERN.search(data):  # long numbers, large exponents
        holds = null_as(pc.match_substring_regex(values, _JSON_RISKY_PATTERN.pattern.decode()), False)
        candidate = pc.and_(candidate, pc.invert(holds))
    # Every candidate holds at least one bracket, so only a surplus of _JSON_DEEP can hide a deep value.
    if data.count(b"{") + data.count(b"[") - (n - values.null_count) >= _JSON_DEEP - 1:
        deep = null_as(pc.greater_equal(pc.count_substring_regex(values, r"[\[{]"), _JSON_DEEP), False)
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

