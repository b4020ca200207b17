"""Reading the cases' outcomes from the warehouse and writing ``marts.intervention_outcomes`` (the analysis
itself is ``outcomes``: pure functions).
"""

from __future__ import annotations

import pandas as pd
import psycopg

from cs_pipeline.core.db import copy_frame, read_frame, relation_exists
from cs_pipeline.interventions.outcomes import case_outcomes, recovered

#: Every row of a randomised case (supplier-facing e-mail or in-app of a playbook rule, assigned to treatment
#: whatever became of it, or held out as control) with the score 7, 14, 30 and ``outcome_days`` days later,
#: churn within ``outcome_days`` (null until that day is scored) and contamination: a message of another rule
#: (or a manual one, or a call task) sent to the supplier from the trigger day to ``outcome_days`` after it.
OUTCOMES_SQL = """
WITH base AS (
  SELECT i.intervention_id, i.supplier_id, i.rule, i.channel, i.audience, i.as_of_date, i.status, i.reason,
         (i.status = 'suppressed' AND i.reason = 'control') AS is_control,
         i.health_score::float8 AS health_at_trigger, i.risk_level AS risk_at_trigger
  FROM ops.interventions i
  WHERE i.audience = 'supplier' AND i.channel <> 'call' AND i.rule <> 'manual'
    AND (i.status <> 'suppressed' OR i.reason = 'control')
),
latest AS MATERIALIZED (SELECT max(as_of_date) AS day FROM marts.customer_health)
SELECT b.*,
  h7.health_score::float8 AS health_7d, h7.risk_level AS risk_7d,
  h14.health_score::float8 AS health_14d, h14.risk_level AS risk_14d,
  h30.health_score::float8 AS health_30d, h30.risk_level AS risk_30d,
  ho.health_score::float8 AS health_outcome, ho.risk_level AS risk_outcome,
  CASE WHEN (SELECT day FROM latest) >= b.as_of_date + %(days)s THEN {churn} END AS churned,
  EXISTS (SELECT 1 FROM ops.interventions o WHERE o.supplier_id = b.supplier_id AND o.rule <> b.rule
          AND o.status = 'sent' AND (o.audience = 'supplier' OR o.channel = 'call')
          AND o.as_of_date >= b.as_of_date AND o.as_of_date <= b.as_of_date + %(days)s) AS contaminated
FROM base b
LEFT JOIN marts.customer_health h7 ON h7.supplier_id = b.supplier_id AND h7.as_of_date = b.as_of_date + 7
LEFT JOIN marts.customer_health h14 ON h14.supplier_id = b.supplier_id AND h14.as_of_date = b.as_of_date + 14
LEFT JOIN marts.customer_health h30 ON h30.supplier_id = b.supplier_id AND h30.as_of_date = b.as_of_date + 30
LEFT JOIN marts.customer_health ho ON ho.supplier_id = b.supplier_id AND ho.as_of_date = b.as_of_date + %(days)s
ORDER BY b.intervention_id
"""
CHURN_SQL = """EXISTS (SELECT 1 FROM marts.supplier_engagement_daily e WHERE e.supplier_id = b.supplier_id
  AND e.as_of_date > b.as_of_date AND e.as_of_date <= b.as_of_date + %(days)s AND e.status = 'cancelled')"""

COLUMNS = {
    "intervention_id": "bigint PRIMARY KEY", "supplier_id": "text NOT NULL", "rule": "text NOT NULL",
    "channel": "text NOT NULL", "audience": "text NOT NULL", "as_of_date": "date NOT NULL", "status": "text NOT NULL",
    "reason": "text", "is_control": "boolean NOT NULL", "arm": "text NOT NULL", "health_at_trigger": "numeric(5, 2)",
    "risk_at_trigger": "text", "health_7d": "numeric(5, 2)", "risk_7d": "text", "health_14d": "numeric(5, 2)",
    "risk_14d": "text", "health_30d": "numeric(5, 2)", "risk_30d": "text", "outcome_days": "integer NOT NULL",
    "health_outcome": "numeric(5, 2)", "risk_outcome": "text", "health_change": "numeric(6, 2)",
    "churned": "boolean", "contaminated": "boolean NOT NULL", "recovered": "boolean",
}


def read_outcome_rows(conn: psycopg.Connection, outcome_days: int) -> pd.DataFrame:
    """The ``OUTCOMES_SQL`` rows plus ``arm`` (treated / control), ``outcome_days``, ``health_change`` (points)
    and ``recovered``: the input of ``outcomes.case_outcomes`` / ``uplift_table``, one row per message."""
    churn = CHURN_SQL if relation_exists(conn, "marts.supplier_engagement_daily") else "NULL::boolean"
    frame = read_frame(conn, OUTCOMES_SQL.format(churn=churn), {"days": outcome_days})
    frame["arm"] = frame["is_control"].map({True: "control", False: "treated"})
    frame["outcome_days"] = outcome_days
    frame["health_change"] = pd.to_numeric(frame["health_outcome"], errors="coerce") - \
        pd.to_numeric(frame["health_at_trigger"], errors="coerce")
    frame["recovered"] = recovered(frame) if len(frame) else pd.Series(dtype=object)
    return frame


def write_outcomes(conn: psycopg.Connection, frame: pd.DataFrame) -> int:
    """Replace ``marts.intervention_outcomes`` with ``frame`` (``read_outcome_rows``) atomically (a new table
    renamed into place). Returns the number of cases."""
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS marts.intervention_outcomes_next")
        conn.execute("CREATE TABLE marts.intervention_outcomes_next ("
                     + ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items()) + ")")
        copy_frame(conn, ("marts", "intervention_outcomes_next"), frame, list(COLUMNS))
        conn.execute("DROP TABLE IF EXISTS marts.intervention_outcomes")
        conn.execute("ALTER TABLE marts.intervention_outcomes_next RENAME TO intervention_outcomes")
    return len(case_outcomes(frame)) if len(frame) else 0
