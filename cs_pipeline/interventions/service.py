"""The intervention stage end to end, without Dagster: read facts, find due suppliers, plan and reserve
under a PostgreSQL lock, filter, record and deliver. Used by the sensor, the jobs and the CLI.

Guarantees (see the README, "Interventions"):

* planning and reserving a day's interventions (``plan_day``, ``manual_intervention``) run in one
  transaction holding the advisory lock ``PLAN_LOCK_KEY``; the caps and cooldowns read every row already
  reserved (``planned``, ``sending``, ``sent``, ``failed``), so concurrent runs cannot exceed them;
* delivery is exactly once per key for in-app notifications and call tasks, and for e-mail at the SMTP
  boundary as described in ``delivery``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame, relation_exists
from cs_pipeline.interventions.delivery import (
    DeliveryReport,
    EmailResource,
    InvalidAddress,
    NotAccepted,
    build_message,
    ensure_intervention_tables,
    message_id,
    now_utc,
    record_plan,
    redact,
    validate_address,
)
from cs_pipeline.interventions.planning import (
    COUNTED_STATUSES,
    FACT_COLUMNS,
    apply_filters,
    newly_matching,
    next_business_day,
    plan,
    previous_scored,
    render,
)
from cs_pipeline.interventions.playbook import (
    CHANNELS,
    MANUAL_PRIORITY,
    MANUAL_RULE,
    TEMPLATE_DIR,
    Playbook,
)

#: Advisory lock (one bigint key) held around plan + reserve, so caps and cooldowns hold across runs.
PLAN_LOCK_KEY = 7_311_401_401
#: Class id of the per-intervention session advisory lock held while a row is being delivered.
DELIVERY_LOCK_CLASS = 73_114

FACTS_SQL = """
SELECT h.supplier_id, h.as_of_date, h.risk_level, h.previous_risk_level, h.score_delta_7d::float8 AS score_delta_7d,
       h.score_delta_30d::float8 AS score_delta_30d, e.lifecycle_stage, e.days_since_onboarded,
       e.days_since_last_login, e.days_since_signup, e.status
FROM marts.customer_health h
JOIN marts.supplier_engagement_daily e USING (supplier_id, as_of_date)
WHERE h.as_of_date BETWEEN %s AND %s
"""


def latest_health_day(conn: psycopg.Connection) -> date | None:
    """The newest as_of_date in marts.customer_health (None when empty or missing)."""
    if not relation_exists(conn, "marts.customer_health"):
        return None
    return conn.execute("SELECT max(as_of_date) FROM marts.customer_health").fetchone()[0]


def uncelebrated(conn: psycopg.Connection, day: date, max_age_days: int = 7) -> pd.DataFrame:
    """Uncelebrated milestones achieved in the ``max_age_days`` days up to ``day``:
    supplier_id, milestone_type."""
    if not relation_exists(conn, "marts.success_milestones"):
        return pd.DataFrame(columns=["supplier_id", "milestone_type"])
    return read_frame(conn, "SELECT supplier_id, milestone_type FROM marts.success_milestones "
                            "WHERE NOT celebrated AND achieved_at <= %s AND achieved_at > %s ORDER BY 1, 2",
                      (day, day - timedelta(days=max_age_days)))


def read_facts(conn: psycopg.Connection, day: date, max_gap_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``FACT_COLUMNS`` rows of ``day``, each supplier's last scored row within ``max_gap_days`` before it)."""
    frame = read_frame(conn, FACTS_SQL, (day - timedelta(days=max_gap_days), day))
    if frame.empty:
        empty = pd.DataFrame(columns=FACT_COLUMNS)
        return empty, empty
    days = pd.to_datetime(frame["as_of_date"]).dt.date
    return frame.loc[days == day].reset_index(drop=True), previous_scored(frame, day, max_gap_days)


