"""Reading a mapping's external tables into DuckDB: delimited (any of ``, \\t ; |`` or runs of whitespace,
with or without a header), JSON lines and Parquet exports, ``.gz`` decompressed by extension. Every column
is read as text (VARCHAR; blanks are missing), so a value reads the same whatever the format, plus ``_rn``,
the row's position in the file (1-based), which keeps "first", "last" and row ids in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:  # pandas only where read_table hands frames out: an import need not load it
    import pandas as pd

from cs_pipeline.feeds.imports.spec import MappingError, TableSpec

#: Where ``parse_days`` does not see ``YYYYMMDD`` or ISO 8601, these formats are tried in turn.
OTHER_DAY_FORMATS = ["%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y/%m/%d", "%d.%m.%Y", "%d %b %Y", "%b %d %Y"]
#: ``load_table`` adds the parsed day of a column ``c`` as the column ``c`` + this suffix (DATE).
DAY_SUFFIX = "#day"
#: Rows per chunk when ``read_table`` hands a table to pandas.
CHUNK_ROWS = 100_000
#: DuckDB's buffer pool: beyond it, joins, sorts and aggregates spill to the import's temporary directory.
MEMORY_LIMIT = "512MB"


def connect(temp_dir: Path, threads: int = 2) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for one import: UTC, at most ``MEMORY_LIMIT`` of buffers (spilling
    to ``temp_dir``), ``threads`` threads, file order kept; its cursors (connections of their own) share all of it."""
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(temp_dir),
                                 "threads": threads, "preserve_insertion_order": True})
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: the cursors of ``write`` take it too
    return con


def quote(name: str) -> str:
    """A DuckDB identifier (table or column name) quoted."""
    return '"' + name.replace('"', '""') + '"'


def parse_days(column: str) -> str:
    """SQL for the UTC day (DATE, NULL where unparseable) of a text column: ``YYYYMMDD``, ISO 8601 dates and
    timestamps (offsets converted to UTC), else ``OTHER_DAY_FORMATS``."""
    c = quote(column)
    formats = "[" + ", ".join("'" + f + "'" for f in OTHER_DAY_FORMATS) + "]"
    # Eight characters that read as an unsigned integer: digits (a sign or blanks then fail strptime, as
    # they fail every other format too); cheaper than a regular expression on every row.
    return (f"(CASE WHEN length({c}) = 8 AND try_cast({c} AS UINTEGER) IS NOT NULL "
            f"THEN CAST(try_strptime({c}, '%Y%m%d') AS DATE) "
            f"ELSE coalesce(CAST(try_cast({c} AS TIMESTAMPTZ) AS DATE), CAST(try_strptime({c}, {formats}) AS DATE)) END)")


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
        # Lines with single spaces between fields (most exports) are split without a regular expression.
        single = ("NOT (contains(line, '  ') OR contains(line, '\t') OR contains(line, '\r') "
                  "OR starts_with(line, ' ') OR ends_with(line, ' '))")
        # A line with a field: one starting with one (most lines) without a regular expression.
        filled = ("line IS NOT NULL AND ((line <> '' AND NOT (starts_with(line, ' ') OR starts_with(line, '\t') "
                  "OR starts_with(line, '\r'))) OR regexp_matches(line, '[^ \t\r]'))")
        fields = lines.filter(filled).project(
            f"CASE WHEN {single} THEN string_split(line, ' ') "
            "ELSE string_split_regex(trim(line, ' \t\r'), '[ \t\r]+') END AS f")
        return fields.project(", ".join(f"nullif(f[{i + 1}], '') AS {quote(n)}" for i, n in enumerate(names)))
    if spec.columns:
        options["names"] = spec.columns
    return con.read_csv(str(path), sep=spec.delimiter, **options)


def _as_text(column: str, kind: object) -> str:
    name = quote(column)
    if str(kind) == "BOOLEAN":  # as pandas writes them
        return f"CASE WHEN {name} THEN 'True' WHEN NOT {name} THEN 'False' END AS {name}"
    return f"nullif(CAST({name} AS VARCHAR), '') AS {name}"


def load_table(con: duckdb.DuckDBPyConnection, table: str, spec: TableSpec, source_dir: Path,
               row_ids: bool = False, day_columns: tuple[str, ...] = ()) -> list[str]:
    """Read the table ``spec`` into the DuckDB table ``table``: its columns as text plus ``_rn`` (BIGINT,
    file order from 1) and with ``row_ids`` ``_h`` (UBIGINT, DuckDB's ``hash`` of the row's fields) and
    ``_occ`` (the occurrence of identical rows in file order, from 1); for each of ``day_columns`` in the
    table, its day (``parse_days``) as the DATE column ``<column>#day``, parsed once here rather than in every
    query that splits or filters by it. Returns the table's own column names.

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
        extra = ", ".join(f"{parse_days(c)} AS {quote(c + DAY_SUFFIX)}" for c in day_columns if c in columns)
        if extra:
            numbered = numbered.project(f"*, {extra}")
        if row_ids:  # the occurrence: 1, but where a hash repeats (numbered by a window over those rows only)
            numbered = numbered.project(f"*, hash({', '.join(quote(c) for c in columns)}) AS _h, CAST(1 AS BIGINT) AS _occ")
        numbered.create(table)
        if row_ids:
            t = quote(table)
            con.execute(f"UPDATE {t} SET _occ = o._occ FROM (SELECT _rn, row_number() OVER (PARTITION BY _h ORDER BY _rn) "
                        f"AS _occ FROM {t} WHERE _h IN (SELECT _h FROM {t} GROUP BY _h HAVING count(*) > 1)) o "
                        f"WHERE {t}._rn = o._rn AND o._occ > 1")
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
