"""Database helpers every stage uses: the schemas, the DDL transaction, reading a query into a
DataFrame, writing a DataFrame with COPY, and the clock.

Stages own their tables (each stage's ``tables.py`` or store module holds its DDL); this module owns only
what they share. All values travel as parameters; identifiers are composed with psycopg's ``sql`` module.
"""

from __future__ import annotations

import io
import math
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.types.numeric import FloatLoader

#: The warehouse's schemas: raw (ingest), staging / intermediate / marts / seeds (dbt; health and
#: interventions write their marts too), ops (operational tables: load audit, interventions, validations).
SCHEMAS = ("raw", "staging", "intermediate", "marts", "ops", "seeds")

_DDL_LOCK_KEY = 0x637370  # one advisory lock for all of the project's DDL ("csp")


@contextmanager
def ddl_transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction holding the project's DDL advisory lock, so that processes creating the same
    schemas, tables or partitions at once take turns instead of colliding in the catalog."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
        yield


def ensure_schemas(conn: psycopg.Connection) -> None:
    """Create the schemas of ``SCHEMAS`` if they do not exist (the tables are each stage's own), and the
    shared SQL function ``ops.statistics_stale`` (``STATISTICS_STALE_FUNCTION``).

    Safe to run concurrently from several processes (serialised by an advisory lock). Commits.
    """
    with ddl_transaction(conn):
        for schema in SCHEMAS:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(STATISTICS_STALE_FUNCTION)


def read_frame(conn: psycopg.Connection, query: sql.Composable | str, params: Sequence | dict = ()) -> pd.DataFrame:
    """A query's rows as a DataFrame, one column per result column (names as in the query).

    PostgreSQL ``numeric`` arrives as float (decoded by psycopg's FloatLoader); other types as psycopg
    decodes them (date -> ``datetime.date``, timestamptz -> aware ``datetime``, jsonb -> dict/list).
    """
    cur = conn.cursor()
    cur.adapters.register_loader("numeric", FloatLoader)
    cur.execute(query, params)
    names = [d.name for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=names)


def _null_marker() -> str:
    """A CSV NULL marker drawn at random (96 bits), so that no text in the data can equal it."""
    return f"NULL-{secrets.token_hex(12)}"


def read_frame_bulk(conn: psycopg.Connection, query: sql.Composable | str, params: Sequence | dict = ()) -> pd.DataFrame:
    """A query's rows as a DataFrame read through ``COPY (query) TO STDOUT`` (CSV) and ``pandas.read_csv``:
    six times faster than ``read_frame`` for large results (1.1 M raw events: 2.6 s instead of 15.6 s,
    issue 18), for readers that need column values, not Python objects: the Great Expectations gates.

    Types are what ``read_csv`` infers from the text: integers and floats as numbers; dates, timestamps
    (ISO 8601 text, with offset), booleans (``t``/``f``) and jsonb (JSON text) as strings. NULL is NaN
    (``<NA>`` in string columns); an empty string, or any other text, stays that text, also as a one-column
    result's only field (``_copy_csv``'s ``ROW_MARK``). Columns keep the query's names and order, also when there
    are no rows. ``query`` is read as a subquery: a SELECT (or VALUES).

    Raises:
        psycopg.Error: the query failed.
    """
    return _copy_csv(conn, sql.SQL(query) if isinstance(query, str) else query, params)


#: Result column types ``read_frame_copy`` reads through COPY (PostgreSQL type OIDs): text, integers, numbers,
#: dates, booleans.
_COPY_TEXT = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
_COPY_INTEGER = frozenset({20, 21, 23})  # bigint, smallint, integer
_COPY_NUMBER = frozenset({700, 701, 1700})  # real, double precision, numeric
_COPY_DATE, _COPY_BOOLEAN = 1082, 16


