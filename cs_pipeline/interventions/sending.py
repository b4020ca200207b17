"""Delivering reserved interventions exactly once, and retrying the ones that did not arrive (issue 27).

* ``deliver_one``: one row at most once (exactly once unless a delivery was interrupted mid-DATA), under a
  session advisory lock on the row; see ``delivery`` for the SMTP boundary.
* ``deliver_pending``: a run delivers its day's rows, then retries every undelivered row of earlier days
  (``failed`` before acceptance, or ``planned`` / ``sending`` without DATA left by a run that died) with the
  same idempotency key and Message-ID, so exactly-once still holds, after an exponential backoff
  (``next_attempt_at``), until it is delivered or ``retry_window_hours`` (playbook) have passed since it was
  planned: then it is ``expired`` with the reason. A CS-team alert e-mail is retried past the window for as
  long as its supplier is still critical (expired, reason ``no_longer_critical``, once it is not).
* A failed attempt does not start a cooldown: only ``sent`` rows and rows still being retried count for
  cooldowns and caps; an expired row counts for nothing.
"""

from __future__ import annotations

from datetime import date

import psycopg

from cs_pipeline.core.db import relation_exists
from cs_pipeline.interventions.delivery import (
    DeliveryReport,
    EmailResource,
    InvalidAddress,
    NotAccepted,
    build_message,
    message_id,
    now_utc,
    redact,
    validate_address,
)
from cs_pipeline.interventions.planning import render
from cs_pipeline.interventions.playbook import Playbook
from cs_pipeline.interventions.reservation import reserve_today

#: Class id of the per-intervention session advisory lock held while a row is being delivered.
DELIVERY_LOCK_CLASS = 73_114
#: Backoff after a failed attempt: 10 minutes x 2^(attempts - 1), at most 6 hours (SQL assignment).
BACKOFF = ("next_attempt_at = now() + least(interval '10 minutes' * power(2, greatest(attempts - 1, 0)), "
           "interval '6 hours')")

#: Undelivered rows a run may retry: not sent, not suppressed, not expired, not an invalid address (certain
#: failure) and not possibly accepted (``sending`` at stage ``data`` is reconciled, never sent again).
UNDELIVERED = ("(status IN ('planned', 'sending') OR (status = 'failed' AND coalesce(reason, '') "
               "NOT IN ('invalid_email', 'invalid_message', 'render_error')))")
IS_ALERT = "(audience = 'cs_team' AND channel = 'email')"

#: Still critical: the supplier's newest score says critical.
STILL_CRITICAL = """
EXISTS (SELECT 1 FROM (SELECT DISTINCT ON (supplier_id) risk_level FROM marts.customer_health h
                       WHERE h.supplier_id = i.supplier_id ORDER BY supplier_id, as_of_date DESC) latest
        WHERE latest.risk_level = 'critical')
"""


def expire_undelivered(conn: psycopg.Connection, playbook: Playbook) -> int:
    """Mark ``expired`` the undelivered rows past their retry window: supplier messages planned more than
    ``retry_window_hours`` ago (reason ``retry_window_passed``) and CS-team alerts whose supplier is no longer
    critical (reason ``no_longer_critical``; a still-critical supplier's alert is retried past the window).
    Rows possibly accepted (``sending`` at stage ``data``) are left for reconciliation. Returns rows expired.
    Commits."""
    critical = STILL_CRITICAL if relation_exists(conn, "marts.customer_health") else "false"
    with conn.transaction():
        alerts = conn.execute(
            f"UPDATE ops.interventions i SET status = 'expired', reason = 'no_longer_critical', updated_at = now() "
            f"WHERE {UNDELIVERED} AND {IS_ALERT} AND coalesce(delivery_stage, '') <> 'data' AND NOT {critical}"
        ).rowcount
        others = conn.execute(
            f"UPDATE ops.interventions i SET status = 'expired', reason = 'retry_window_passed', updated_at = now() "
            f"WHERE {UNDELIVERED} AND NOT {IS_ALERT} AND coalesce(delivery_stage, '') <> 'data' "
            "AND created_at < now() - make_interval(hours => %s)", (playbook.retry_window_hours,)).rowcount
    conn.commit()
    return alerts + others


