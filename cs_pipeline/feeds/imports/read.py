"""Reading a mapping's external tables: delimited (any of ``, \\t ; |`` or runs of whitespace, with or
without a header), JSON lines and Parquet exports, ``.gz`` decompressed by extension, streamed in
chunks of text columns so that a value reads the same whatever the format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from cs_pipeline.feeds.imports.spec import ImportMapping, MappingError, TableSpec

#: Rows per chunk when streaming a table: peak memory follows this, not the file size.
CHUNK_ROWS = 100_000


def read_table(spec: TableSpec, source_dir: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Stream the table ``spec`` in chunks of at most ``chunk_rows`` rows.

    Every column is a pandas ``str`` column (Arrow-backed strings, missing values NA; blanks are
    missing), so a value reads the same whatever the format; ``.gz`` is decompressed by extension.

    Raises:
        MappingError: the file is missing or cannot be parsed (the message names the file).
    """
    path = source_dir / spec.file
    if not path.is_file():
        raise MappingError(f"table file {path} not found")
    fmt = spec.resolved_format
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _as_strings(batch.to_pandas())
        elif fmt == "jsonl":
            reader = pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows, encoding=spec.encoding,
                                  compression="infer")
            with reader:
                for chunk in reader:
                    yield _as_strings(chunk)
        else:
            sep = r"\s+" if spec.delimiter == "whitespace" else spec.delimiter
            options: dict[str, Any] = {"sep": sep, "dtype": str, "keep_default_na": False, "na_values": [""],
                                       "encoding": spec.encoding, "skiprows": spec.skip_rows,
                                       "compression": "infer", "chunksize": chunk_rows}
            if spec.header:
                options["header"] = 0
            else:
                options.update(header=None, names=spec.columns, index_col=False)
            with pd.read_csv(path, **options) as reader:
                for chunk in reader:
                    if spec.header and spec.columns:
                        chunk.columns = spec.columns
                    yield chunk
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"{path.name}: cannot read as {fmt}: {exc}") from exc


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        text = values.astype(str).where(values.notna())
        out[str(column)] = text.astype(str).where(values.notna()).replace({"": None})
    return out.astype(str).where(out.notna())


def read_whole(spec: TableSpec, source_dir: Path) -> pd.DataFrame:
    """The whole table ``spec`` as one frame of text columns (for joined and status tables).

    Raises:
        MappingError: as ``read_table``.
    """
    chunks = list(read_table(spec, source_dir))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


def table_chunks(table: str, mapping: ImportMapping, source_dir: Path, tables: dict[str, pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks of the mapping's table ``table``: the frame already read whole when ``tables`` holds
    it, else streamed by ``read_table``."""
    if table in tables:
        yield tables[table]
    else:
        yield from read_table(mapping.tables[table], source_dir)
