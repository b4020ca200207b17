"""The landing zone: finding a source's file for a day and streaming its records in batches.

File names are ``<source>_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]`` (DOMAIN.md). Every reader yields
``RecordBatch`` objects whose columns are the source's columns present in the file, all as Arrow
strings (null for blank), with the 1-based record number of each row, plus the records that could not
be parsed at all. Memory is bounded by the batch size, not the file size.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cs_pipeline.ingest.sources import Source

FORMATS = ("csv", "jsonl", "parquet")
DEFAULT_BATCH_ROWS = 250_000


class LandingFileError(ValueError):
    """A landing file is missing, unreadable, or lacks required columns; the message names the file."""


#: Largest CSV field the Python reader takes (characters); a larger one fails the file (``LandingFileError``).
MAX_CSV_FIELD_CHARS = 256 << 20

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(raw: str | bytes) -> str:
    """``raw`` as text PostgreSQL can store: unchanged when it can be; otherwise with each NUL, byte of
    invalid UTF-8 and unpaired surrogate written as a Python backslash escape (``\\x00``, ``\\xff``,
    ``\\ud800``). For ``raw_record`` of ``raw.rejected_rows``: the original stays inspectable.

    ``str`` input may carry invalid bytes as ``surrogateescape`` code points (U+DC80..U+DCFF), as read
    with ``errors="surrogateescape"``; they come out as ``\\xNN``.
    """
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "backslashreplace")
    else:
        if not _UNSTORABLE.search(raw):
            return raw
        try:
            text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF: a lone surrogate from JSON
            text = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


class CsvNeedsPythonReader(Exception):
    """Arrow's CSV reader refused the file (invalid UTF-8, a record longer than its block); the loader
    reloads it with the record-by-record reader (``open_records(..., csv_engine="python")``)."""


@dataclass
class ParseReject:
    """A record that could not be parsed into columns, with its reason: ``unparseable_record`` (wrong
    number of fields), ``invalid_utf8`` (bytes that are not UTF-8), ``invalid_json:record`` (a JSON line
    that is not one object), ``invalid_json:depth`` (nested deeper than the parser's recursion limit),
    ``invalid_json:surrogate`` (an unpaired ``\\ud800``-style escape), ``out_of_range:<column>`` (a JSON
    number PostgreSQL cannot hold), ``duplicate_column:<column>`` (a Parquet file with two columns of
    that name that disagree). ``raw_record`` is ``storable_text`` of the record as read."""

    record_number: int
    raw_record: str
    reason: str

    def __post_init__(self) -> None:
        self.raw_record = storable_text(self.raw_record)


@dataclass
class RecordBatch:
    """A batch of records: ``table`` (string columns) and ``record_numbers`` (int64, 1-based)."""

    table: pa.Table
    record_numbers: np.ndarray
    parse_rejects: list[ParseReject] = field(default_factory=list)


def landing_file_name(source: str, day: date, fmt: str = "csv", gz: bool = False) -> str:
    """``<source>_<YYYY-MM-DD>.<fmt>[.gz]``."""
    return f"{source}_{day.isoformat()}.{fmt}{'.gz' if gz else ''}"


def find_landing_file(landing_dir: Path, source: str, day: date) -> Path:
    """The one landing file of ``source`` for ``day`` in ``landing_dir``.

    Raises:
        LandingFileError: no file, or more than one (for example both .csv and .jsonl).
    """
    candidates = [
        landing_dir / landing_file_name(source, day, fmt, gz) for fmt in FORMATS for gz in (False, True)
    ]
    found = [p for p in candidates if p.exists()]
    if not found:
        raise LandingFileError(
            f"missing landing file for {source} on {day.isoformat()}: expected "
            f"{landing_file_name(source, day)} (or .jsonl/.parquet, optionally .gz) in {landing_dir}"
        )
    if len(found) > 1:
        raise LandingFileError(
            f"ambiguous landing files for {source} on {day.isoformat()}: {', '.join(p.name for p in found)}"
        )
    return found[0]


def _format_of(path: Path) -> tuple[str, bool]:
    name = path.name
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    fmt = base.rsplit(".", 1)[-1]
    if fmt not in FORMATS:
        raise LandingFileError(f"{path}: unsupported file type (expected .csv, .jsonl or .parquet, optionally .gz)")
    return fmt, gz


def _check_columns(path: Path, source: Source, present: list[str]) -> list[str]:
    missing = [c for c in source.required_columns if c not in present]
    if missing:
        raise LandingFileError(
            f"{path}: required column(s) missing: {', '.join(missing)} (found: {', '.join(present) or 'none'})"
        )
    return [c for c in source.column_names if c in present]


def open_records(
    path: Path, source: Source, batch_rows: int = DEFAULT_BATCH_ROWS, csv_engine: str = "arrow"
) -> Iterator[RecordBatch]:
    """Check ``path`` and return an iterator over its record batches.

    The file's existence, readability and required columns are checked before this returns, so a
    caller can fail before changing anything. Errors met later (a truncated gzip stream) raise
    ``LandingFileError`` from the iterator.

    CSV is read by Arrow (``csv_engine="arrow"``); when Arrow refuses the data (invalid UTF-8, a record
    longer than its 1 MiB block) the iterator raises ``CsvNeedsPythonReader`` and the caller reads the
    file again with ``csv_engine="python"``, which quarantines such records one by one.

    Raises:
        LandingFileError: missing or unreadable file, unsupported type, or required columns absent.
    """
    if not path.is_file():
        raise LandingFileError(f"{path}: file not found")
    fmt, gz = _format_of(path)
    try:
        if fmt == "csv":
            return _csv_batches(path, gz, source, batch_rows, csv_engine)
        if fmt == "jsonl":
            return _jsonl_batches(path, gz, source, batch_rows)
        return _parquet_batches(path, source, batch_rows)
    except LandingFileError:
        raise
    except (OSError, EOFError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise LandingFileError(f"{path}: unreadable: {exc}") from exc


def _guard(path: Path, batches: Iterator[RecordBatch], arrow_csv: bool = False) -> Iterator[RecordBatch]:
    try:
        yield from batches
    except LandingFileError:
        raise
    except pa.ArrowInvalid as exc:
        if arrow_csv:
            raise CsvNeedsPythonReader(str(exc)) from exc
        raise LandingFileError(f"{path}: unreadable: {exc}") from exc
    except (OSError, EOFError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise LandingFileError(f"{path}: unreadable: {exc}") from exc


# --- CSV -------------------------------------------------------------------------------------------


def _csv_header(path: Path, gz: bool) -> list[str]:
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:  # the first line only: bytes further on are the records' business
        line = fh.readline().decode("utf-8-sig")
    if not line.strip():
        raise LandingFileError(f"{path}: no header row (empty file)")
    return [h.strip() for h in next(csv.reader([line]))]


def _csv_batches(path: Path, gz: bool, source: Source, batch_rows: int, engine: str) -> Iterator[RecordBatch]:
    header = _csv_header(path, gz)
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise LandingFileError(f"{path}: duplicate column(s) in header: {', '.join(sorted(dupes))}")
    columns = _check_columns(path, source, header)
    if engine == "python":
        return _guard(path, _csv_python_stream(path, gz, header, columns, batch_rows))
    return _guard(path, _csv_stream(path, gz, columns, batch_rows), arrow_csv=True)


def _csv_stream(path: Path, gz: bool, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        # Parsed on one thread, row.number is the physical line number (header = line 1).
        invalid.append((row.number - 1, row.text))
        return "skip"

    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    reader = pacsv.open_csv(
        stream,
        # One thread, so that unparseable rows carry their line numbers. Arrow's streaming reader
        # reads about 35 blocks ahead: small blocks keep memory flat.
        read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )
    good_seen = 0
    invalid_seen = 0
    invalid_numbers = np.empty(0, dtype=np.int64)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def emit() -> RecordBatch:
        nonlocal good_seen, invalid_seen, pending, pending_rows, invalid_numbers
        table = pa.Table.from_batches(pending) if pending else _empty(columns)
        pending, pending_rows = [], 0
        new_invalid = invalid[invalid_seen:]
        invalid_seen = len(invalid)
        if new_invalid:
            invalid_numbers = np.concatenate([invalid_numbers, np.asarray([n for n, _ in new_invalid], dtype=np.int64)])
        numbers = _interleave(good_seen, table.num_rows, invalid_numbers)
        good_seen += table.num_rows
        return RecordBatch(table, numbers, [ParseReject(n, text, "unparseable_record") for n, text in new_invalid])

    with stream:
        for chunk in reader:
            pending.append(chunk)
            pending_rows += chunk.num_rows
            if pending_rows >= batch_rows:
                yield emit()
        if pending or invalid_seen < len(invalid):
            yield emit()


class _RowBuffer:
    """Rows and rejects of the record-by-record readers (CSV fallback, JSON lines), emptied into one
    ``RecordBatch`` of text columns at a time. Empty strings are stored as null."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.values: dict[str, list[str | None]] = {c: [] for c in columns}
        self.numbers: list[int] = []
        self.rejects: list[ParseReject] = []

    @property
    def size(self) -> int:
        """Records held: loaded plus rejected."""
        return len(self.numbers) + len(self.rejects)

    def add(self, record: int, row: list[str | None]) -> None:
        """Keep record ``record`` with one text value per column (in ``columns`` order)."""
        for column, value in zip(self.columns, row, strict=True):
            self.values[column].append(value if value != "" else None)
        self.numbers.append(record)

    def reject(self, record: int, raw, reason: str) -> None:
        """Quarantine record ``record`` (its raw text or bytes) with ``reason``."""
        self.rejects.append(ParseReject(record, raw, reason))

    def flush(self) -> RecordBatch:
        """What is held as one batch; the buffer starts empty again."""
        table = pa.table({c: pa.array(self.values[c], type=pa.string()) for c in self.columns}) \
            if self.columns else _empty(self.columns)
        batch = RecordBatch(table, np.asarray(self.numbers, dtype=np.int64), list(self.rejects))
        self.values = {c: [] for c in self.columns}
        self.numbers, self.rejects = [], []
        return batch


def _csv_python_stream(
    path: Path, gz: bool, header: list[str], columns: list[str], batch_rows: int
) -> Iterator[RecordBatch]:
    """Record-by-record CSV reader for files Arrow refuses: a record with bytes that are not UTF-8 is
    rejected (``invalid_utf8``), one with the wrong number of fields is ``unparseable_record``; fields
    of any length up to ``MAX_CSV_FIELD_CHARS`` load. Blank lines are skipped, as Arrow does."""
    index = {c: header.index(c) for c in columns}
    width = len(header)
    buffer = _RowBuffer(columns)
    record = 0
    previous_limit = csv.field_size_limit()
    csv.field_size_limit(max(previous_limit, MAX_CSV_FIELD_CHARS))
    opener = gzip.open if gz else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)  # the header
            for fields in reader:
                if not fields:
                    continue
                record += 1
                if _ESCAPED_BYTE.search("".join(fields)):
                    buffer.reject(record, _csv_record(fields), "invalid_utf8")
                elif len(fields) != width:
                    buffer.reject(record, _csv_record(fields), "unparseable_record")
                else:
                    buffer.add(record, [fields[index[c]] for c in columns])
                if buffer.size >= batch_rows:
                    yield buffer.flush()
    except csv.Error as exc:
        raise LandingFileError(f"{path}: unreadable CSV near record {record + 1}: {exc}") from exc
    finally:
        csv.field_size_limit(previous_limit)
    yield buffer.flush()