def deliver_pending(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, day: date,
                    rule_name: str | None = None, supplier_ids: list[str] | None = None,
                    report: DeliveryReport | None = None) -> DeliveryReport:
    """Deliver the rows of ``day`` (optionally one rule / some suppliers) still ``planned``, ``failed``
    (except invalid addresses) or ``sending`` (reconciled), then retry the undelivered rows of other days
    whose backoff has passed, highest priority first.

    Rows past their window are expired first (``expire_undelivered``). A re-run of the row's own day
    retries it at once (an operator's re-run); later runs respect ``next_attempt_at``.
    """
    report = report or DeliveryReport()
    report.expired += expire_undelivered(conn, playbook)
    restrict = "AND (%s::text IS NULL OR rule = %s) AND (%s::text[] IS NULL OR supplier_id = ANY(%s)) "
    params = (rule_name, rule_name, supplier_ids, supplier_ids)
    pending = conn.execute(
        "SELECT intervention_id FROM ops.interventions WHERE as_of_date = %s " + restrict +
        "AND (status IN ('planned', 'sending') OR (status = 'failed' AND coalesce(reason, '') <> 'invalid_email')) "
        "ORDER BY priority DESC, intervention_id",
        (day, *params)).fetchall()
    retries = conn.execute(
        "SELECT intervention_id FROM ops.interventions WHERE as_of_date <> %s " + restrict +
        f"AND {UNDELIVERED} AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
        "ORDER BY priority DESC, as_of_date, intervention_id", (day, *params)).fetchall()
    conn.commit()
    for (intervention_id,) in pending:
        deliver_one(conn, playbook, email, intervention_id, report)
    for (intervention_id,) in retries:
        report.retried += 1
        deliver_one(conn, playbook, email, intervention_id, report)
    return report


def retryable(conn: psycopg.Connection) -> int:
    """Undelivered rows a run would retry now (backoff passed): the sensor launches a run for them even on a
    day where no supplier is newly due. 0 when the table does not exist yet."""
    if not relation_exists(conn, "ops.interventions"):
        return 0
    count = conn.execute(f"SELECT count(*) FROM ops.interventions WHERE {UNDELIVERED} "
                         "AND (next_attempt_at IS NULL OR next_attempt_at <= now())").fetchone()[0]
    conn.commit()
    return int(count)


def undelivered_past_window(conn: psycopg.Connection, playbook: Playbook) -> dict[str, int]:
    """For the asset check: ``undelivered`` (rows not delivered although planned more than
    ``retry_window_hours`` ago: still retried, e.g. a still-critical supplier's alert, or left by runs that
    stopped) and ``expired`` (rows given up in the last ``cooldown_days`` days), by count."""
    undelivered = conn.execute(
        f"SELECT count(*) FROM ops.interventions WHERE {UNDELIVERED} "
        "AND created_at < now() - make_interval(hours => %s)", (playbook.retry_window_hours,)).fetchone()[0]
    expired = conn.execute("SELECT count(*) FROM ops.interventions WHERE status = 'expired' "
                           "AND updated_at > now() - make_interval(days => %s)",
                           (max(playbook.cooldown_days, 1),)).fetchone()[0]
    conn.commit()
    return {"undelivered": int(undelivered), "expired": int(expired)}


ROW_SQL = """
SELECT supplier_id, rule, channel, as_of_date, template, audience, scheduled_for, context,
       health_score::float8, risk_level, drivers, status, delivery_stage, send_day, forced
FROM ops.interventions WHERE intervention_id = %s
"""



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
    full_day = reserve_today(conn, playbook, intervention_id, send_day) \
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
        _update(conn, intervention_id, f"status = 'failed', delivery_stage = NULL, last_error = %s, {BACKOFF}",
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
            _update(conn, intervention_id, f"status = 'failed', last_error = %s, {BACKOFF}",
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

