"""Issue 28: a retracted milestone (the data no longer supports it) is never offered for celebration."""

from __future__ import annotations

from datetime import date, timedelta

from cs_pipeline.health.store import ensure_health_tables
from cs_pipeline.interventions.store import uncelebrated

DAY = date(2025, 4, 10)


def test_uncelebrated_skips_retracted_milestones(conn):
    ensure_health_tables(conn)
    conn.commit()
    try:
        rows = [("pit_live", "first_login", DAY - timedelta(days=1), None),
                ("pit_retracted", "first_login", DAY - timedelta(days=1), "2025-04-10T06:00:00Z"),
                ("pit_old", "first_login", DAY - timedelta(days=9), None)]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO marts.success_milestones (supplier_id, milestone_type, category, achieved_at, "
                            "retracted_at) VALUES (%s, %s, 'setup', %s, %s)", rows)
        found = uncelebrated(conn, DAY, max_age_days=7)
        mine = found.loc[found["supplier_id"].str.startswith("pit_")]
        assert list(mine["supplier_id"]) == ["pit_live"]
    finally:
        conn.rollback()


def test_uncelebrated_reads_a_table_from_before_retracted_at(conn):
    # Upgraded warehouse: the sensor ticks before the health stage has run again and added retracted_at.
    ensure_health_tables(conn)
    conn.commit()
    try:
        conn.execute("ALTER TABLE marts.success_milestones DROP COLUMN retracted_at")
        conn.execute("INSERT INTO marts.success_milestones (supplier_id, milestone_type, category, achieved_at) "
                     "VALUES ('pit_before', 'first_login', 'setup', %s)", (DAY - timedelta(days=1),))
        found = uncelebrated(conn, DAY, max_age_days=7)
        assert list(found.loc[found["supplier_id"].str.startswith("pit_"), "supplier_id"]) == ["pit_before"]
    finally:
        conn.rollback()