def due_suppliers(conn: psycopg.Connection, playbook: Playbook, day: date) -> dict[str, list[str]]:
    """Rule name -> supplier ids due for it on ``day`` (rules in priority order; see ``newly_matching``)."""
    today, previous = read_facts(conn, day, playbook.transition_max_gap_days)
    due = {}
    for rule in sorted(playbook.rules, key=lambda r: -r.priority):
        milestones = uncelebrated(conn, day, rule.condition.milestone_max_age_days) \
            if rule.condition.milestone_achieved else None
        ids = newly_matching(rule, today, previous, milestones)
        if ids:
            due[rule.name] = ids
    return due


#: The context of the suppliers due on a day. Every CTE is MATERIALIZED and filtered to the due suppliers, and
#: the newest supplier snapshot is found once (a scalar subquery prunes raw.suppliers to one partition): the
#: planner cannot re-scan every daily partition per row, whatever its estimates (issue 18: 57 s for 300
#: suppliers after a backfill, before ANALYZE had run).
CONTEXT_SQL = """
WITH due AS MATERIALIZED (SELECT DISTINCT unnest(%(ids)s::text[]) AS supplier_id),
owners AS MATERIALIZED (
  SELECT s.supplier_id, s.email, s.business_name FROM raw.suppliers s JOIN due USING (supplier_id)
  WHERE s._partition_date = (SELECT max(_partition_date) FROM raw.suppliers)
),
least_adopted AS MATERIALIZED (
  SELECT DISTINCT ON (supplier_id) supplier_id, feature AS least_adopted_feature
  FROM marts.fct_feature_adoption JOIN due USING (supplier_id) WHERE is_core
  ORDER BY supplier_id, active_days_30d, uses_90d, feature
),
health AS MATERIALIZED (
  SELECT h.supplier_id, h.vendor_category, h.tier, h.health_score, h.risk_level, h.previous_risk_level, h.drivers
  FROM marts.customer_health h JOIN due USING (supplier_id) WHERE h.as_of_date = %(day)s
),
engagement AS MATERIALIZED (
  SELECT e.supplier_id, e.days_since_last_login, e.days_since_onboarded
  FROM marts.supplier_engagement_daily e JOIN due USING (supplier_id) WHERE e.as_of_date = %(day)s
),
dims AS MATERIALIZED (SELECT d.supplier_id, d.status FROM marts.dim_suppliers d JOIN due USING (supplier_id))
SELECT h.supplier_id, o.business_name, h.vendor_category, h.tier, d.status AS supplier_status,
       h.health_score::float8 AS health_score, h.risk_level, h.previous_risk_level, h.drivers,
       e.days_since_last_login, e.days_since_onboarded, la.least_adopted_feature, o.email
FROM health h
JOIN engagement e USING (supplier_id)
LEFT JOIN dims d USING (supplier_id)
LEFT JOIN least_adopted la USING (supplier_id)
LEFT JOIN owners o USING (supplier_id)
ORDER BY h.supplier_id
"""

#: Rows that count for caps and cooldowns, and the control cases (for ``control_other_rule``).
HISTORY_SQL = """
SELECT supplier_id, rule, channel, audience, as_of_date, status, reason FROM ops.interventions
WHERE as_of_date > %s AND (status = ANY(%s) OR (status = 'suppressed' AND reason = 'control'))
  AND coalesce(reason, '') <> 'invalid_email'
"""


#: The current UTC calendar day by the database clock (``clock_timestamp``: the time of the statement, not of
#: the transaction start, so a lock waited for across midnight gives the day the rows are really sent on).
SEND_DAY_SQL = "SELECT (clock_timestamp() AT TIME ZONE 'UTC')::date"

RESERVED_SQL = """
SELECT count(*) FROM ops.interventions
WHERE send_day = %s AND audience = 'supplier' AND status = ANY(%s) AND coalesce(reason, '') <> 'invalid_email'
"""


def sending_day(conn: psycopg.Connection) -> date:
    """Today in UTC by the database clock: the day messages planned now are reserved to go out on."""
    return conn.execute(SEND_DAY_SQL).fetchone()[0]


