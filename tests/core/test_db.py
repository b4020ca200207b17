"""cs_pipeline.core.db against the embedded PostgreSQL."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pytest

from cs_pipeline.core.db import (
    fetch_arrays,
    read_frame,
    read_frame_bulk,
    statistics_stale,
)


def test_read_frame_bulk_keeps_nulls_empty_strings_and_hostile_text_apart(conn):
    """Issue 18: the gates read through COPY; a NULL must stay a NULL (not-null expectations), an empty
    string or a literal \\N an ordinary string, and the values match read_frame's."""
    conn.execute("CREATE TEMP TABLE t (id text, n numeric, d date, note text)")
    rows = [("a", 1.5, "2026-11-21", None), ("b", None, None, ""), ("c", 3, "2026-01-02", "\\N"),
            ("d", -2, "2026-01-03", 'comma, "quote"\nnewline')]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s)", rows)
    query = "SELECT * FROM t WHERE id <> %s ORDER BY id"
    bulk = read_frame_bulk(conn, query, ("zz",))
    plain = read_frame(conn, query, ("zz",))
    assert list(bulk.columns) == ["id", "n", "d", "note"] == list(plain.columns)
    assert bulk["id"].tolist() == ["a", "b", "c", "d"]
    assert bulk["n"].tolist()[0] == 1.5 and math.isnan(bulk["n"].tolist()[1])
    assert bulk["note"].isna().tolist() == [True, False, False, False]
    assert bulk["note"].tolist()[1:] == ["", "\\N", 'comma, "quote"\nnewline'] == plain["note"].tolist()[1:]
    assert bulk["d"].isna().tolist() == [False, True, False, False]
    assert str(bulk["d"].tolist()[0]) == "2026-11-21"
    alone = read_frame_bulk(conn, "SELECT note FROM t WHERE id IN ('a', 'b') ORDER BY id")  # one column
    assert alone["note"].isna().tolist() == [True, False] and alone["note"].tolist()[1] == ""
    empty = read_frame_bulk(conn, "SELECT * FROM t WHERE id = %s", ("none",))
    assert list(empty.columns) == ["id", "n", "d", "note"] and len(empty) == 0


def test_fetch_arrays_keeps_text_numbers_nulls_and_grids(conn):
    """fetch_arrays (churn scoring's per-pass reads): ids that look like numbers stay text, NULL elements are
    NaN in float columns, an array of arrays is 2-D, and a query over no rows gives empty arrays."""
    conn.execute("CREATE TEMP TABLE a (id text, n bigint, m bigint, f float8)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO a VALUES (%s, %s, %s, %s)",
                        [("001", 1, None, 0.1), ("1e3", None, 4, None), ("s 1", 7, 8, 2.5)])
    query = ("SELECT array_agg(id ORDER BY id), array_agg(ARRAY[n, m] ORDER BY id), array_agg(f ORDER BY id) "
             "FROM a WHERE id <> %s")
    ids, grid, f = fetch_arrays(conn, query, ("zz",), (object, float, float))
    assert ids.dtype == object and ids.tolist() == ["001", "1e3", "s 1"]
    np.testing.assert_array_equal(grid, [[1, np.nan], [np.nan, 4], [7, 8]])
    np.testing.assert_array_equal(f, [0.1, np.nan, 2.5])
    empty = fetch_arrays(conn, query.replace("<>", "="), ("zz",), (object, float, float))
    assert [len(column) for column in empty] == [0, 0, 0]
    conn.rollback()