def read_frame_copy(conn: psycopg.Connection, query: sql.Composable | str, params: Sequence | dict = ()) -> pd.DataFrame:
    """``read_frame(conn, query, params)``'s DataFrame, the same dtypes and values, read through ``COPY (query)
    TO STDOUT`` (CSV) when every result column is text, an integer, a number (numeric, real, double), a date or
    a boolean: faster for large results (31 days of supplier_engagement_daily at 10,000 suppliers, 245,666 rows
    x 54 columns: 2.4-2.9 s against 3.7-4.9 s, beside a test run). Any other column type, a repeated column
    name, no rows, or a statement that cannot be read as a subquery (``INSERT ... RETURNING``): ``read_frame``.

    As ``read_frame`` gives them: text ``str`` (NULL NaN); integers int64 (float64 with NaN when a NULL is
    present); numbers float64 (NaN for NULL and for a NaN); dates ``datetime.date`` objects (NULL None);
    booleans bool (objects, NULL None, when a NULL is present); a column whose every value is NULL holds None
    (object).

    Raises:
        psycopg.Error: the query failed.
    """
    statement = sql.SQL(query) if isinstance(query, str) else query
    try:
        with conn.transaction(), conn.cursor() as cur:  # a savepoint when a transaction is open
            cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(statement), params)
            described = [(column.name, column.type_code) for column in cur.description]
    except (psycopg.errors.SyntaxError, psycopg.errors.FeatureNotSupported):
        return read_frame(conn, query, params)
    names = [name for name, _ in described]
    readable = _COPY_TEXT | _COPY_INTEGER | _COPY_NUMBER | {_COPY_DATE, _COPY_BOOLEAN}
    if len(set(names)) < len(names) or ROW_MARK in names or not all(code in readable for _, code in described):
        return read_frame(conn, query, params)
    kinds = dict(described)
    frame = _copy_csv(conn, statement, params,
                      dtype={name: float if code in _COPY_NUMBER else None if code in _COPY_INTEGER else str
                             for name, code in described},
                      nan_text=[name for name, code in described if code in _COPY_NUMBER])
    if not len(frame):
        return read_frame(conn, query, params)
    for name in names:
        values = frame[name]
        present = values.notna()
        if not present.any():
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        elif kinds[name] == _COPY_DATE:
            try:
                days = pd.to_datetime(values, format="%Y-%m-%d").dt.date
            except (ValueError, OverflowError):  # infinity, years pandas cannot hold: psycopg's own decoding
                return read_frame(conn, query, params)
            frame[name] = days.astype(object).where(present, None)
        elif kinds[name] == _COPY_BOOLEAN:
            flags = values.map({"t": True, "f": False})
            frame[name] = flags.astype(bool) if present.all() else flags.astype(object).where(present, None)
    return frame


#: The constant first column ``_copy_csv`` reads and drops: every CSV line then starts with it, so no row is a
#: blank line (one empty text field, which read_csv skips) and no text field starts a line (read_csv can lose
#: a line's leading spaces where its read buffer ends). A query must not return a column of this name.
ROW_MARK = "_cs_pipeline_row"


def _copy_csv(conn: psycopg.Connection, statement: sql.Composable, params: Sequence | dict,
              dtype: dict | None = None, nan_text: Sequence[str] = ()) -> pd.DataFrame:
    """``COPY (SELECT 1 AS <ROW_MARK>, q.* FROM (statement) AS q) TO STDOUT`` as CSV with a random NULL marker,
    parsed by ``pandas.read_csv`` in the connection's encoding (``dtype`` per column, None: inferred), the
    mark column dropped: NULL NaN, any text (empty included) that text, except ``NaN`` in the ``nan_text``
    columns (PostgreSQL's text of a float or numeric NaN)."""
    # NULL is written as a marker drawn at random per call: pandas cannot tell a quoted field from an
    # unquoted one, so any fixed marker (CSV's empty field, \\N) would turn that text in the data into NaN.
    null = _null_marker()
    copy_statement = sql.SQL("COPY (SELECT 1 AS {}, q.* FROM ({}) AS q) TO STDOUT WITH (FORMAT csv, HEADER true, "
                             "NULL {})").format(sql.Identifier(ROW_MARK), statement, sql.Literal(null))
    buffer = io.BytesIO()
    # Parameters merged as execute() merges them (also none: "%%" is then "%", as in read_frame).
    merged = psycopg.ClientCursor(conn).mogrify(copy_statement, params)
    with conn.cursor().copy(merged) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    given = {name: kind for name, kind in (dtype or {}).items() if kind is not None}
    nan = set(nan_text)
    missing = {name: [null, "NaN"] if name in nan else [null] for name in dtype or {}} if nan else [null]
    return pd.read_csv(buffer, na_values=missing, keep_default_na=False, low_memory=False, dtype=given or None,
                       encoding=conn.info.encoding).drop(columns=ROW_MARK)


