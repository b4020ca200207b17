"""The intervention stage end to end, without Dagster: read facts, find due suppliers, plan, filter,
record and deliver. Used by the sensor, the job and the CLI."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame, relation_exists
from cs_pipeline.interventions.delivery import (
    DeliveryReport,
    EmailResource,
    build_message,
    ensure_intervention_tables,
    message_id,
    now_utc,
    record_plan,
)
from cs_pipeline.interventions.planning import apply_filters, newly_matching, plan, render
from cs_pipeline.interventions.playbook import Playbook

FACTS_SQL = """
SELECT h.supplier_id, h.as_of_date, h.risk_level, h.previous_risk_level, h.score_delta_7d::float8 AS score_delta_7d,
       h.score_delta_30d::float8 AS score_delta_30d, e.lifecycle_stage, e.days_since_onboarded,
       e.days_since_last_login, e.days_since_signup, e.status
FROM marts.customer_health h
JOIN marts.supplier_engagement_daily e USING (supplier_id, as_of_date)
WHERE h.as_of_date = %s
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


def due_suppliers(conn: psycopg.Connection, playbook: Playbook, day: date) -> dict[str, list[str]]:
    """Rule name -> supplier ids that newly match it on ``day`` (rules in priority order)."""
    today = read_frame(conn, FACTS_SQL, (day,))
    yesterday = read_frame(conn, FACTS_SQL, (day - timedelta(days=1),))
    due = {}
    for rule in sorted(playbook.rules, key=lambda r: -r.priority):
        milestones = uncelebrated(conn, day, rule.condition.milestone_max_age_days) \
            if rule.condition.milestone_achieved else None
        ids = newly_matching(rule, today, yesterday, milestones)
        if ids:
            due[rule.name] = ids
    return due


CONTEXT_SQL = """
WITH latest AS (SELECT max(_partition_date) AS d FROM raw.suppliers),
owners AS (
  SELECT s.supplier_id, s.email FROM raw.suppliers s, latest WHERE s._partition_date = latest.d
),
least_adopted AS (
  SELECT DISTINCT ON (supplier_id) supplier_id, feature AS least_adopted_feature
  FROM marts.fct_feature_adoption WHERE is_core
  ORDER BY supplier_id, active_days_30d, uses_90d, feature
)
SELECT h.supplier_id, d.business_name, h.vendor_category, h.tier, d.status AS supplier_status,
       h.health_score::float8 AS health_score, h.risk_level, h.previous_risk_level, h.drivers,
       e.days_since_last_login, e.days_since_onboarded, la.least_adopted_feature, o.email
FROM marts.customer_health h
JOIN marts.supplier_engagement_daily e USING (supplier_id, as_of_date)
LEFT JOIN marts.dim_suppliers d USING (supplier_id)
LEFT JOIN least_adopted la USING (supplier_id)
LEFT JOIN owners o USING (supplier_id)
WHERE h.as_of_date = %s AND h.supplier_id = ANY(%s)
ORDER BY h.supplier_id
"""


def run_interventions(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, rule_name: str,
                      day: date, supplier_ids: list[str] | None = None, run_id: str | None = None) -> DeliveryReport:
    """Plan, filter, record and deliver ``rule_name`` for ``day``.

    ``supplier_ids`` None: the suppliers newly matching the rule that day. Safe to re-run: already
    sent interventions are never sent again; failed ones are retried.

    Raises:
        KeyError: the playbook has no such rule.
    """
    ensure_intervention_tables(conn)
    rule = playbook.rule(rule_name)
    if supplier_ids is None:
        supplier_ids = due_suppliers(conn, playbook, day).get(rule_name, [])
    report = DeliveryReport()
    if not supplier_ids:
        return report
    context = read_frame(conn, CONTEXT_SQL, (day, list(supplier_ids)))
    context["as_of_date_text"] = day.isoformat()
    if rule.condition.milestone_achieved:
        milestones = uncelebrated(conn, day, rule.condition.milestone_max_age_days)
        grouped = milestones.groupby("supplier_id")["milestone_type"].apply(list)
        context["milestones"] = context["supplier_id"].map(grouped)
        context = context.loc[context["milestones"].notna()]
    planned = plan(rule, context, day)
    sent = read_frame(conn, "SELECT supplier_id, channel, audience, as_of_date FROM ops.interventions "
                            "WHERE status = 'sent' AND as_of_date > %s AND NOT (rule = %s AND as_of_date = %s)",
                      (day - timedelta(days=max(playbook.cooldown_days, 7) + 1), rule_name, day))
    suppliers = context.rename(columns={"supplier_status": "status"})[["supplier_id", "status"]]
    opted = read_frame(conn, "SELECT supplier_id, channel FROM ops.opt_outs WHERE supplier_id = ANY(%s)",
                       (list(supplier_ids),))
    filtered = apply_filters(planned, sent, suppliers, playbook, day, opted)
    record_plan(conn, filtered, run_id)
    report.suppressed = int((filtered["status"] == "suppressed").sum())
    return deliver_pending(conn, playbook, email, rule_name, day, list(supplier_ids), report)


