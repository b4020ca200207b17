"""Reading a mapping's external tables into DuckDB: delimited (any of ``, \\t ; |`` or runs of whitespace,
with or without a header), JSON lines and Parquet exports, ``.gz`` decompressed by extension. Every column
is read as text (VARCHAR; blanks are missing), so a value reads the same whatever the format, plus ``_rn``,
the row's position in the file (1-based), which keeps "first", "last" and row ids in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd

from cs_pipeline.feeds.imports.spec import MappingError, TableSpec

#: Rows per chunk when ``read_table`` hands a table to pandas.
CHUNK_ROWS = 100_000
#: DuckDB's buffer pool: beyond it, joins, sorts and aggregates spill to the import's temporary directory.
MEMORY_LIMIT = "512MB"


def connect(temp_dir: Path, threads: int = 2) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for one import: UTC, at most ``MEMORY_LIMIT`` of buffers (spilling
    to ``temp_dir``), ``threads`` threads, file order kept."""
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(temp_dir),
                                 "threads": threads, "preserve_insertion_order": True})
    con.execute("SET TimeZone = 'UTC'")
    return con


def quote(name: str) -> str:
    """A DuckDB identifier (table or column name) quoted."""
    return '"' + name.replace('"', '""') + '"'


def _relation(con: duckdb.DuckDBPyConnection, spec: TableSpec, path: Path) -> duckdb.DuckDBPyRelation:
    fmt = spec.resolved_format
    if fmt == "parquet":
        rel = con.read_parquet(str(path))
        return rel.project(", ".join(_as_text(c, t) for c, t in zip(rel.columns, rel.types)))
    if fmt == "jsonl":
        rel = con.read_json(str(path), format="newline_delimited")
        return rel.project(", ".join(_as_text(c, t) for c, t in zip(rel.columns, rel.types)))
    encoding = spec.encoding.lower().replace("_", "-")
    options = {"header": spec.header, "all_varchar": True, "skiprows": spec.skip_rows,
               "encoding": {"utf8": "utf-8", "latin1": "latin-1", "iso-8859-1": "latin-1"}.get(encoding, encoding)}
    if spec.delimiter == "whitespace":  # one text column per line, split on runs of spaces and tabs
        lines = con.read_csv(str(path), sep="\x1e", quotechar="", escapechar="", names=["line"],
                             **{**options, "header": False})
        names = spec.columns or []
        pattern = "^[ \\t]*([^ \\t\\r]+)" + "(?:[ \\t]+([^ \\t\\r]+))?" * (len(names) - 1)
        groups = ", ".join(f"'f{i}'" for i in range(len(names)))
        fields = lines.filter("line IS NOT NULL AND regexp_matches(line, '[^ \\t\\r]')").project(
            f"regexp_extract(line, '{pattern}', [{groups}]) AS f")
        return fields.project(", ".join(f"nullif(f.f{i}, '') AS {quote(n)}" for i, n in enumerate(names)))
    if spec.columns:
        options["names"] = spec.columns
    return con.read_csv(str(path), sep=spec.delimiter, **options)


def _as_text(column: str, kind: object) -> str:
    name = quote(column)
    if str(kind) == "BOOLEAN":  # as pandas writes them
        return f"CASE WHEN {name} THEN 'True' WHEN NOT {name} THEN 'False' END AS {name}"
    return f"nullif(CAST({name} AS VARCHAR), '') AS {name}"


def load_table(con: duckdb.DuckDBPyConnection, table: str, spec: TableSpec, source_dir: Path,
               row_ids: bool = False) -> list[str]:
    """Read the table ``spec`` into the DuckDB table ``table``: its columns as text plus ``_rn`` (BIGINT,
    file order from 1) and with ``row_ids`` ``_h`` (UBIGINT, DuckDB's ``hash`` of the row's fields) and
    ``_occ`` (the occurrence of identical rows in file order, from 1). Returns the table's own column names.

    Raises:
        MappingError: the file is missing or cannot be parsed (the message names the file).
    """
    path = source_dir / spec.file
    if not path.is_file():
        raise MappingError(f"table file {path} not found")
    try:
        rel = _relation(con, spec, path)
        columns = list(rel.columns)
        numbered = rel.project("*, row_number() OVER () AS _rn")
        if row_ids:
            hashed = numbered.project(f"*, hash({', '.join(quote(c) for c in columns)}) AS _h")
            numbered = hashed.project("*, row_number() OVER (PARTITION BY _h ORDER BY _rn) AS _occ")
        numbered.create(table)
    except (duckdb.Error, UnicodeDecodeError, OSError) as exc:
        raise MappingError(f"{path.name}: cannot read as {spec.resolved_format}: {exc}".splitlines()[0]) from exc
    return columns


def read_table(spec: TableSpec, source_dir: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Stream the table ``spec`` as pandas frames of at most ``chunk_rows`` rows, in file order.

    Every column is a pandas ``str`` column (missing values NA; blanks are missing).

    Raises:
        MappingError: as ``load_table``.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cs-import-") as tmp, connect(Path(tmp)) as con:
        columns = load_table(con, "t", spec, source_dir)
        reader = con.sql(f"SELECT {', '.join(quote(c) for c in columns)} FROM t ORDER BY _rn") \
            .to_arrow_reader(chunk_rows)
        for batch in reader:
            frame = batch.to_pandas()
            yield frame.astype(str).where(frame.notna())