#: An undecodable byte in text read with ``errors="surrogateescape"``.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _csv_record(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _interleave(good_before: int, count: int, invalid_numbers) -> np.ndarray:
    """Record numbers of ``count`` good rows that follow ``good_before`` good rows, skipping the
    record numbers taken by unparseable rows (``invalid_numbers``, 1-based).

    O((count + len(invalid_numbers)) log): the k-th good record (1-based) is k plus the number of
    unparseable records before it, and unparseable record i (0-based, sorted) has ``b_i - i - 1``
    good records before it, so it precedes good record k exactly when ``b_i - i <= k``.
    """
    ks = np.arange(good_before + 1, good_before + count + 1, dtype=np.int64)
    bad = np.unique(np.asarray(invalid_numbers, dtype=np.int64))
    bad = bad[bad > 0]
    if not len(bad):
        return ks
    return ks + np.searchsorted(bad - np.arange(len(bad), dtype=np.int64), ks, side="right")


def _empty(columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array([], type=pa.string()) for c in columns})


# --- JSON lines ------------------------------------------------------------------------------------


class _NumberOverflow(ValueError):
    """A JSON number too large for a float (``1e999999``): PostgreSQL cannot store it either."""


class _BigNumber:
    """A JSON number that a float cannot hold (its text): ``_to_text`` rejects any value holding one."""

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