def reserved_on(conn: psycopg.Connection, send_day: date) -> int:
    """Supplier-facing messages reserved to go out on the UTC day ``send_day`` (statuses ``COUNTED_STATUSES``,
    invalid addresses excluded), whatever their as_of day, rule, run or batch, manual ones included:
    what the global ``daily_cap`` counts. Call it under ``PLAN_LOCK_KEY``."""
    return conn.execute(RESERVED_SQL, (send_day, list(COUNTED_STATUSES))).fetchone()[0]


def _history(conn: psycopg.Connection, playbook: Playbook, day: date) -> pd.DataFrame:
    window = max(playbook.cooldown_days, 7)
    return read_frame(conn, HISTORY_SQL, (day - timedelta(days=window), list(COUNTED_STATUSES)))


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
        filtered = apply_filters(fresh, _history(conn, playbook, day), suppliers, playbook, day, opted,
                                 reserved_today=reserved_on(conn, send_day)).assign(send_day=send_day)
        inserted = record_plan(conn, filtered, run_id)
    return inserted, int((filtered["status"] == "suppressed").sum())


def run_interventions(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, rule_name: str | None,
                      day: date, supplier_ids: list[str] | None = None, run_id: str | None = None) -> DeliveryReport:
    """Plan and reserve ``day`` (every rule, ``plan_day``), then deliver what is pending.

    ``rule_name`` / ``supplier_ids`` restrict planning (suppliers) and delivery (rule, suppliers); None: all.
    Safe to re-run and to run concurrently: reserved rows are never planned twice, sent rows never sent
    again, failed ones retried, interrupted ones reconciled (see ``deliver_one``).

    Raises:
        KeyError: the playbook has no rule ``rule_name``.
    """
    if rule_name:
        playbook.rule(rule_name)
    report = DeliveryReport()
    report.planned, report.suppressed = plan_day(conn, playbook, day, supplier_ids, run_id)
    return deliver_pending(conn, playbook, email, day, rule_name, supplier_ids, report)


def deliver_pending(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, day: date,
                    rule_name: str | None = None, supplier_ids: list[str] | None = None,
                    report: DeliveryReport | None = None) -> DeliveryReport:
    """Deliver the rows of ``day`` (optionally one rule / some suppliers) still ``planned``, ``failed``
    (except invalid addresses) or ``sending`` (reconciled), highest priority first."""
    report = report or DeliveryReport()
    pending = conn.execute(
        "SELECT intervention_id FROM ops.interventions WHERE as_of_date = %s "
        "AND (%s::text IS NULL OR rule = %s) AND (%s::text[] IS NULL OR supplier_id = ANY(%s)) "
        "AND (status IN ('planned', 'sending') OR (status = 'failed' AND coalesce(reason, '') <> 'invalid_email')) "
        "ORDER BY priority DESC, intervention_id",
        (day, rule_name, rule_name, supplier_ids, supplier_ids)).fetchall()
    conn.commit()
    for (intervention_id,) in pending:
        deliver_one(conn, playbook, email, intervention_id, report)
    return report


ROW_SQL = """
SELECT supplier_id, rule, channel, as_of_date, template, audience, scheduled_for, context,
       health_score::float8, risk_level, drivers, status, delivery_stage, send_day, forced
FROM ops.interventions WHERE intervention_id = %s
"""


def _reserve_today(conn: psycopg.Connection, playbook: Playbook, intervention_id: int,
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


def deliver_one(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, intervention_id: int,
                report: DeliveryReport) -> None:
    """Deliver one intervention at most once (exactly once unless a delivery was interrupted mid-DATA).

    Holds a session advisory lock on the row for the whole delivery (a concurrent deliverer skips the row).
    ``sending`` rows found here were left by an interrupted delivery: with ``delivery_stage = 'data'`` the
    message may have been accepted, so the row is recorded ``sent`` with ``reason = 'unconfirmed'`` and not
    sent again; without it DATA never started and the message is sent. Before sending, cancellations
    (``marts.dim_suppliers``) and opt-outs are checked again: one recorded after planning suppresses the
    row (reason ``cancelled`` / ``opted_out``; CS-team alert e-mails excepted). Commits.
    """
    lock = (DELIVERY_LOCK_CLASS, intervention_id % 2_147_483_647)
    locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s::int)", lock).fetchone()[0]
    conn.commit()
    if not locked:
        report.skipped_already_done += 1
        return
    try:
        _deliver_locked(conn, playbook, email, intervention_id, report)
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s::int)", lock)
        conn.commit()


