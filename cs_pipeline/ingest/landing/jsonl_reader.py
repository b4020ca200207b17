"""JSON-lines landing files: one JSON object per line, read record by record. A line that is not one
object, not UTF-8, nested deeper than ``MAX_JSON_DEPTH`` or holding an unpaired surrogate escape is
rejected alone (``ParseReject``); the rest of the file loads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path

from cs_pipeline.ingest.jsonb import MAX_JSON_DEPTH, json_deeper_than
from cs_pipeline.ingest.landing.records import RecordBatch, RowBuffer, check_columns, guard, open_landing
from cs_pipeline.ingest.sources import Source


class _NumberOverflow(ValueError):
    """A JSON number too large for a float (``1e999999``): PostgreSQL cannot store it either."""


class _BigNumber:
    """A JSON number that a float cannot hold (its text): ``to_text`` rejects any value holding one."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _BigNumber(text)


def _json_default(value):
    if isinstance(value, _BigNumber):
        raise _NumberOverflow(value.text)
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_text(value) -> str | None:
    """A value read from JSON or Parquet as text: strings as they are, JSON text for objects and lists
    (timestamps in ISO 8601, decimals exact), ``true``/``false`` for booleans.

    Raises:
        _NumberOverflow: a JSON number too large for a float (``1e999999``) anywhere in the value.
    """
    if value is None:
        return None
    if isinstance(value, _BigNumber):
        raise _NumberOverflow(value.text)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    return str(value)


_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value) -> bool:
    if isinstance(value, str):
        return bool(_SURROGATE.search(value))
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _parse_json_line(line: bytes) -> tuple[dict | None, str | None]:
    """(object, None) for a JSON line holding one object, else (None, reason): ``invalid_utf8``,
    ``invalid_json:depth`` (a value nested deeper than ``MAX_JSON_DEPTH``, found before parsing),
    ``invalid_json:surrogate`` or ``invalid_json:record``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    if json_deeper_than(line, MAX_JSON_DEPTH + 1):  # the record's own object is one level
        return None, "invalid_json:depth"
    try:
        obj = json.loads(text, parse_float=_parse_float)
    except RecursionError:
        return None, "invalid_json:depth"
    except ValueError:
        return None, "invalid_json:record"
    if not isinstance(obj, dict):
        return None, "invalid_json:record"
    if _SURROGATE_ESCAPE.search(line) and _has_surrogate(obj):
        return None, "invalid_json:surrogate"
    return obj, None


def _json_lines(path: Path, gz: bool) -> Iterator[bytes]:
    """The non-blank lines of a JSON-lines file as bytes, without line ends; a UTF-8 byte order mark at
    the start of the file is dropped."""
    with open_landing(path, gz) as fh:
        first = True
        for line in fh:
            if first:
                first = False
                if line.startswith(_BOM):
                    line = line[len(_BOM):]
            if not line.strip():
                continue
            yield line.rstrip(b"\r\n")


#: JSON lines read to find a file's columns (the union of their keys).
COLUMN_SCAN_LINES = 1000


def jsonl_batches(path: Path, gz: bool, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
    """Check the JSON-lines file ``path``'s columns and return its record batches (``open_records``).

    Raises:
        LandingFileError: a required column is absent from the keys of the first ``COLUMN_SCAN_LINES``
            objects (read errors are raised by the caller as ``LandingFileError``).
    """
    # The file's columns are the union of the keys of its first objects: a broken or short first
    # line is that record's problem, not the file's.
    keys: dict[str, None] = {}
    seen = 0
    for line in _json_lines(path, gz):
        obj, _ = _parse_json_line(line)
        if obj is not None:
            keys.update(dict.fromkeys(obj))
            seen += 1
            if seen >= COLUMN_SCAN_LINES:
                break
    if seen:
        check_columns(path, source, list(keys))
    return guard(path, _jsonl_stream(path, gz, list(source.column_names), batch_rows))


def _jsonl_stream(path: Path, gz: bool, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    buffer = RowBuffer(columns)
    record = 0
    for line in _json_lines(path, gz):
        record += 1
        obj, reason = _parse_json_line(line)
        row: list[str | None] = []
        if obj is not None:
            for c in columns:
                try:
                    row.append(to_text(obj.get(c)))
                except _NumberOverflow:
                    reason = f"out_of_range:{c}"
                    break
        if reason is not None:
            buffer.reject(record, line, reason)
        else:
            buffer.add(record, row)
        if buffer.size >= batch_rows:
            yield buffer.flush()
    yield buffer.flush()