def _to_text(value) -> str | None:
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
    ``invalid_json:depth``, ``invalid_json:surrogate`` or ``invalid_json:record``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
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
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
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


def _jsonl_batches(path: Path, gz: bool, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
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
        _check_columns(path, source, list(keys))
    return _guard(path, _jsonl_stream(path, gz, list(source.column_names), batch_rows))


def _jsonl_stream(path: Path, gz: bool, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    buffer = _RowBuffer(columns)
    record = 0
    for line in _json_lines(path, gz):
        record += 1
        obj, reason = _parse_json_line(line)
        row: list[str | None] = []
        if obj is not None:
            for c in columns:
                try:
                    row.append(_to_text(obj.get(c)))
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


# --- Parquet ---------------------------------------------------------------------------------------


def _parquet_batches(path: Path, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
    try:
        parquet = pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise LandingFileError(f"{path}: unreadable parquet: {exc}") from exc
    columns = _check_columns(path, source, parquet.schema_arrow.names)
    return _guard(path, _parquet_stream(parquet, columns, batch_rows))


def _column_as_text(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array).cast(pa.string())
    if pa.types.is_timestamp(array.type):
        if array.type.tz is None:
            array = pc.assume_timezone(array, "UTC")
        return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S%z")
    if pa.types.is_struct(array.type) or pa.types.is_map(array.type) or pa.types.is_list(array.type):
        return pa.array([_to_text(v) for v in array.to_pylist()], type=pa.string())
    if pa.types.is_boolean(array.type):
        return pc.if_else(array, "true", "false")
    return array.cast(pa.string())


def _parquet_stream(parquet: pq.ParquetFile, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    """Parquet record batches as text columns. A column name that appears twice is read from both
    columns: records where they agree load; the others are rejected as ``duplicate_column:<c>``."""
    record = 0
    emitted = False
    for chunk in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        texts: dict[str, pa.Array] = {}
        disagree = np.zeros(chunk.num_rows, dtype=bool)
        reasons = np.full(chunk.num_rows, None, dtype=object)
        for c in columns:
            copies = [_column_as_text(chunk.column(i)) for i in chunk.schema.get_all_field_indices(c)]
            texts[c] = copies[0]
            for other in copies[1:]:
                same = _null_as_false(pc.equal(copies[0], other))
                both_null = pc.and_(pc.is_null(copies[0]), pc.is_null(other))
                differs = ~pc.or_(same, both_null).to_numpy(zero_copy_only=False)
                reasons[differs & (reasons == None)] = f"duplicate_column:{c}"  # noqa: E711
                disagree |= differs
        table = pa.table(texts)
        numbers = np.arange(record + 1, record + table.num_rows + 1, dtype=np.int64)
        record += table.num_rows
        emitted = True
        rejects: list[ParseReject] = []
        if disagree.any():
            bad = np.flatnonzero(disagree)
            raw = _rows_text(chunk, bad)
            rejects = [ParseReject(int(numbers[i]), text, reasons[i]) for i, text in zip(bad, raw, strict=True)]
            keep = pa.array(~disagree)
            table, numbers = table.filter(keep), numbers[~disagree]
        yield RecordBatch(table, numbers, rejects)
    if not emitted:
        yield RecordBatch(_empty(columns), np.empty(0, dtype=np.int64))


def _null_as_false(mask: pa.Array) -> pa.Array:
    return pc.and_kleene(mask, pc.is_valid(mask)) if mask.null_count else mask


def _rows_text(chunk: pa.RecordBatch, rows: np.ndarray) -> list[str]:
    """Rows of a Parquet batch as JSON arrays of their values (all columns, duplicates included)."""
    names = chunk.schema.names
    columns = [_column_as_text(chunk.column(i)).take(pa.array(rows)).to_pylist() for i in range(len(names))]
    return [json.dumps([[n, col[k]] for n, col in zip(names, columns, strict=True)], ensure_ascii=False)
            for k in range(len(rows))]
