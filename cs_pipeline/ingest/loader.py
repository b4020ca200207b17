"""Load one landing file into its raw partition with PostgreSQL COPY, atomically.

One transaction per (source, day): TRUNCATE the day's child table, stream the valid records into it
with ``COPY ... FROM STDIN`` (binary format, see ``pgcopy``), move in-file duplicate keys out, replace
the day's rejected rows, and record an audit row. Reading and validating a batch overlaps with the
server storing the previous ones: psycopg's queued writer sends from a thread. A crash or kill before
COMMIT leaves the previous contents untouched; readers never see a half-loaded day. Memory is bounded
by the batch size and psycopg's send queue (the file is streamed, rejects are spooled to a temporary
file), plus about 12 bytes per record for the in-file uniqueness check (``KeyTracker``).
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from cs_pipeline.ingest.landing import (
    DEFAULT_BATCH_ROWS,
    CsvNeedsPythonReader,
    open_records,
    storable_text,
)
from cs_pipeline.ingest.pgcopy import BinaryCopyEncoder
from cs_pipeline.ingest.sources import Source
from cs_pipeline.ingest.tables import ensure_partition
from cs_pipeline.ingest.validation import validate_batch

PREVIEW_ROWS = 5


@dataclass
class LoadReport:
    """What one partition load did.

    Attributes:
        source, partition_date, source_file: what was loaded (file name without directory).
        file_bytes: size of the landing file in bytes.
        records_in_file: records read (parsed or not), counted by the reader.
        rows_loaded, rows_rejected: rows now in ``raw.<source>`` / ``raw.rejected_rows`` for the day,
            counted in those tables after the load (so ``conserved`` is a measurement).
        rejected_by_reason: reason code -> count.
        distinct_suppliers: distinct supplier_id among loaded rows.
        min_time, max_time: range of the source's time column among loaded rows (UTC).
        load_seconds: wall-clock seconds from opening the file to COMMIT.
        preview: up to five loaded records (column -> value), personal data masked (``mask_personal_data``).
    """

    source: str
    partition_date: date
    source_file: str
    file_bytes: int
    records_in_file: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    distinct_suppliers: int = 0
    min_time: datetime | None = None
    max_time: datetime | None = None
    load_seconds: float = 0.0
    preview: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def conserved(self) -> bool:
        """Records read from the file = rows counted in the day's partition + rows counted in
        ``raw.rejected_rows`` for the day."""
        return self.records_in_file == self.rows_loaded + self.rows_rejected


class KeyTracker:
    """Finds repeated keys in a file without keeping the keys: 8 bytes of hash and 4 bytes of record
    number per row (8 beyond 2**31 records), and 8 more per row while ``candidates()`` sorts.
    ``candidates()`` returns the record numbers whose hash repeats; the caller confirms them exactly
    against the loaded rows (a hash collision only costs a look-up)."""

    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self._numbers: list[np.ndarray] = []

    def add(self, keys: pa.Array, record_numbers: np.ndarray) -> None:
        """Track ``keys`` (non-null strings) of the rows numbered ``record_numbers``."""
        numbers = np.asarray(record_numbers, dtype=np.int64)
        self._hashes.append(self.hash_keys(keys))
        self._numbers.append(numbers.astype(np.int32) if len(numbers) and numbers[-1] < 2**31 else numbers)

    @classmethod
    def hash_keys(cls, keys: pa.Array) -> np.ndarray:
        """uint64 hash per key: vectorised over NUL-padded ASCII keys, Python's hash otherwise."""
        if len(keys) == 0:
            return np.empty(0, dtype=np.uint64)
        byte_len = pc.binary_length(keys)
        char_len = pc.utf8_length(keys)
        width = pc.max(byte_len).as_py()
        if pc.all(pc.equal(byte_len, char_len)).as_py() and width <= 256:
            width8 = max(8, -(-width // 8) * 8)
            padded = pc.utf8_rpad(keys, width=width8, padding="\x00").combine_chunks() if isinstance(
                keys, pa.ChunkedArray) else pc.utf8_rpad(keys, width=width8, padding="\x00")
            offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)
            start = offsets[padded.offset]
            words = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[start:start + len(padded) * width8]
            words = words.view(np.uint64).reshape(len(padded), width8 // 8)
            h = np.full(len(padded), np.uint64(0xCBF29CE484222325))
            with np.errstate(over="ignore"):
                for j in range(words.shape[1]):
                    h = (h ^ words[:, j]) * cls._MULT
                    h ^= h >> np.uint64(29)
            return h
        return np.fromiter((hash(k) & 0xFFFFFFFFFFFFFFFF for k in keys.to_pylist()), dtype=np.uint64, count=len(keys))

    def candidates(self) -> list[int]:
        """Record numbers of rows whose key hash is shared with another row (sorted)."""
        if not self._hashes:
            return []
        ordered = np.concatenate(self._hashes)
        ordered.sort()
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        del ordered
        if not len(repeated):
            return []
        found = [numbers[np.isin(hashes, repeated)] for hashes, numbers in zip(self._hashes, self._numbers, strict=True)]
        return sorted(int(n) for n in np.concatenate(found))


def load_partition(
    conn: psycopg.Connection,
    source: Source,
    path: Path,
    day: date,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> LoadReport:
    """Replace ``day`` of ``raw.<source>`` (and its rejected rows) with the records of ``path``.

    Args:
        conn: a psycopg connection in non-autocommit mode with no transaction open.
        source: the source's rules (``cs_pipeline.ingest.sources``).
        path: the landing file (csv, jsonl or parquet, optionally gzipped).
        day: the partition day (UTC) the file belongs to.
        batch_rows: rows per validation batch (bounds memory).

    Returns:
        LoadReport with counts; ``records_in_file == rows_loaded + rows_rejected``.

    Raises:
        cs_pipeline.ingest.landing.LandingFileError: the file is missing, unreadable or lacks required
            columns. Nothing already loaded changes.
        psycopg.Error: the database refused the load; the transaction is rolled back.
    """
    with _one_arrow_thread():
        try:
            return _load(conn, source, path, day, batch_rows)
        except CsvNeedsPythonReader:  # rolled back; read record by record, quarantining what Arrow refused
            return _load(conn, source, path, day, batch_rows, csv_engine="python")


@contextmanager
def _one_arrow_thread() -> Iterator[None]:
    """Keep Arrow to one compute and one I/O thread while loading: on a small machine the
    PostgreSQL backend parsing the COPY stream needs the other core more than Arrow does
    (measured with multi-threaded CSV reads: 2.9 s instead of 3.6 s per million events on 2 cores)."""
    cpu, io_threads = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        yield
    finally:
        pa.set_cpu_count(cpu)
        pa.set_io_thread_count(io_threads)


def _load(
    conn: psycopg.Connection, source: Source, path: Path, day: date, batch_rows: int, csv_engine: str = "arrow"
) -> LoadReport:
    started = time.perf_counter()
    batches = open_records(path, source, batch_rows, csv_engine)  # checks the file before anything changes
    report = LoadReport(source.name, day, path.name, path.lstat().st_size)  # never through a link
    child = ensure_partition(conn, source.name, day)
    encoder = BinaryCopyEncoder(source)
    copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE true)").format(
        child, sql.SQL(", ").join(map(sql.Identifier, encoder.columns))
    )
    reasons: Counter[str] = Counter()
    suppliers: set[str] = set()
    keys = KeyTracker() if source.unique_column else None
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool, conn.transaction():
        # Rows of raw.rejected_rows as COPY CSV: record_number, raw_record, reason, source, day, file.
        writer = csv.writer(spool, lineterminator="\n")
        suffix = [source.name, day.isoformat(), path.name]

        def reject(number: int, raw: str, reason: str) -> None:
            writer.writerow([number, raw, reason, *suffix])
        cur = conn.cursor()
        cur.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN _partition_date SET DEFAULT {}, "
                    "ALTER COLUMN _source_file SET DEFAULT {}").format(child, sql.Literal(day), sql.Literal(path.name))
        )
        cur.execute(sql.SQL("TRUNCATE {}").format(child))  # same transaction as the COPY: FREEZE is allowed
        cur.execute(
            "DELETE FROM raw.rejected_rows WHERE source = %s AND partition_date = %s", (source.name, day)
        )
        with cur.copy(copy_stmt, writer=QueuedLibpqWriter(cur)) as copy:
            copy.write(encoder.header())
            for batch in batches:
                for parse_reject in batch.parse_rejects:
                    reject(parse_reject.record_number, parse_reject.raw_record, parse_reject.reason)
                    reasons[parse_reject.reason] += 1
                report.records_in_file += batch.table.num_rows + len(batch.parse_rejects)
                if batch.table.num_rows == 0:
                    continue
                checked = validate_batch(batch.table, batch.record_numbers, source, day)
                for number, raw, reason in zip(
                    checked.rejected_record_numbers.tolist(), checked.rejected_raw, checked.rejected_reasons, strict=True
                ):
                    reject(number, storable_text(raw), reason)
                    reasons[reason] += 1
                valid = checked.valid
                if keys is not None:
                    keys.add(valid.column(source.unique_column), checked.valid_record_numbers)
                if valid.num_rows:
                    copy.write(encoder.encode(valid, checked.valid_record_numbers))
                    if len(report.preview) < PREVIEW_ROWS:
                        report.preview += mask_personal_data(
                            valid.slice(0, PREVIEW_ROWS - len(report.preview)).to_pylist(), source)
                suppliers |= checked.supplier_ids
                if checked.min_time is not None:
                    report.min_time = min(filter(None, [report.min_time, checked.min_time]))
                    report.max_time = max(filter(None, [report.max_time, checked.max_time]))
            candidates = keys.candidates() if keys is not None else []  # while the server drains the queue
            copy.write(encoder.trailer())
        if keys is not None:
            duplicates = _reject_duplicates(cur, child, source.unique_column, candidates)
            for number, raw in duplicates:
                reject(number, raw, f"duplicate_key:{source.unique_column}")
            if duplicates:
                reasons[f"duplicate_key:{source.unique_column}"] += len(duplicates)
        spool.flush()
        spool.seek(0)
        with cur.copy(
            sql.SQL(
                "COPY raw.rejected_rows (record_number, raw_record, reason, source, partition_date, source_file) "
                "FROM STDIN (FORMAT csv)"
            )
        ) as copy:
            while chunk := spool.read(1 << 20):
                copy.write(chunk)
        # The day's partition is a new table: give the planner its statistics now, not when autovacuum
        # gets to it (issue 18: plans over fresh partitions without statistics ran for minutes).
        cur.execute(sql.SQL("ANALYZE {}").format(child))
        # Conservation is measured, not computed: count what the tables now hold for the day.
        report.rows_loaded = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(child)).fetchone()[0]
        report.rows_rejected = cur.execute(
            "SELECT count(*) FROM raw.rejected_rows WHERE source = %s AND partition_date = %s", (source.name, day)
        ).fetchone()[0]
        report.rejected_by_reason = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        report.distinct_suppliers = len(suppliers)
        report.load_seconds = time.perf_counter() - started
        cur.execute(
            """
            INSERT INTO ops.load_audit (source, partition_date, source_file, file_bytes, records_in_file,
                                        rows_loaded, rows_rejected, load_seconds)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source, partition_date) DO UPDATE SET
              source_file = EXCLUDED.source_file, file_bytes = EXCLUDED.file_bytes,
              records_in_file = EXCLUDED.records_in_file, rows_loaded = EXCLUDED.rows_loaded,
              rows_rejected = EXCLUDED.rows_rejected, load_seconds = EXCLUDED.load_seconds,
              loaded_at = now()
            """,
            (source.name, day, path.name, report.file_bytes, report.records_in_file,
             report.rows_loaded, report.rows_rejected, report.load_seconds),
        )
    report.load_seconds = time.perf_counter() - started
    return report


