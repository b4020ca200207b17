"""Manual interventions (job ``manual_intervention``, ``cs-pipeline intervene``, the dashboard): one
intervention chosen by a person, planned, filtered and delivered through the playbook's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame, relation_exists
from cs_pipeline.interventions.delivery import DeliveryReport, EmailResource, ensure_intervention_tables, record_plan
from cs_pipeline.interventions.planning import apply_filters, next_business_day
from cs_pipeline.interventions.playbook import CHANNELS, MANUAL_PRIORITY, MANUAL_RULE, TEMPLATE_DIR, Playbook
from cs_pipeline.interventions.reservation import PLAN_LOCK_KEY, reserved_on, sending_day
from cs_pipeline.interventions.sending import deliver_one
from cs_pipeline.interventions.store import history

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

#: Reasons a forced manual intervention overrides: the cooldown only (issue 27). Opt-outs, cancellations and
#: the caps are never overridden; manual interventions are never held out as control.
FORCEABLE = ("cooldown",)


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
    same path as the playbook: cancelled suppliers and opt-outs are always respected; the cooldown applies
    unless ``force`` (recorded in ``forced``), the weekly and daily caps and one-rule-per-day always; never
    held out as control (a person chose to act), and left out of the uplift analysis; delivery is the same
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
            filtered = apply_filters(planned, history(conn, playbook, day), suppliers, playbook, day, opted,
                                     force=force, reserved_today=reserved_on(conn, send_day)
                                     ).assign(send_day=send_day)
            record_plan(conn, filtered, run_id)
        elif force and existing[1] == "suppressed" and existing[2] in FORCEABLE:
            # Released from the cooldown only: filtered again (forced), so the caps and opt-outs still hold.
            opted = read_frame(conn, "SELECT supplier_id, channel FROM ops.opt_outs WHERE supplier_id = %s",
                               (supplier_id,))
            send_day = sending_day(conn)
            again = apply_filters(planned, history(conn, playbook, day), suppliers, playbook, day, opted, force=True,
                                  reserved_today=reserved_on(conn, send_day)).iloc[0]
            conn.execute("UPDATE ops.interventions SET status = %s, reason = %s, forced = true, run_id = %s, "
                         "requested_by = %s, send_day = %s, updated_at = now() WHERE intervention_id = %s",
                         (again["status"], again["reason"], run_id, requested_by, send_day, existing[0]))
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