def test_copy_frame_round_trips_nulls_empty_strings_and_hostile_text(conn):
    """copy_frame: NULLs, empty strings, quotes, newlines, commas, a literal \\N,
    dates, timestamps, booleans and JSON text arrive as they were."""
    import json
    from datetime import date, datetime, timezone

    import numpy as np
    import pandas as pd

    from cs_pipeline.core.db import copy_frame

    conn.execute("CREATE TEMP TABLE c (id integer, note text, score numeric(5, 2), d date, at timestamptz, "
                 "ok boolean, doc jsonb)")
    frame = pd.DataFrame({
        "id": [1, 2, 3, 4],
        "note": ["", None, "\\N", 'comma, "quote"\nnewline'],
        "score": [12.5, np.nan, 0.1, 99.99],
        "d": [date(2026, 11, 21), None, date(2026, 1, 2), date(2026, 1, 3)],
        "at": pd.to_datetime(["2026-11-21T10:00:00Z", None, "2026-01-02T00:00:01.5Z", "2026-01-03T23:59:59Z"], utc=True, format="ISO8601"),
        "ok": [True, False, None, True],
        "doc": [json.dumps({"a": 1}), json.dumps({"b": [1, None]}), "{}", json.dumps({"t": "x,\"y\""})],
    })
    assert copy_frame(conn, ("c",), frame, list(frame.columns)) == 4
    rows = conn.execute("SELECT id, note, score::float, d, at, ok, doc FROM c ORDER BY id").fetchall()
    assert [r[1] for r in rows] == ["", None, "\\N", 'comma, "quote"\nnewline']
    assert [r[2] for r in rows] == [12.5, None, 0.1, 99.99]
    assert [r[3] for r in rows] == [date(2026, 11, 21), None, date(2026, 1, 2), date(2026, 1, 3)]
    assert rows[0][4] == datetime(2026, 11, 21, 10, tzinfo=timezone.utc) and rows[1][4] is None
    assert rows[2][4] == datetime(2026, 1, 2, 0, 0, 1, 500000, tzinfo=timezone.utc)
    assert [r[5] for r in rows] == [True, False, None, True]
    assert [r[6] for r in rows] == [{"a": 1}, {"b": [1, None]}, {}, {"t": 'x,"y"'}]


def test_statistics_stale_follows_autovacuums_rule_and_counts_the_open_transaction(warehouse):
    """Issue 18: a table is re-analyzed right after a write only when PostgreSQL's autovacuum would
    (autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x rows), counting the writing
    transaction's own changes; a table never analyzed, or without a B-tree index leading with a date (the
    planner's only way to see a new day past the histogram), is always stale."""
    table = "public.stats_probe"
    with warehouse.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.stats_probe")
        conn.execute("CREATE TABLE public.stats_probe (day date, id integer)")
        try:
            conn.execute("CREATE INDEX stats_probe_day ON public.stats_probe (day, id)")
            conn.execute("INSERT INTO public.stats_probe SELECT date '2026-01-01' + i % 50, i "
                         "FROM generate_series(1, 1000) i")
            assert statistics_stale(conn, table)  # never analyzed
            conn.execute("SELECT pg_stat_force_next_flush()")  # the inserts reach the shared counters now
            conn.execute("ANALYZE public.stats_probe")
            assert not statistics_stale(conn, table)
            threshold, scale = conn.execute(
                "SELECT current_setting('autovacuum_analyze_threshold')::int, "
                "current_setting('autovacuum_analyze_scale_factor')::float8").fetchone()
            limit = int(threshold + scale * 1000)  # 150 changed rows by PostgreSQL's defaults
            with conn.transaction(force_rollback=True):
                conn.execute("INSERT INTO public.stats_probe SELECT date '2026-03-01', i "
                             "FROM generate_series(1, %s) i", (limit - 10,))
                assert not statistics_stale(conn, table)
                conn.execute("DELETE FROM public.stats_probe WHERE id <= 20")  # deletes count too
                assert statistics_stale(conn, table)
            conn.execute("DROP INDEX public.stats_probe_day")
            conn.execute("CREATE INDEX stats_probe_id_day ON public.stats_probe (id, day)")
            conn.execute("CREATE INDEX stats_probe_brin ON public.stats_probe USING brin (day)")
            conn.execute("ANALYZE public.stats_probe")
            assert statistics_stale(conn, table)  # no B-tree leads with the day
        finally:
            conn.execute("DROP TABLE public.stats_probe")
    with warehouse.connect() as conn, pytest.raises(psycopg.errors.UndefinedTable):
        statistics_stale(conn, "public.no_such_table")