def mask_email(value: str) -> str:
    """``"***@example.com"`` for ``"jane@example.com"``; ``"***"`` for anything without a domain."""
    _, at, domain = value.rpartition("@")
    return f"***@{domain}" if at and domain else "***"


def mask_personal_data(rows: list[dict], source: Source) -> list[dict]:
    """Preview rows with the source's personal-data columns (``Column.pii``) masked: e-mail addresses
    keep only their domain (``mask_email``), other personal values become ``"***"``. For UI metadata."""
    personal = {c.name for c in source.columns if c.pii}
    if not personal:
        return rows
    return [
        {k: (v if k not in personal or v is None else mask_email(v) if "email" in k else "***") for k, v in row.items()}
        for row in rows
    ]


def _reject_duplicates(
    cur: psycopg.Cursor, child: sql.Identifier, key: str, candidates: list[int]
) -> list[tuple[int, str]]:
    """Delete the rows among ``candidates`` (record numbers) whose ``key`` appeared earlier in the
    file (lower record number); the first occurrence stays.

    Returns (record_number, raw_record JSON) of the deleted rows, in record order.
    """
    if not candidates:
        return []
    rows = cur.execute(
        sql.SQL(
            """
            WITH candidate AS (
              SELECT ctid AS row_id, {key} AS k, _record_number FROM {child}
              WHERE _record_number = ANY(%s)
            ), ranked AS (
              SELECT row_id, row_number() OVER (PARTITION BY k ORDER BY _record_number) AS occurrence
              FROM candidate
            )
            DELETE FROM {child} t USING ranked r
            WHERE t.ctid = r.row_id AND r.occurrence > 1
            RETURNING t._record_number,
                      (to_jsonb(t) - '_partition_date' - '_source_file' - '_record_number' - '_loaded_at')::text
            """
        ).format(key=sql.Identifier(key), child=child),
        (candidates,),
    ).fetchall()
    return sorted((int(n), raw) for n, raw in rows)
