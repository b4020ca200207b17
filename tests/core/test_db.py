"""cs_pipeline.core.db against the embedded PostgreSQL."""

from __future__ import annotations

import math

from cs_pipeline.core.db import read_frame, read_frame_bulk


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
    empty = read_frame_bulk(conn, "SELECT * FROM t WHERE id = %s", ("none",))
    assert list(empty.columns) == ["id", "n", "d", "note"] and len(empty) == 0