def test_copy_frame_stores_what_psycopgs_row_by_row_copy_stores(conn):
    """copy_frame writes through Arrow's CSV writer: every value must arrive as psycopg's own adapters
    (one ``write_row`` per row, the previous way) store it: floats rounded into numeric columns from the
    same digits (ties such as 0.00005 included), float8 to the bit, timestamps to the microsecond, text with
    quotes, backslashes, tabs and non-ASCII. A column Arrow cannot type (mixed Python objects) still loads."""
    from datetime import date, timedelta

    import pandas as pd

    from cs_pipeline.core.db import copy_frame

    rng = np.random.default_rng(7)
    n = 3000
    floats = np.concatenate([rng.normal(0, 1, n - 8), [0.00005, 0.00015, -0.00025, 1e-7, 12.34565, 0.1 + 0.2, -0.0,
                                                       np.nan]])
    texts = ["", None, "\\", "a\tb", "x\\Ny", "é ü 日本", '"', "\r\n"]
    frame = pd.DataFrame({
        "k": np.arange(n),
        "p": floats,  # numeric(6, 4)
        "f": floats * 1e3,  # float8
        "s": [texts[i % len(texts)] for i in range(n)],
        "d": [date(2026, 1, 1) + timedelta(days=int(i % 400)) for i in range(n)],
        "t": pd.Timestamp("2026-03-29T00:59:59.999999Z") + pd.to_timedelta(rng.integers(0, 10**12, n), unit="us"),
        "b": [None if i % 5 == 0 else bool(i % 2) for i in range(n)],
    })
    for name in ("fast", "rows"):
        conn.execute(f"CREATE TEMP TABLE {name} (k integer, p numeric(6, 4), f float8, s text, d date, "
                     "t timestamptz, b boolean)")
    assert copy_frame(conn, ("fast",), frame, list(frame.columns)) == n
    with conn.cursor().copy("COPY rows (k, p, f, s, d, t, b) FROM STDIN") as copy:
        for row in frame.itertuples(index=False, name=None):
            copy.write_row([None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row])
    query = "SELECT k, p::text, f, s, d, t, b FROM {} ORDER BY k"
    fast, rows = (conn.execute(query.format(name)).fetchall() for name in ("fast", "rows"))
    assert fast == rows
    assert fast[n - 1][1] is None and fast[1][3] is None and fast[0][3] == ""

    mixed = pd.DataFrame({"k": [1, 2], "s": ["a", 7]})  # Arrow refuses a column of str and int
    assert copy_frame(conn, ("rows",), mixed, ["k", "s"]) == 2
    assert conn.execute("SELECT s FROM rows WHERE k IN (1, 2) AND d IS NULL ORDER BY k").fetchall() == [("a",), ("7",)]


def test_copy_frame_declines_what_arrow_would_write_differently(conn):
    """Review of the Arrow path: a float32 column is widened as psycopg widened it (0.1f is not 0.1); an object
    column mixing dates and datetimes keeps its times; aware datetimes of two zones keep their instants."""
    from datetime import date, datetime, timedelta, timezone

    import pandas as pd

    from cs_pipeline.core.db import copy_frame

    conn.execute("CREATE TEMP TABLE w (k integer, p numeric(6, 4), f float8, t timestamptz)")
    plus5 = timezone(timedelta(hours=5))
    frame = pd.DataFrame({"k": [1, 2], "p": np.array([0.00005, 0.1], dtype=np.float32),
                          "f": np.array([0.1, 2.5], dtype=np.float32),
                          "t": [date(2026, 1, 2), datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)]})
    assert copy_frame(conn, ("w",), frame, list(frame.columns)) == 2
    assert copy_frame(conn, ("w",), pd.DataFrame({"k": [3, 4], "t": [datetime(2026, 1, 2, 3, 4, tzinfo=plus5),
                                                                      datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)]}),
                      ["k", "t"]) == 2
    rows = conn.execute("SELECT k, p::text, f, t FROM w ORDER BY k").fetchall()
    assert rows[0][1] == str(round(__import__("decimal").Decimal(float(np.float32(0.00005))), 4))
    assert rows[0][2] == float(np.float32(0.1))
    assert rows[1][3] == datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    assert rows[2][3] == datetime(2026, 1, 1, 22, 4, tzinfo=timezone.utc)
    conn.rollback()


