"""Helpers shared by the integration tests: landing-file writers and a warehouse reset."""

from __future__ import annotations

import csv
from pathlib import Path

import psycopg
from psycopg import sql

SUPPLIER_COLUMNS = ["supplier_id", "business_name", "email", "vendor_category", "tier", "country",
                    "signed_up_at", "onboarded_at", "status", "cancelled_at", "mrr", "currency"]
EVENT_COLUMNS = ["event_id", "supplier_id", "user_id", "event_name", "occurred_at", "client_id", "properties"]
TICKET_COLUMNS = ["ticket_id", "supplier_id", "opened_at", "resolved_at", "channel", "category", "priority",
                  "csat", "first_response_minutes"]
BILLING_COLUMNS = ["billing_event_id", "supplier_id", "occurred_at", "event_type", "amount", "currency", "tier"]


def write_onboarding_scorecard(directory: Path, version: str = "onboarding-v1") -> Path:
    """Write ``onboarding.yaml`` to ``directory``: the shipped WS-168 scorecard plus the onboarding profile
    it carried before issue 13 (in the first 30 days, adoption judged against a bar of 0.5 instead of 1),
    so tests can show what such an override does and that the backtest check catches it."""
    import yaml

    from cs_pipeline.health.scorecard import SCORECARD_DIR

    card = yaml.safe_load((SCORECARD_DIR / "ws168.yaml").read_text())
    card["version"] = version
    card["overrides"] = [{"name": "onboarding", "when": {"lifecycle_stage": ["onboarding"]},
                          "components": {"feature_adoption": {"rule": {"type": "linear", "lower": 0, "upper": 0.5}}}}]
    path = Path(directory) / "onboarding.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def reset_warehouse(conn: psycopg.Connection) -> None:
    """Empty raw data and drop every dbt-built schema, so a test starts from nothing."""
    conn.execute("TRUNCATE raw.suppliers, raw.activity_events, raw.support_tickets, raw.billing_events, "
                 "raw.rejected_rows, ops.load_audit")
    for schema in ("staging", "intermediate", "marts", "seeds"):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute("DROP TABLE IF EXISTS ops.churn_models")  # a model trained by an earlier test scores nothing here
    conn.commit()


def _write(path: Path, columns: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