def _opted_out(conn: psycopg.Connection, supplier_id: str, channel: str) -> bool:
    """True when ``ops.opt_outs`` holds the supplier for ``channel`` or for every channel (channel null)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM ops.opt_outs WHERE supplier_id = %s "
                        "AND (channel IS NULL OR channel = %s))", (supplier_id, channel)).fetchone()[0]


def _cancelled(conn: psycopg.Connection, supplier_id: str) -> bool:
    """True when ``marts.dim_suppliers`` (the status planning reads) has the supplier ``cancelled`` now."""
    if not relation_exists(conn, "marts.dim_suppliers"):
        return False
    return conn.execute("SELECT EXISTS (SELECT 1 FROM marts.dim_suppliers WHERE supplier_id = %s "
                        "AND status = 'cancelled')", (supplier_id,)).fetchone()[0]


def _update(conn: psycopg.Connection, intervention_id: int, assignments: str, params: tuple = ()) -> None:
    conn.execute(f"UPDATE ops.interventions SET {assignments}, updated_at = now() WHERE intervention_id = %s",
                 (*params, intervention_id))
    conn.commit()


def _deliver_locked(conn, playbook, email, intervention_id, report) -> None:
    row = conn.execute(ROW_SQL, (intervention_id,)).fetchone()
    if row is None or row[11] not in ("planned", "failed", "sending"):
        conn.commit()
        report.skipped_already_done += 1
        return
    (supplier_id, rule, channel, as_of, template, audience, scheduled_for, context, health, risk, drivers,
     status, stage, send_day, forced) = row
    msg_id = message_id(supplier_id, rule, as_of, channel)
    if status == "sending" and stage == "data":
        _update(conn, intervention_id, "status = 'sent', reason = 'unconfirmed', sent_at = coalesce(sent_at, %s), "
                "message_id = %s, last_error = 'interrupted after DATA started: not sent again'",
                (now_utc(), msg_id))
        report.reconciled += 1
        return
    if not (audience == "cs_team" and channel == "email") and _cancelled(conn, supplier_id):
        # Cancelled after planning (a retry of a failed row, a forced re-launch): never contacted.
        _update(conn, intervention_id, "status = 'suppressed', reason = 'cancelled', delivery_stage = NULL")
        report.suppressed += 1
        return
    if not (audience == "cs_team" and channel == "email") and _opted_out(conn, supplier_id, channel):
        # An opt-out recorded after planning (a retry of a failed row, a forced re-launch): it still holds.
        _update(conn, intervention_id, "status = 'suppressed', reason = 'opted_out', delivery_stage = NULL")
        report.suppressed += 1
        return
    try:
        fields = {**context, "supplier_id": supplier_id, "rule": rule, "as_of_date": as_of.isoformat(),
                  "health_score": "n/a" if health is None else f"{health:.0f}", "risk_level": risk or "n/a",
                  "drivers": drivers or ""}
        fields.setdefault("business_name", supplier_id)
        fields["milestones_sentence"] = ", ".join(m.replace("_", " ") for m in context.get("milestones") or [])
        for key in ("vendor_category", "tier", "previous_risk_level", "days_since_last_login",
                    "least_adopted_feature", "message"):
            fields.setdefault(key, None)
        subject, body = render(template, fields)
    except Exception as exc:  # a template error is certain non-delivery: record it, keep the others going
        _update(conn, intervention_id, "status = 'failed', reason = 'render_error', attempts = attempts + 1, "
                "last_error = %s", (redact(f"{type(exc).__name__}: {exc}")[:500],))
        report.failed += 1
        return
    full_day = _reserve_today(conn, playbook, intervention_id, send_day) \
        if audience == "supplier" and not forced else None
    if full_day is not None:  # reserved for an earlier UTC day and not sent then; today's cap is full: it waits
        _update(conn, intervention_id, "last_error = %s",
                (f"daily_cap of {full_day} reached: not sent, left for a later run",))
        report.deferred += 1
        return
    if channel in ("in_app", "call"):
        with conn.transaction():
            if channel == "in_app":
                conn.execute("INSERT INTO ops.in_app_notifications (intervention_id, supplier_id, title, body) "
                             "VALUES (%s, %s, %s, %s) ON CONFLICT (intervention_id) DO NOTHING",
                             (intervention_id, supplier_id, subject, body))
                recipient = f"in_app:{supplier_id}"
            else:
                conn.execute("INSERT INTO ops.support_interactions (intervention_id, supplier_id, interaction_type, "
                             "scheduled_for, notes) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (intervention_id) DO NOTHING",
                             (intervention_id, supplier_id, context.get("call_type") or "check_in", scheduled_for,
                              f"{subject}\n\n{body}"))
                recipient = "cs_team:call_queue"
            _mark_sent(conn, intervention_id, supplier_id, channel, context, msg_id, recipient)
        conn.commit()
        report.sent += 1
        return
    try:
        recipient = playbook.cs_team_email if audience == "cs_team" else validate_address(context.get("email"))
        message = build_message(playbook.from_email, recipient, subject, body, msg_id)
    except (InvalidAddress, ValueError) as exc:
        reason = "invalid_email" if isinstance(exc, InvalidAddress) else "invalid_message"
        _update(conn, intervention_id, "status = 'failed', reason = %s, attempts = attempts + 1, last_error = %s",
                (reason, redact(str(exc))[:500]))
        report.failed += 1
        return
    _update(conn, intervention_id, "status = 'sending', delivery_stage = NULL, reason = NULL, "
            "attempts = attempts + 1, recipient = %s", (recipient,))
    try:
        email.send(message, before_data=lambda: _update(conn, intervention_id, "delivery_stage = 'data'"))
    except NotAccepted as exc:
        _update(conn, intervention_id, "status = 'failed', delivery_stage = NULL, last_error = %s",
                (redact(str(exc))[:500],))
        report.failed += 1
        return
    except Exception as exc:
        conn.rollback()
        stage = conn.execute("SELECT delivery_stage FROM ops.interventions WHERE intervention_id = %s",
                             (intervention_id,)).fetchone()[0]
        detail = f"{type(exc).__name__}: {exc}"
        if stage == "data":  # lost while DATA was in flight: maybe accepted; left 'sending' for reconciliation
            _update(conn, intervention_id, "last_error = %s",
                    (redact(f"uncertain (DATA in flight), not sent again: {detail}")[:500],))
        else:  # DATA never started: certainly not accepted, retried by the next run
            _update(conn, intervention_id, "status = 'failed', last_error = %s",
                    (redact(f"failed before DATA, retried by the next run: {detail}")[:500],))
        report.failed += 1
        return
    with conn.transaction():
        _mark_sent(conn, intervention_id, supplier_id, channel, context, msg_id, recipient)
    conn.commit()
    report.sent += 1


def _mark_sent(conn, intervention_id, supplier_id, channel, context, msg_id, recipient) -> None:
    conn.execute("UPDATE ops.interventions SET status = 'sent', delivery_stage = NULL, sent_at = %s, message_id = %s, "
                 "recipient = %s, reason = NULL, last_error = NULL, "
                 "attempts = attempts + CASE WHEN channel = 'email' THEN 0 ELSE 1 END, updated_at = now() "
                 "WHERE intervention_id = %s", (now_utc(), msg_id, recipient, intervention_id))
    if context.get("milestones") and channel in ("email", "in_app"):
        conn.execute("UPDATE marts.success_milestones SET celebrated = true, celebrated_at = now() "
                     "WHERE supplier_id = %s AND milestone_type = ANY(%s) AND NOT celebrated",
                     (supplier_id, list(context["milestones"])))


# --- manual interventions (job manual_intervention, cs-pipeline intervene) ---------------------------

DEFAULT_MANUAL_TEMPLATE = {"email": "manual_message", "in_app": "manual_message", "call": "check_in_call"}

MANUAL_CONTEXT_SQL = """
WITH owners AS MATERIALIZED (
  SELECT s.supplier_id, s.email, s.business_name FROM raw.suppliers s
  WHERE s._partition_date = (SELECT max(_partition_date) FROM raw.suppliers) AND s.supplier_id = %(sid)s
),
health AS (
  SELECT DISTINCT ON (supplier_id) supplier_id, health_score::float8 AS health_score, risk_level,
         previous_risk_level, drivers
  FROM marts.customer_health WHERE supplier_id = %(sid)s ORDER BY supplier_id, as_of_date DESC
),
least_adopted AS (
  SELECT DISTINCT ON (supplier_id) supplier_id, feature AS least_adopted_feature
  FROM marts.fct_feature_adoption WHERE is_core AND supplier_id = %(sid)s
  ORDER BY supplier_id, active_days_30d, uses_90d, feature
)
SELECT d.supplier_id, o.business_name, d.vendor_category, d.tier, d.status AS supplier_status,
       h.health_score, h.risk_level, h.previous_risk_level, h.drivers, la.least_adopted_feature, o.email
