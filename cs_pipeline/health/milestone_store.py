"""Reading and writing marts.success_milestones (psycopg 3, one transaction per write); the logic is
``milestones.reconcile_milestones``."""

from __future__ import annotations

from datetime import date

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame
from cs_pipeline.health.milestones import MilestoneChanges


def read_milestone_inputs(conn: psycopg.Connection, since: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(facts, stored): every row of marts.fct_supplier_milestone_facts on or after ``since``, and
    marts.success_milestones' ``supplier_id``, ``milestone_type``, ``achieved_at``, ``celebrated``,
    ``retracted_at``."""
    facts = read_frame(conn, "SELECT * FROM marts.fct_supplier_milestone_facts WHERE as_of_date >= %s", (since,))
    stored = read_frame(conn, "SELECT supplier_id, milestone_type, achieved_at, celebrated, retracted_at "
                              "FROM marts.success_milestones")
    return facts, stored


def write_milestone_changes(conn: psycopg.Connection, changes: MilestoneChanges) -> pd.DataFrame:
    """Apply ``changes`` in one transaction: upserts (``retracted_at`` cleared), deletes of uncelebrated
    rows, ``retracted_at = now()`` on celebrated rows no longer supported (the first retraction's time
    is kept). Returns the totals per ``milestone_type``: ``suppliers``, ``uncelebrated``, ``retracted``."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO marts.success_milestones (supplier_id, milestone_type, category, achieved_at)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (supplier_id, milestone_type) DO UPDATE
                  SET achieved_at = EXCLUDED.achieved_at, category = EXCLUDED.category, retracted_at = NULL
                """,
                list(changes.upserts.itertuples(index=False, name=None)),
            )
            cur.executemany("DELETE FROM marts.success_milestones WHERE supplier_id = %s AND milestone_type = %s "
                            "AND NOT celebrated", list(changes.deletes.itertuples(index=False, name=None)))
            cur.executemany("UPDATE marts.success_milestones SET retracted_at = now() WHERE supplier_id = %s "
                            "AND milestone_type = %s AND retracted_at IS NULL",
                            list(changes.retractions.itertuples(index=False, name=None)))
    return read_frame(conn, "SELECT milestone_type, count(*) AS suppliers, "
                            "count(*) FILTER (WHERE NOT celebrated) AS uncelebrated, "
                            "count(*) FILTER (WHERE retracted_at IS NOT NULL) AS retracted "
                            "FROM marts.success_milestones GROUP BY 1 ORDER BY 2 DESC")
