"""Planning and reserving a day's interventions under a PostgreSQL lock, so caps and cooldowns hold across
concurrent runs (``plan_day``), and moving a retried message's reservation to the day it really goes out
(``reserve_today``).

Planning and reserving run in one transaction holding the advisory lock ``PLAN_LOCK_KEY``; the caps and
cooldowns read every row already reserved (``planned``, ``sending``, ``sent``, ``failed``) and every control
case (identical bookkeeping of both arms), so concurrent runs cannot exceed them.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame
from cs_pipeline.interventions.delivery import ensure_intervention_tables, record_plan
from cs_pipeline.interventions.planning import COUNTED_STATUSES, apply_filters, plan
from cs_pipeline.interventions.playbook import Playbook
from cs_pipeline.interventions.store import CONTEXT_SQL, due_suppliers, history, uncelebrated

#: Advisory lock (one bigint key) held around plan + reserve, so caps and cooldowns hold across runs.
PLAN_LOCK_KEY = 7_311_401_401

#: The current UTC calendar day by the database clock (``clock_timestamp``: the time of the statement, not of
#: the transaction start, so a lock waited for across midnight gives the day the rows are really sent on).
SEND_DAY_SQL = "SELECT (clock_timestamp() AT TIME ZONE 'UTC')::date"

#: What the daily cap counts: supplier-facing rows reserved for the day, control cases included (a control
#: case takes its slot as if contacted, issue 27).
RESERVED_SQL = """
SELECT count(*) FROM ops.interventions
WHERE send_day = %s AND audience = 'supplier' AND coalesce(reason, '') <> 'invalid_email'
  AND (status = ANY(%s) OR (status = 'suppressed' AND reason = 'control'))
"""


def sending_day(conn: psycopg.Connection) -> date:
    """Today in UTC by the database clock: the day messages planned now are reserved to go out on."""
    return conn.execute(SEND_DAY_SQL).fetchone()[0]


def reserved_on(conn: psycopg.Connection, send_day: date) -> int:
    """Supplier-facing messages reserved to go out on the UTC day ``send_day`` (statuses ``COUNTED_STATUSES``,
    invalid addresses excluded), whatever their as_of day, rule, run or batch, manual ones included:
    what the global ``daily_cap`` counts. Call it under ``PLAN_LOCK_KEY``."""
    return conn.execute(RESERVED_SQL, (send_day, list(COUNTED_STATUSES))).fetchone()[0]



def plan_day(conn: psycopg.Connection, playbook: Playbook, day: date, supplier_ids: list[str] | None = None,
             run_id: str | None = None) -> tuple[int, int]:
    """Plan every rule due on ``day``, filter (``apply_filters``) and reserve the rows, idempotently.

    The history read, the filters and the insert run in one transaction holding the advisory lock
    ``PLAN_LOCK_KEY``: two runs at once take turns, and the second sees the first's reservations (daily
    cap, weekly cap, cooldowns, one rule per supplier and day). The daily cap counts the messages
    reserved for the UTC day of sending (``send_day``), across as_of days, rules, runs and manual ones.
    Keys already in ``ops.interventions`` keep their row (a re-run plans only what is new, e.g. suppliers
    newly due after a re-materialisation).

    Args:
        supplier_ids: restrict planning to these suppliers (None: every supplier due).

    Returns:
        (rows inserted, of which suppressed). Commits.
    """
    ensure_intervention_tables(conn)
    due = due_suppliers(conn, playbook, day)
    if supplier_ids is not None:
        wanted = set(supplier_ids)
        due = {rule: [s for s in ids if s in wanted] for rule, ids in due.items()}
        due = {rule: ids for rule, ids in due.items() if ids}
    conn.commit()
    if not due:
        return 0, 0
    every = sorted({s for ids in due.values() for s in ids})
    context = read_frame(conn, CONTEXT_SQL, {"day": day, "ids": every})
    context["as_of_date_text"] = day.isoformat()
    frames = []
    for rule_name, ids in due.items():
        rule = playbook.rule(rule_name)
        rule_context = context.loc[context["supplier_id"].isin(ids)].copy()
        if rule.condition.milestone_achieved:
            milestones = uncelebrated(conn, day, rule.condition.milestone_max_age_days)
            grouped = milestones.groupby("supplier_id")["milestone_type"].apply(list)
            rule_context["milestones"] = rule_context["supplier_id"].map(grouped)
            rule_context = rule_context.loc[rule_context["milestones"].notna()]
        if len(rule_context):
            frames.append(plan(rule, rule_context, day))
    conn.commit()
    if not frames:
        return 0, 0
    planned = pd.concat(frames, ignore_index=True)
    suppliers = context.rename(columns={"supplier_status": "status"})[["supplier_id", "status"]]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK_KEY,))
        existing = conn.execute("SELECT supplier_id, rule, channel FROM ops.interventions WHERE as_of_date = %s",
                                (day,)).fetchall()
        known = set(existing)
        fresh = planned.loc[[(s, r, c) not in known for s, r, c in
                             zip(planned["supplier_id"], planned["rule"], planned["channel"])]]
        if fresh.empty:
            return 0, 0
        opted = read_frame(conn, "SELECT supplier_id, channel FROM ops.opt_outs WHERE supplier_id = ANY(%s)",
                           (sorted(set(fresh["supplier_id"])),))
        send_day = sending_day(conn)
        filtered = apply_filters(fresh, history(conn, playbook, day), suppliers, playbook, day, opted,
                                 reserved_today=reserved_on(conn, send_day)).assign(send_day=send_day)
        inserted = record_plan(conn, filtered, run_id)
    return inserted, int((filtered["status"] == "suppressed").sum())


def reserve_today(conn: psycopg.Connection, playbook: Playbook, intervention_id: int,
                  send_day: date | None) -> date | None:
    """Make sure a supplier-facing row about to be sent counts in today's (UTC) daily cap.

    A row reserved for today passes. A row reserved for an earlier UTC day (a retry, or a run across
    midnight) is moved to today under ``PLAN_LOCK_KEY`` when today's cap has room. Returns None when the row
    may go now, else the full day (row unchanged: a later run retries it). Commits.
    """
    today = sending_day(conn)
    conn.commit()
    if send_day == today:
        return None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK_KEY,))
        today = sending_day(conn)
        if reserved_on(conn, today) >= playbook.daily_cap:
            return today
        conn.execute("UPDATE ops.interventions SET send_day = %s, updated_at = now() WHERE intervention_id = %s",
                     (today, intervention_id))
    conn.commit()
    return None

