"""The landing zone: finding a source's file for a day and streaming its records in batches.

File names follow the landing contract (``cs_pipeline.core.landing_contract``):
``<source>_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]`` (DOMAIN.md), regular files only. Every reader yields
``RecordBatch`` objects whose columns are the source's columns present in the file, all as Arrow
strings (null for blank), with the 1-based record number of each row, plus the records that could not
be parsed at all. Memory is bounded by the batch size, not the file size.

One module per format (``csv_reader``, ``jsonl_reader``, ``parquet_reader``) over what they share
(``records``); this module finds a day's file and picks the reader.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from cs_pipeline.core.landing_contract import FORMATS, candidate_names, file_kind, landing_file_name, refusal
from cs_pipeline.ingest.landing.csv_reader import MAX_CSV_FIELD_CHARS, csv_batches
from cs_pipeline.ingest.landing.jsonl_reader import COLUMN_SCAN_LINES, jsonl_batches
from cs_pipeline.ingest.landing.parquet_reader import parquet_batches
from cs_pipeline.ingest.landing.records import (
    DEFAULT_BATCH_ROWS,
    READ_ERRORS,
    CsvNeedsPythonReader,
    LandingFileError,
    ParseReject,
    RecordBatch,
    storable_text,
    unreadable,
)
from cs_pipeline.ingest.sources import Source

__all__ = [
    "COLUMN_SCAN_LINES", "DEFAULT_BATCH_ROWS", "FORMATS", "MAX_CSV_FIELD_CHARS", "CsvNeedsPythonReader",
    "LandingFileError", "ParseReject", "RecordBatch", "find_landing_file", "landing_file_name", "open_records",
    "storable_text",
]


def find_landing_file(landing_dir: Path, source: str, day: date) -> Path:
    """The one landing file of ``source`` for ``day`` in ``landing_dir`` (looked up with ``lstat``:
    links are never followed).

    Raises:
        LandingFileError: no file, more than one (for example both .csv and .jsonl), or one that is not
            a regular file (a symbolic link, FIFO or device: refused, naming the file).
    """
    found = []
    for name in candidate_names(source, day):
        path = landing_dir / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise unreadable(path, exc) from exc
        if not stat.S_ISREG(mode):
            raise LandingFileError(refusal(path, file_kind(mode)))
        found.append(path)
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


def open_records(
    path: Path, source: Source, batch_rows: int = DEFAULT_BATCH_ROWS, csv_engine: str = "arrow"
) -> Iterator[RecordBatch]:
    """Check ``path`` and return an iterator over its record batches.

    The file's existence, kind (a regular file: a link, FIFO or device is refused before anything is
    read from it), readability and required columns are checked before this returns, so a caller can
    fail before changing anything. Errors met later (a truncated gzip stream) raise
    ``LandingFileError`` from the iterator. No message quotes the file's content.

    CSV is read by Arrow (``csv_engine="arrow"``); when Arrow refuses the data (invalid UTF-8, a record
    longer than its 1 MiB block) the iterator raises ``CsvNeedsPythonReader`` and the caller reads the
    file again with ``csv_engine="python"``, which quarantines such records one by one.

    Raises:
        LandingFileError: missing, not a regular file, unreadable, unsupported type, or required columns
            absent.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise LandingFileError(f"{path}: file not found") from None
    except OSError as exc:
        raise unreadable(path, exc) from exc
    if not stat.S_ISREG(mode):
        raise LandingFileError(refusal(path, file_kind(mode)))
    fmt, gz = _format_of(path)
    try:
        if fmt == "csv":
            return csv_batches(path, gz, source, batch_rows, csv_engine)
        if fmt == "jsonl":
            return jsonl_batches(path, gz, source, batch_rows)
        return parquet_batches(path, source, batch_rows)
    except LandingFileError:
        raise
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc
