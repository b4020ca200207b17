"""The landing zone: finding a source's file for a day and streaming its records in batches.

File names are ``<source>_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]`` (DOMAIN.md). Every reader yields
``RecordBatch`` objects whose columns are the source's columns present in the file, all as Arrow
strings (null for blank), with the 1-based record number of each row, plus the records that could not
be parsed at all. Memory is bounded by the batch size, not the file size.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cs_pipeline.ingest.sources import Source

FILE_PATTERN = re.compile(
    r"^(?P<source>[a-z_]+)_(?P<day>\d{4}-\d{2}-\d{2})\.(?P<format>csv|jsonl|parquet)(?P<gz>\.gz)?$"
)
FORMATS = ("csv", "jsonl", "parquet")
DEFAULT_BATCH_ROWS = 250_000


class LandingFileError(ValueError):
    """A landing file is missing, unreadable, or lacks required columns; the message names the file."""


@dataclass
class ParseReject:
    """A record that could not be parsed into columns (``unparseable_record`` or ``invalid_json``)."""

    record_number: int
    raw_record: str
    reason: str


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


def open_records(path: Path, source: Source, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[RecordBatch]:
    """Check ``path`` and return an iterator over its record batches.

    The file's existence, readability and required columns are checked before this returns, so a
    caller can fail before changing anything. Errors met later (a truncated gzip stream) raise
    ``LandingFileError`` from the iterator.

    Raises:
        LandingFileError: missing or unreadable file, unsupported type, or required columns absent.
    """
    if not path.is_file():
        raise LandingFileError(f"{path}: file not found")
    fmt, gz = _format_of(path)
    try:
        if fmt == "csv":
            return _csv_batches(path, gz, source, batch_rows)
        if fmt == "jsonl":
            return _jsonl_batches(path, gz, source, batch_rows)
        return _parquet_batches(path, source, batch_rows)
    except LandingFileError:
        raise
    except (OSError, EOFError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise LandingFileError(f"{path}: unreadable: {exc}") from exc


def _guard(path: Path, batches: Iterator[RecordBatch]) -> Iterator[RecordBatch]:
    try:
        yield from batches
    except LandingFileError:
        raise
    except (OSError, EOFError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise LandingFileError(f"{path}: unreadable: {exc}") from exc


# --- CSV -------------------------------------------------------------------------------------------


def _csv_header(path: Path, gz: bool) -> list[str]:
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        line = fh.readline()
    if not line.strip():
        raise LandingFileError(f"{path}: no header row (empty file)")
    return [h.strip() for h in next(csv.reader([line]))]


def _csv_batches(path: Path, gz: bool, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
    header = _csv_header(path, gz)
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise LandingFileError(f"{path}: duplicate column(s) in header: {', '.join(sorted(dupes))}")
    columns = _check_columns(path, source, header)
    return _guard(path, _csv_stream(path, gz, columns, batch_rows))


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
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def emit() -> RecordBatch:
        nonlocal good_seen, invalid_seen, pending, pending_rows
        table = pa.Table.from_batches(pending) if pending else _empty(columns)
        pending, pending_rows = [], 0
        new_invalid = invalid[invalid_seen:]
        invalid_seen = len(invalid)
        numbers = _interleave(good_seen, table.num_rows, [n for n, _ in invalid[:invalid_seen]])
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


def _interleave(good_before: int, count: int, invalid_numbers: list[int]) -> np.ndarray:
    """Record numbers of ``count`` good rows that follow ``good_before`` good rows, skipping the
    record numbers taken by unparseable rows."""
    numbers = np.arange(good_before + 1, good_before + count + 1, dtype=np.int64)
    for bad in sorted(n for n in invalid_numbers if n > 0):
        numbers[numbers >= bad] += 1
    return numbers


def _empty(columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array([], type=pa.string()) for c in columns})


# --- JSON lines ------------------------------------------------------------------------------------


def _to_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _jsonl_batches(path: Path, gz: bool, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
    opener = gzip.open if gz else open
    # The file's columns are the keys of its first JSON object.
    with opener(path, "rt", encoding="utf-8") as fh:
        first_keys: list[str] | None = None
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                first_keys = list(obj)
                break
    columns = _check_columns(path, source, first_keys) if first_keys is not None else list(source.column_names)
    return _guard(path, _jsonl_stream(path, gz, columns, batch_rows))


def _jsonl_stream(path: Path, gz: bool, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    opener = gzip.open if gz else open
    values: dict[str, list] = {c: [] for c in columns}
    numbers: list[int] = []
    rejects: list[ParseReject] = []
    record = 0

    def flush() -> RecordBatch:
        batch = RecordBatch(
            pa.table({c: pa.array(values[c], type=pa.string()) for c in columns}),
            np.asarray(numbers, dtype=np.int64),
            list(rejects),
        )
        for c in columns:
            values[c].clear()
        numbers.clear()
        rejects.clear()
        return batch

    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record += 1
            try:
                obj = json.loads(line)
            except ValueError:
                rejects.append(ParseReject(record, line.rstrip("\r\n"), "invalid_json:record"))
                continue
            if not isinstance(obj, dict):
                rejects.append(ParseReject(record, line.rstrip("\r\n"), "invalid_json:record"))
                continue
            for c in columns:
                text = _to_text(obj.get(c))
                values[c].append(text if text != "" else None)
            numbers.append(record)
            if len(numbers) >= batch_rows:
                yield flush()
    if numbers or rejects or record == 0:
        yield flush()


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
    record = 0
    emitted = False
    for chunk in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        table = pa.table({c: _column_as_text(chunk.column(c)) for c in columns})
        numbers = np.arange(record + 1, record + table.num_rows + 1, dtype=np.int64)
        record += table.num_rows
        emitted = True
        yield RecordBatch(table, numbers)
    if not emitted:
        yield RecordBatch(_empty(columns), np.empty(0, dtype=np.int64))
