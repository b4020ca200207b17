"""What every landing reader shares: the batch and reject types, the errors, the row buffer of the
record-by-record readers, the required-column check and the one way a landing file is opened
(``open_landing``: regular files only, never through a link; see ``cs_pipeline.core.landing_contract``).

Error messages name the file and the problem, never the file's content: a column is named only when it
is one of the source's own, and an underlying parser's message (which may quote the file) is withheld.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from cs_pipeline.core.landing_contract import NotRegularFile, open_regular
from cs_pipeline.ingest.sources import Source

DEFAULT_BATCH_ROWS = 250_000


class LandingFileError(ValueError):
    """A landing file is missing, unreadable, or lacks required columns; the message names the file."""



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


class RowBuffer:
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
            if self.columns else empty_table(self.columns)
        batch = RecordBatch(table, np.asarray(self.numbers, dtype=np.int64), list(self.rejects))
        self.values = {c: [] for c in self.columns}
        self.numbers, self.rejects = [], []
        return batch


def empty_table(columns: list[str]) -> pa.Table:
    """A table of no rows with ``columns`` as strings."""
    return pa.table({c: pa.array([], type=pa.string()) for c in columns})


@contextmanager
def open_landing(path: Path, gz: bool = False) -> Iterator[BinaryIO]:
    """The bytes of the landing file ``path`` (decompressed when ``gz``), read only if it is a regular
    file (``open_regular``: ``O_NOFOLLOW``, checked with ``fstat``).

    Raises:
        NotRegularFile: ``path`` is a link, FIFO, device, socket or directory; nothing was read.
        OSError: as ``open``.
    """
    with os.fdopen(open_regular(path), "rb") as raw:
        if not gz:
            yield raw
        else:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream


def arrow_stream(path: Path, gz: bool = False) -> pa.NativeFile:
    """An Arrow input stream over the landing file ``path`` (decompressed when ``gz``), opened like
    ``open_landing`` (regular files only, no link followed). Where ``/proc/self/fd`` exists, Arrow reads the
    descriptor opened and checked here through it with its own I/O (reads without the GIL, so its read-ahead
    overlaps the loader's Python work); elsewhere through a Python file object.

    Raises:
        NotRegularFile, OSError: as ``open_regular``.
    """
    fd = open_regular(path)
    compression = "gzip" if gz else None
    same_file = f"/proc/self/fd/{fd}"  # the very file opened above, not a name looked up again
    if os.path.exists(same_file):
        try:
            return pa.input_stream(same_file, compression=compression)
        finally:
            os.close(fd)
    return pa.input_stream(os.fdopen(fd, "rb"), compression=compression)


def describe(exc: BaseException) -> str:
    """Why a file could not be read, without the reader's own message (which may quote the file)."""
    if isinstance(exc, gzip.BadGzipFile):
        return "not a gzip stream"
    if isinstance(exc, EOFError):
        return "compressed stream ends early (truncated)"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start} of the line)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, csv.Error):
        return "CSV syntax error"
    if isinstance(exc, pa.ArrowException):
        return f"{type(exc).__name__} from Arrow (its message is withheld: it may quote the file)"
    return type(exc).__name__


def unreadable(path: Path, exc: BaseException, what: str = "unreadable") -> LandingFileError:
    """The ``LandingFileError`` for ``exc`` met reading ``path``: the refusal itself for a file that is
    not a regular one, else ``<path>: unreadable: <describe(exc)>``."""
    if isinstance(exc, NotRegularFile):
        return LandingFileError(str(exc))
    return LandingFileError(f"{path}: {what}: {describe(exc)}")


#: What a reader may raise on a broken file (turned into ``LandingFileError`` by ``unreadable``).
READ_ERRORS = (OSError, EOFError, pa.ArrowException, UnicodeDecodeError, csv.Error)


def check_columns(path: Path, source: Source, present: list[str]) -> list[str]:
    """The source's columns found in ``present`` (the file's columns), in the source's order.

    Raises:
        LandingFileError: a required column is absent; names the missing columns (the source's own) and
            how many columns the file has, not the file's column names.
    """
    missing = [c for c in source.required_columns if c not in present]
    if missing:
        known = [c for c in source.column_names if c in present]
        raise LandingFileError(
            f"{path}: required column(s) missing: {', '.join(missing)} (the file has {len(present)} column(s); "
            f"of this source's: {', '.join(known) or 'none'})"
        )
    return [c for c in source.column_names if c in present]


def guard(path: Path, batches: Iterator[RecordBatch], arrow_csv: bool = False) -> Iterator[RecordBatch]:
    """``batches`` with read errors met on the way raised as ``LandingFileError`` (``unreadable``), and
    Arrow's refusal of a CSV file as ``CsvNeedsPythonReader`` when ``arrow_csv``."""
    try:
        yield from batches
    except LandingFileError:
        raise
    except pa.ArrowInvalid as exc:
        if arrow_csv:
            raise CsvNeedsPythonReader(type(exc).__name__) from exc
        raise unreadable(path, exc) from exc
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc
