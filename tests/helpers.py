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


def reset_warehouse(conn: psycopg.Connection) -> None:
    """Empty raw data and drop every dbt-built schema, so a test starts from nothing."""
    conn.execute("TRUNCATE raw.suppliers, raw.activity_events, raw.support_tickets, raw.billing_events, "
                 "raw.rejected_rows, ops.load_audit")
    for schema in ("staging", "intermediate", "marts", "seeds"):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.commit()


def _write(path: Path, columns: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