def fetch_arrays(conn: psycopg.Connection, query: sql.Composable | str, params: Sequence | dict = (),
                 dtypes: Sequence = ()) -> list[np.ndarray]:
    """The one row of a query whose columns are arrays (``SELECT array_agg(a), array_agg(b) FROM ...``), each
    as a numpy array (``dtypes``, one per column: ``object`` for text, ``float`` for numbers (NULL elements
    NaN; ``numeric`` arrives as Decimal and converts); an integer dtype raises on a NULL element; none given:
    numpy's choice, fixed-width ``<U`` for text), read in PostgreSQL's binary format. An array of arrays
    (``array_agg`` of ``ARRAY[...]``) is 2-D. A NULL array (``array_agg`` over no rows) is empty and 1-D,
    shape (0,), also for a 2-D column: reshape it.

    For results of thousands of rows read on every scoring pass: one row of binary arrays costs less than
    ``read_frame_bulk``'s CSV text per row (10,000 suppliers x 12 sums: 34 ms against 45 ms, CPU of client
    and server).

    Raises:
        psycopg.Error: the query failed."""
    with conn.cursor(binary=True) as cur:
        row = cur.execute(query, params or None).fetchone()
    return [np.asarray([] if values is None else values, dtype=dtypes[i] if i < len(dtypes) else None)
            for i, values in enumerate(row)]


def relation_exists(conn: psycopg.Connection, qualified: str) -> bool:
    """True when the table or view ``schema.name`` exists (``to_regclass``)."""
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0]