def test_read_frame_copy_gives_read_frames_frame(conn):
    """read_frame_copy (the health stage's large reads) reads through COPY but must give read_frame's own
    DataFrame: dtypes and values of text (numbers as text, empty strings, NULLs), integers with and without
    NULLs, numeric, float8, dates, booleans with and without NULLs, and all-NULL columns of each type."""
    import pandas as pd

    from cs_pipeline.core.db import read_frame_copy

    conn.execute("CREATE TEMP TABLE r (id text, code text, n integer, big bigint, m numeric(6, 2), f float8, "
                 "d date, ok boolean, flag boolean, none_i integer, none_d date, none_t text, none_n numeric, "
                 "none_b boolean, at timestamptz)")
    rows = [("a", "001", 1, 2**40, 1.5, 0.1, "2026-11-21", True, True, None, None, None, None, None, "2026-01-01Z"),
            ("b", "", None, 3, None, None, None, False, None, None, None, None, None, None, None),
            ("c", None, 3, -4, 12, 1e-7, "1999-12-31", True, False, None, None, None, None, None, None),
            ("d", 'x,"y"\nz', 4, 5, -0.25, -2.5, "2026-01-02", False, True, None, None, None, None, None, None)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO r VALUES (" + ", ".join(["%s"] * 15) + ")", rows)
    query = ("SELECT id, code, n, big, m, f, d, ok, flag, none_i, none_d, none_t, none_n, none_b FROM r "
             "WHERE id <> %s ORDER BY id")
    copied, plain = read_frame_copy(conn, query, ("zz",)), read_frame(conn, query, ("zz",))
    pd.testing.assert_frame_equal(copied, plain)
    assert copied["code"].tolist()[:2] == ["001", ""] and copied["d"].tolist()[1] is None
    for narrowed in ("id, ok", "id, n, d", "id, flag"):  # no NULLs / NULLs in every shape
        query = f"SELECT {narrowed} FROM r WHERE id <> 'b' ORDER BY id"
        pd.testing.assert_frame_equal(read_frame_copy(conn, query), read_frame(conn, query))
    one_column = "SELECT code FROM r ORDER BY id"  # its empty string would be a blank CSV line
    pd.testing.assert_frame_equal(read_frame_copy(conn, one_column), read_frame(conn, one_column))
    for other in ("SELECT ('NaN'::float8) AS x, 'NaN'::numeric AS y, 1 AS k UNION ALL SELECT 1.5, 2, 2",
                  "SELECT 'a%%' AS a, 2 AS b",  # the same text as read_frame
                  # text starting each line, across read_csv's 256 KiB buffers: no leading space lost
                  "SELECT repeat(' ', (i %% 17)) || i AS s, i AS k FROM generate_series(1, 40000) AS i"):
        pd.testing.assert_frame_equal(read_frame_copy(conn, other), read_frame(conn, other))
    conn.execute("CREATE TEMP TABLE ins (a text, b integer)")
    returning = "INSERT INTO ins VALUES ('x', 1) RETURNING a, b"  # not a subquery: read_frame runs it
    assert read_frame_copy(conn, returning).values.tolist() == [["x", 1]]
    with_time = "SELECT id, at FROM r ORDER BY id"  # not a column type it converts: read_frame's result
    pd.testing.assert_frame_equal(read_frame_copy(conn, with_time), read_frame(conn, with_time))
    conn.rollback()