def deliver_pending(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, rule_name: str, day: date,
                    supplier_ids: list[str], report: DeliveryReport | None = None) -> DeliveryReport:
    """Deliver the rows of (rule, day, suppliers) still planned or failed, one transaction each."""
    report = report or DeliveryReport()
    pending = conn.execute(
        "SELECT intervention_id FROM ops.interventions WHERE rule = %s AND as_of_date = %s "
        "AND supplier_id = ANY(%s) AND status IN ('planned', 'failed') ORDER BY priority DESC, intervention_id",
        (rule_name, day, supplier_ids)).fetchall()
    conn.commit()
    for (intervention_id,) in pending:
        with conn.transaction():
            row = conn.execute(
                "SELECT supplier_id, rule, channel, as_of_date, template, audience, scheduled_for, context, "
                "health_score::float8, risk_level, drivers, status FROM ops.interventions "
                "WHERE intervention_id = %s AND status IN ('planned', 'failed') FOR UPDATE SKIP LOCKED",
                (intervention_id,)).fetchone()
            if row is None:
                report.skipped_already_done += 1
                continue
            (supplier_id, rule, channel, as_of, template, audience, scheduled_for, context, health, risk, drivers,
             _status) = row
            fields = {**context, "supplier_id": supplier_id, "rule": rule, "as_of_date": as_of.isoformat(),
                      "health_score": "n/a" if health is None else f"{health:.0f}", "risk_level": risk or "n/a",
                      "drivers": drivers or ""}
            fields.setdefault("business_name", supplier_id)
            fields["milestones_sentence"] = ", ".join(m.replace("_", " ") for m in context.get("milestones") or [])
            for key in ("vendor_category", "tier", "previous_risk_level", "days_since_last_login",
                        "least_adopted_feature"):
                fields.setdefault(key, None)
            subject, body = render(template, fields)
            msg_id = message_id(supplier_id, rule, as_of, channel)
            try:
                recipient = _deliver(conn, playbook, email, intervention_id, supplier_id, channel, audience,
                                     context, subject, body, msg_id, scheduled_for)
            except Exception as exc:  # SMTP/OS errors: record, keep the others going
                conn.execute("UPDATE ops.interventions SET status = 'failed', attempts = attempts + 1, "
                             "last_error = %s, updated_at = now() WHERE intervention_id = %s",
                             (f"{type(exc).__name__}: {exc}"[:500], intervention_id))
                report.failed += 1
                continue
            conn.execute("UPDATE ops.interventions SET status = 'sent', sent_at = %s, message_id = %s, recipient = %s, "
                         "attempts = attempts + 1, last_error = NULL, updated_at = now() WHERE intervention_id = %s",
                         (now_utc(), msg_id, recipient, intervention_id))
            if context.get("milestones") and channel in ("email", "in_app"):
                conn.execute("UPDATE marts.success_milestones SET celebrated = true, celebrated_at = now() "
                             "WHERE supplier_id = %s AND milestone_type = ANY(%s) AND NOT celebrated",
                             (supplier_id, list(context["milestones"])))
            report.sent += 1
    return report


def _deliver(conn, playbook, email, intervention_id, supplier_id, channel, audience, context, subject, body,
             msg_id, scheduled_for) -> str:
    if channel == "in_app":
        conn.execute("INSERT INTO ops.in_app_notifications (intervention_id, supplier_id, title, body) "
                     "VALUES (%s, %s, %s, %s) ON CONFLICT (intervention_id) DO NOTHING",
                     (intervention_id, supplier_id, subject, body))
        return f"in_app:{supplier_id}"
    if channel == "call":
        call_type = context.get("call_type") or "check_in"
        conn.execute("INSERT INTO ops.support_interactions (intervention_id, supplier_id, interaction_type, "
                     "scheduled_for, notes) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (intervention_id) DO NOTHING",
                     (intervention_id, supplier_id, call_type, scheduled_for, f"{subject}\n\n{body}"))
        return "cs_team:call_queue"
    recipient = playbook.cs_team_email if audience == "cs_team" else context.get("email")
    if not recipient:
        raise ValueError(f"no e-mail address for supplier {supplier_id}")
    email.send(build_message(playbook.from_email, recipient, subject, body, msg_id))
    return recipient