def columns_of(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    """The column names of ``schema.table`` (empty when it does not exist): for readers of a table another
    stage owns, which may predate a column that stage adds when it next runs (e.g. ``ADDED_COLUMNS``)."""
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s", (schema, table)).fetchall()
    return {name for (name,) in rows}


#: ``ops.statistics_stale(regclass)``: whether a table's planner statistics are stale, the one rule both
#: ``statistics_stale`` (Python writes such as customer_health's) and the dbt macro ``cs_analyze`` (the
#: incremental models' post-hook) call. PostgreSQL's autovacuum re-analyzes a table once the rows inserted,
#: updated and deleted since its last ANALYZE exceed ``autovacuum_analyze_threshold`` +
#: ``autovacuum_analyze_scale_factor`` x its rows (the server's settings; per-table overrides are not read);
#: this counts the calling transaction's own changes too. A table never analyzed is stale, and so is one
#: without a B-tree index leading with a date column: the planner estimates a day past the end of a
#: column's histogram (every new day) from such an index (its actual newest value), and without one it
#: guesses about one row, the nested-loop plans of issue 18 (a BRIN index does not count).
STATISTICS_STALE_FUNCTION = sql.SQL(
    "CREATE OR REPLACE FUNCTION ops.statistics_stale(target regclass) RETURNS boolean LANGUAGE sql AS $$"
    " SELECT c.reltuples < 0"
    " OR NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
    " JOIN pg_am am ON am.oid = ic.relam"
    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
    " WHERE i.indrelid = c.oid AND am.amname = 'btree' AND a.atttypid = 'date'::regtype)"
    " OR coalesce(s.n_mod_since_analyze, 0) + pg_stat_get_xact_tuples_inserted(c.oid)"
    " + pg_stat_get_xact_tuples_updated(c.oid) + pg_stat_get_xact_tuples_deleted(c.oid)"
    " > current_setting('autovacuum_analyze_threshold')::float8"
    " + current_setting('autovacuum_analyze_scale_factor')::float8 * c.reltuples"
    " FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid WHERE c.oid = target $$")


def statistics_stale(conn: psycopg.Connection, qualified: str) -> bool:
    """True when ``schema.name``'s planner statistics are stale (``ops.statistics_stale``: PostgreSQL's
    autovacuum rule, counting the changes of ``conn``'s current transaction, or no B-tree index leading with
    a date). Call it in the transaction that wrote the table and run ANALYZE when it says so: fresh rows get
    statistics at once, not after autovacuum's nap (plans over tables without statistics ran for minutes:
    issue 18), while a daily run that adds a 365th of a table skips an ANALYZE that would change nothing
    (about a second per large table at 10,000 suppliers).

    Raises:
        psycopg.errors.UndefinedTable: no relation ``qualified``.
    """
    return bool(conn.execute("SELECT ops.statistics_stale(%s::regclass)", (qualified,)).fetchone()[0])


def _cell(value: object) -> object:
    """A DataFrame cell as COPY wants it: NaN, NaT and pd.NA become NULL."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


#: Rows per CSV chunk ``copy_frame`` sends: about 8 MB of text for customer_health (its JSON components are
#: most of a row's 1 KB).
COPY_CHUNK_ROWS = 8_192

#: What ``pandas.api.types.infer_dtype`` may say of an object column for ``copy_frame`` to write it through
#: Arrow: every value a str, every value a bool, every value a ``datetime.date`` (not a datetime), or no value.
_ARROW_OBJECT_KINDS = frozenset({"string", "boolean", "date", "empty"})


def _csv_writable(kind: pa.DataType) -> bool:
    """Whether Arrow's CSV writer renders ``kind`` in a form PostgreSQL's text input reads: text (quoted),
    integers, floats (shortest round-trip form), booleans (``true``/``false``), dates, timestamps (ISO 8601,
    ``Z`` for UTC), all-NULL; dictionaries of these (pandas categoricals)."""
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_date(kind)
            or pa.types.is_timestamp(kind) or pa.types.is_null(kind)
            or (pa.types.is_dictionary(kind) and _csv_writable(kind.value_type)))


def _arrow_table(selected: pd.DataFrame) -> pa.Table | None:
    """``selected`` as an Arrow table for ``copy_frame``'s CSV, or None when its text could differ from what
    psycopg's adapters write: repeated column names; an object column of mixed Python types, datetimes (their
    zones may differ), Decimals or anything else outside ``_ARROW_OBJECT_KINDS``; a type outside
    ``_csv_writable``; a frame Arrow refuses. float16/float32 columns are widened to float64 first, as psycopg
    sent them."""
    if selected.columns.has_duplicates:
        return None
    for name in selected.columns:
        values = selected[name]
        if values.dtype == object:
            kind = pd.api.types.infer_dtype(values, skipna=True)
            if kind not in _ARROW_OBJECT_KINDS or (kind == "date" and any(isinstance(v, datetime) for v in values)):
                return None
    narrow = [name for name in selected.columns if selected[name].dtype in (np.float16, np.float32)]
    try:
        table = pa.Table.from_pandas(selected.astype(dict.fromkeys(narrow, "float64")), preserve_index=False)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None
    return table if all(_csv_writable(field.type) for field in table.schema) else None


def copy_frame(conn: psycopg.Connection, table: tuple[str, str], frame: pd.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``schema.table`` (``table`` = (schema, name)) on ``conn``'s current
    transaction; NaN / NaT / pd.NA / None become NULL. Returns the rows written.

    The frame goes through Arrow (``pyarrow.csv``, ``COPY_CHUNK_ROWS`` rows at a time, after one conversion of
    the whole frame) as PostgreSQL CSV: text always quoted, so an empty string stays one and NULL is CSV's
    unquoted empty field; floats in their shortest round-trip form, timestamps ISO 8601. customer_health of a
    31-day window of 10,000 suppliers (262,185 rows): the client's part about 3 s less than row by row. Into
    columns of their own type (numeric, integer, float, boolean, date, timestamptz, text for text) the stored
    values are those psycopg's row-by-row COPY stored (tests/core); a number or boolean into a text column
    would read as Arrow writes it (``5`` for 5.0, ``true``). A frame ``_arrow_table`` declines (mixed Python
    types, datetimes or Decimals in an object column, bytes, lists) is written row by row with psycopg's
    adapters, as before.

    Raises:
        KeyError: a column of ``columns`` is missing from ``frame``.
        psycopg.Error: the server refused a row (types, constraints).
    """
    selected = frame[list(columns)]
    target = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    arrow = _arrow_table(selected)
    if arrow is None:
        with conn.cursor().copy(target) as copy:
            for row in selected.itertuples(index=False, name=None):
                copy.write_row([_cell(v) for v in row])
        return len(frame)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with conn.cursor().copy(sql.SQL("{} (FORMAT csv)").format(target)) as copy:
        for batch in arrow.to_batches(max_chunksize=COPY_CHUNK_ROWS):
            text = io.BytesIO()
            pacsv.write_csv(batch, text, options)
            copy.write(text.getvalue())
    return len(frame)


def now_utc() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)
