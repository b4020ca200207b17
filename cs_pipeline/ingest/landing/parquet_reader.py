"""Parquet landing files: read in record batches, every column as text (timestamps in ISO 8601 UTC,
nested values as JSON, booleans as ``true``/``false``). A column name present twice is read from both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cs_pipeline.core.landing_contract import open_regular
from cs_pipeline.ingest.landing.jsonl_reader import to_text
from cs_pipeline.ingest.landing.records import (
    LandingFileError,
    ParseReject,
    RecordBatch,
    check_columns,
    empty_table,
    guard,
    unreadable,
)
from cs_pipeline.ingest.sources import Source


def parquet_batches(path: Path, source: Source, batch_rows: int) -> Iterator[RecordBatch]:
    """Check the Parquet file ``path``'s footer and columns and return its record batches
    (``open_records``); the file is opened once (``open_regular``) and closed when they end.

    Raises:
        LandingFileError: not a regular file, not Parquet, or a required column absent.
    """
    fh = os.fdopen(open_regular(path), "rb")
    try:
        parquet = pq.ParquetFile(fh)
        columns = check_columns(path, source, parquet.schema_arrow.names)
    except LandingFileError:
        fh.close()
        raise
    except (OSError, pa.ArrowException) as exc:
        fh.close()
        raise unreadable(path, exc, "unreadable parquet") from exc
    return guard(path, _parquet_stream(parquet, fh, columns, batch_rows))


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
        return pa.array([to_text(v) for v in array.to_pylist()], type=pa.string())
    if pa.types.is_boolean(array.type):
        return pc.if_else(array, "true", "false")
    return array.cast(pa.string())


def _parquet_stream(parquet: pq.ParquetFile, fh: BinaryIO, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
    """Parquet record batches as text columns. A column name that appears twice is read from both
    columns: records where they agree load; the others are rejected as ``duplicate_column:<c>``."""
    with fh:
        yield from _parquet_batches_of(parquet, columns, batch_rows)


def _parquet_batches_of(parquet: pq.ParquetFile, columns: list[str], batch_rows: int) -> Iterator[RecordBatch]:
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
        yield RecordBatch(empty_table(columns), np.empty(0, dtype=np.int64))


def _null_as_false(mask: pa.Array) -> pa.Array:
    return pc.and_kleene(mask, pc.is_valid(mask)) if mask.null_count else mask


def _rows_text(chunk: pa.RecordBatch, rows: np.ndarray) -> list[str]:
    """Rows of a Parquet batch as JSON arrays of their values (all columns, duplicates included)."""
    names = chunk.schema.names
    columns = [_column_as_text(chunk.column(i)).take(pa.array(rows)).to_pylist() for i in range(len(names))]
    return [json.dumps([[n, col[k]] for n, col in zip(names, columns, strict=True)], ensure_ascii=False)
            for k in range(len(rows))]

