"""The intervention stage end to end, without Dagster: read facts, find due suppliers, plan and reserve
under a PostgreSQL lock, filter, record, deliver and retry. Used by the sensor, the jobs and the CLI.

The stage is split along its seams: ``store`` (reads), ``reservation`` (plan and reserve under the lock),
``sending`` (exactly-once delivery, retries and expiry), ``manual`` (interventions by hand). This module
runs a day and re-exports the names callers use.

Guarantees (see the README, "Interventions"):

* planning and reserving a day's interventions (``plan_day``, ``manual_intervention``) run in one
  transaction holding the advisory lock ``PLAN_LOCK_KEY``; the caps and cooldowns read every row already
  reserved (``planned``, ``sending``, ``sent``, ``failed``) and every control case, so concurrent runs
  cannot exceed them and both arms of the uplift comparison are booked alike;
* delivery is exactly once per key for in-app notifications and call tasks, and for e-mail at the SMTP
  boundary as described in ``delivery``; undelivered messages are retried by later runs until delivered or
  expired (``sending``).
"""

from __future__ import annotations

from datetime import date

import psycopg

from cs_pipeline.interventions.delivery import DeliveryReport, EmailResource
from cs_pipeline.interventions.manual import (  # noqa: F401 (re-exported)
    FORCEABLE,
    ManualInterventionError,
    ManualResult,
    manual_intervention,
)
from cs_pipeline.interventions.playbook import Playbook
from cs_pipeline.interventions.reservation import (  # noqa: F401 (re-exported)
    PLAN_LOCK_KEY,
    plan_day,
    reserve_today,
    reserved_on,
    sending_day,
)
from cs_pipeline.interventions.sending import (  # noqa: F401 (re-exported)
    DELIVERY_LOCK_CLASS,
    deliver_one,
    deliver_pending,
    expire_undelivered,
    retryable,
    undelivered_past_window,
)
from cs_pipeline.interventions.store import (  # noqa: F401 (re-exported)
    disabled_rules,
    due_suppliers,
    history,
    latest_health_day,
    read_facts,
    uncelebrated,
)


def run_interventions(conn: psycopg.Connection, playbook: Playbook, email: EmailResource, rule_name: str | None,
                      day: date, supplier_ids: list[str] | None = None, run_id: str | None = None) -> DeliveryReport:
    """Plan and reserve ``day`` (every rule, ``plan_day``), then deliver what is pending.

    ``rule_name`` / ``supplier_ids`` restrict planning (suppliers) and delivery (rule, suppliers); None: all.
    Safe to re-run and to run concurrently: reserved rows are never planned twice, sent rows never sent
    again, failed ones retried (also by later days' runs), interrupted ones reconciled (see ``deliver_one``,
    ``deliver_pending``).

    Raises:
        KeyError: the playbook has no rule ``rule_name``.
    """
    if rule_name:
        playbook.rule(rule_name)
    report = DeliveryReport()
    report.planned, report.suppressed = plan_day(conn, playbook, day, supplier_ids, run_id)
    return deliver_pending(conn, playbook, email, day, rule_name, supplier_ids, report)
