"""CSV landing files: read by Arrow's streaming reader, or record by record when Arrow refuses the data
(invalid UTF-8, a record longer than its block), quarantining such records one by one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from cs_pipeline.core.landing_contract import shown_name
from cs_pipeline.ingest.landing.records import (
    LandingFileError,
    ParseReject,
    RecordBatch,
    RowBuffer,
    arrow_stream,
    check_columns,
    describe,
    empty_table,
    guard,
    open_landing,
)
from cs_pipeline.ingest.sources import Source

#: Largest CSV field the Python reader takes (characters); a larger one fails the file (``LandingFileError``).
MAX_CSV_FIELD_CHARS = 256 << 20


def _csv_header(path: Path, gz: bool) -> list[str]:
    with open_landing(path, gz) as fh:  # the first line only: bytes further on are the records' business
        line = fh.readline().decode("utf-8-sig")
    if not line.strip():
        raise LandingFileError(f"{path}: no header row (empty file)")
    return [h.strip() for h in next(csv.reader([line]))]


def csv_batches(path: Path, gz: bool, source: Source, batch_rows: int, engine: str) -> Iterator[RecordBatch]:
    """Check the CSV file ``path``'s header and return its record batches (``open_records``), read by
    Arrow (``engine="arrow"``) or record by record (``"python"``).

    Raises:
        LandingFileError: empty file, duplicate or missing required columns.
    """
    header = _csv_header(path, gz)
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        shown = ", ".join(shown_name(d, 40) for d in sorted(dupes)[:5])
        raise LandingFileError(f"{path}: duplicate column(s) in header: {shown}")
    columns = check_columns(path, source, header)
    if engine == "python":
        return guard(path, _csv_python_stream(path, gz, header, columns, batch_rows))
    return guard(path, _csv_stream(path, gz, columns, batch_rows), arrow_csv=True)


def _csv_stream(path: Path, gz: bool, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        # Parsed on one thread, row.number is the physical line number (header = line 1).
        invalid.append((row.number - 1, row.text))
        return "skip"

    good_seen = 0
    invalid_seen = 0
    invalid_numbers = np.empty(0, dtype=np.int64)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def emit() -> RecordBatch:
        nonlocal good_seen, invalid_seen, pending, pending_rows, invalid_numbers
        table = pa.Table.from_batches(pending) if pending else empty_table(columns)
        pending, pending_rows = [], 0
        new_invalid = invalid[invalid_seen:]
        invalid_seen = len(invalid)
        if new_invalid:
            invalid_numbers = np.concatenate([invalid_numbers, np.asarray([n for n, _ in new_invalid], dtype=np.int64)])
        numbers = interleave(good_seen, table.num_rows, invalid_numbers)
        good_seen += table.num_rows
        return RecordBatch(table, numbers, [ParseReject(n, text, "unparseable_record") for n, text in new_invalid])

    with arrow_stream(path, gz) as stream:
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
        for chunk in reader:
            pending.append(chunk)
            pending_rows += chunk.num_rows
            if pending_rows >= batch_rows:
                yield emit()
        if pending or invalid_seen < len(invalid):
            yield emit()


def _csv_python_stream(
    path: Path, gz: bool, header: list[str], columns: list[str], batch_rows: int
) -> Iterator[RecordBatch]:
    """Record-by-record CSV reader for files Arrow refuses: a record with bytes that are not UTF-8 is
    rejected (``invalid_utf8``), one with the wrong number of fields is ``unparseable_record``; fields
    of any length up to ``MAX_CSV_FIELD_CHARS`` load. Blank lines are skipped, as Arrow does."""
    index = {c: header.index(c) for c in columns}
    width = len(header)
    buffer = RowBuffer(columns)
    record = 0
    previous_limit = csv.field_size_limit()
    csv.field_size_limit(max(previous_limit, MAX_CSV_FIELD_CHARS))
    try:
        with open_landing(path, gz) as binary, \
                io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
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
        raise LandingFileError(f"{path}: unreadable CSV near record {record + 1}: {describe(exc)}") from exc
    finally:
        csv.field_size_limit(previous_limit)
    yield buffer.flush()


#: An undecodable byte in text read with ``errors="surrogateescape"``.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _csv_record(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def interleave(good_before: int, count: int, invalid_numbers) -> np.ndarray:
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
