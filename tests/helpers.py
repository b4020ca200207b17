"""Helpers shared by the integration tests: landing-file writers and a warehouse reset."""

from __future__ import annotations

import csv
import socket
import struct
import threading
from pathlib import Path
from typing import Self

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


#: The incremental intermediate tables whose window delete and tests filter on activity_date.
INTERMEDIATE_WINDOW_TABLES = ("int_supplier_client_days", "int_supplier_client_visits", "int_supplier_feature_days",
                              "int_supplier_user_days")


def window_indexes(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    """(table, access method, indexed columns) of each index of an ``intermediate`` table that leads with
    ``activity_date`` (issue 30: one B-tree on it per window table, no BRIN)."""
    rows = conn.execute(
        "SELECT c.relname, am.amname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE n.nspname = 'intermediate' AND a.attname = 'activity_date'").fetchall()
    return {(table, method, definition[definition.rindex("(") + 1:-1]) for table, method, definition in rows}


def reset_interventions(conn: psycopg.Connection) -> None:
    """``reset_warehouse``, and no interventions or deliveries left by an earlier test."""
    reset_warehouse(conn)
    conn.execute("DROP TABLE IF EXISTS ops.in_app_notifications, ops.support_interactions, ops.interventions CASCADE")
    conn.commit()


def _write(path: Path, columns: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


class FakePostgresServer:
    """A TCP listener on 127.0.0.1 that speaks PostgreSQL's wire protocol just far enough to see what a
    client sends before it is authenticated. Per connection it records whether the client opened with an
    SSLRequest (``ssl_requests``) and answers ``N`` (no TLS); after a startup message (``startups``) it
    asks for a cleartext password (AuthenticationCleartextPassword) and records any password it receives
    (``passwords``, bytes), then closes. Use it as a context manager or call ``close()``."""

    SSL_REQUEST = 80877103

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.ssl_requests: list[bool] = []
        self.startups = 0
        self.passwords: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(client,), daemon=True).start()

    def _talk(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            try:
                length, code = struct.unpack("!ii", client.recv(8))
                self.ssl_requests.append(code == self.SSL_REQUEST)
                if code == self.SSL_REQUEST:
                    client.sendall(b"N")
                    length, code = struct.unpack("!ii", client.recv(8))
                client.recv(length - 8)
                self.startups += 1
                client.sendall(b"R" + struct.pack("!ii", 8, 3))
                reply = client.recv(4096)
                if reply[:1] == b"p":
                    self.passwords.append(reply[5:].rstrip(b"\0"))
            except (OSError, struct.error):
                return


def descendants(pid: int) -> list[int]:
    """Every live descendant of process ``pid`` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def milestone_facts(rows: list[dict]):
    """Rows of ``marts.fct_supplier_milestone_facts`` for ``milestones.evaluate_milestones``: every count 0
    and six core features, overridden per row by ``rows``."""
    import pandas as pd

    base = {k: 0 for k in ("onboarded", "logins_total", "clients_total", "forms_sent_total", "forms_completed_total",
                           "journeys_completed_total", "reviews_total", "integrations_total", "upgrades_total",
                           "adopted_core_features", "days_since_signup")}
    base["core_features_total"] = 6
    return pd.DataFrame([{**base, **r} for r in rows])