FROM marts.dim_suppliers d
LEFT JOIN health h USING (supplier_id)
LEFT JOIN least_adopted la USING (supplier_id)
LEFT JOIN owners o USING (supplier_id)
WHERE d.supplier_id = %(sid)s
"""

#: Reasons a forced manual intervention overrides (opt-outs and cancellations are never overridden).
FORCEABLE = ("cooldown", "weekly_cap", "daily_cap", "one_rule_per_day", "control_other_rule")


class ManualInterventionError(ValueError):
    """A manual intervention request that cannot be planned (unknown supplier, channel or template)."""


@dataclass
class ManualResult:
    """Outcome of one manual intervention: the ``ops.interventions`` row and its final status/reason.

    ``delivery`` says what this launch did: ``sent`` (delivered now), ``already_sent`` (the same supplier,
    channel and day was delivered earlier: not sent again), ``reconciled`` (an interrupted earlier delivery
    recorded as sent, not sent again) or ``not_sent`` (suppressed, failed or being delivered by another run).
    """

    intervention_id: int
    status: str
    reason: str | None
    forced: bool
    report: DeliveryReport = field(default_factory=DeliveryReport)
    delivery: str = "not_sent"
    sent_at: datetime | None = None

    @property
    def note(self) -> str:
        """One line for logs, the CLI and run metadata (no address, no message text)."""
        when = f" (sent at {self.sent_at:%Y-%m-%d %H:%M} UTC)" if self.sent_at else ""
        return {"sent": "sent",
                "already_sent": f"already delivered earlier{when}: not sent again",
                "reconciled": "an interrupted earlier delivery recorded as sent (unconfirmed): not sent again",
                }.get(self.delivery, f"not sent: {self.status}{f' ({self.reason})' if self.reason else ''}")


def manual_intervention(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, supplier_id: str,
                        channel: str, template: str | None = None, message: str | None = None, force: bool = False,
                        run_id: str | None = None, requested_by: str | None = None,
                        day: date | None = None) -> ManualResult:
    """Plan, filter and deliver one intervention by hand (WS-168 "quick intervention actions").

    Recorded in ``ops.interventions`` with ``rule = 'manual'`` and ``as_of_date`` = ``day`` (default: today,
    UTC), so it is part of the intervention history and of every later cooldown and cap. Goes through the
    same path as the playbook: cancelled suppliers and opt-outs are always respected; cooldown, weekly and
    daily caps and one-rule-per-day apply unless ``force`` (recorded in ``forced``); delivery is the same
    exactly-once path. At most one manual intervention per supplier, channel and day: launching it again
    retries or reconciles that one (and ``force`` releases it when it was held back); when it was already
    delivered, nothing is sent and ``delivery`` is ``already_sent``.

    Args:
        channel: email, in_app or call (a call task for the CS team on the next business day).
        template: a template in config/templates (default: manual_message, or check_in_call for calls).
        message: free text shown in the template (``{{ message }}``).

    Raises:
        ManualInterventionError: unknown channel, template or supplier.
    """
    if channel not in CHANNELS:
        raise ManualInterventionError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    template = template or DEFAULT_MANUAL_TEMPLATE[channel]
    if not template.replace("_", "").isalnum() or not (TEMPLATE_DIR / f"{template}.txt").is_file():
        raise ManualInterventionError(f"template {template!r} not found in {TEMPLATE_DIR}")
    day = day or datetime.now(timezone.utc).date()
    ensure_intervention_tables(conn)
    if not relation_exists(conn, "marts.dim_suppliers"):
        raise ManualInterventionError("no suppliers in the warehouse yet (marts.dim_suppliers is missing)")
    context = read_frame(conn, MANUAL_CONTEXT_SQL, {"sid": supplier_id})
    conn.commit()
    if context.empty:
        raise ManualInterventionError(f"unknown supplier {supplier_id!r}")
    record = context.iloc[0].to_dict()
    scheduled = next_business_day(day) if channel == "call" else day
    row = {**record, "rule": MANUAL_RULE, "channel": channel, "as_of_date": day, "template": template,
           "audience": "cs_team" if channel == "call" else "supplier", "call_type": "check_in" if channel == "call"
           else None, "priority": MANUAL_PRIORITY, "scheduled_for": scheduled, "message": message or "",
           "as_of_date_text": day.isoformat(), "forced": bool(force), "requested_by": requested_by}
    planned = pd.DataFrame([row])
    suppliers = pd.DataFrame({"supplier_id": [supplier_id], "status": [record.get("supplier_status")]})
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK_KEY,))
        existing = conn.execute("SELECT intervention_id, status, reason FROM ops.interventions WHERE supplier_id = %s "
                                "AND rule = %s AND as_of_date = %s AND channel = %s",
                                (supplier_id, MANUAL_RULE, day, channel)).fetchone()
        if existing is None:
            opted = read_frame(conn, "SELECT supplier_id, channel FROM ops.opt_outs WHERE supplier_id = %s",
                               (supplier_id,))
            send_day = sending_day(conn)
            filtered = apply_filters(planned, _history(conn, playbook, day), suppliers, playbook, day, opted,
                                     force=force, reserved_today=reserved_on(conn, send_day)
                                     ).assign(send_day=send_day)
            record_plan(conn, filtered, run_id)
        elif force and existing[1] == "suppressed" and existing[2] in FORCEABLE:
            conn.execute("UPDATE ops.interventions SET status = 'planned', reason = NULL, forced = true, run_id = %s, "
                         "requested_by = %s, updated_at = now() WHERE intervention_id = %s",
                         (run_id, requested_by, existing[0]))
        intervention_id = conn.execute(
            "SELECT intervention_id FROM ops.interventions WHERE supplier_id = %s AND rule = %s AND as_of_date = %s "
            "AND channel = %s", (supplier_id, MANUAL_RULE, day, channel)).fetchone()[0]
    report = DeliveryReport()
    deliver_one(conn, playbook, email, intervention_id, report)
    status, reason, forced, sent_at = conn.execute(
        "SELECT status, reason, forced, sent_at FROM ops.interventions WHERE intervention_id = %s",
        (intervention_id,)).fetchone()
    conn.commit()
    delivery = "not_sent" if status != "sent" else "sent" if report.sent else \
        "reconciled" if report.reconciled else "already_sent"
    return ManualResult(intervention_id, status, reason, forced, report, delivery,
                        sent_at.astimezone(timezone.utc) if sent_at else None)
