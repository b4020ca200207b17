"""Delivering interventions: e-mail over SMTP (or .eml files in the outbox), in-app notifications and
call tasks, each recorded exactly once in ``ops.interventions``.

Exactly once: every intervention has the key (supplier_id, rule, as_of_date, channel), unique in
``ops.interventions``. A run inserts its plan with ON CONFLICT DO NOTHING, then locks the rows still
``planned`` or ``failed`` (FOR UPDATE SKIP LOCKED, so a concurrent retry cannot take the same row),
delivers each and records ``sent`` or ``failed`` in its own transaction. In-app rows and call tasks are
written in that same transaction (exactly once). An e-mail is handed to SMTP before its row commits:
the Message-ID is derived from the key, so if a crash falls between the two, the retry's copy carries
the same Message-ID and mail systems can drop it.
"""

from __future__ import annotations

import hashlib
import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
from pydantic import Field

from cs_pipeline.core.db import ddl_transaction

DDL = [
    """
    CREATE TABLE IF NOT EXISTS ops.interventions (
      intervention_id bigserial PRIMARY KEY,
      supplier_id text NOT NULL,
      rule text NOT NULL,
      channel text NOT NULL CHECK (channel IN ('email', 'in_app', 'call')),
      as_of_date date NOT NULL,
      template text NOT NULL,
      audience text NOT NULL,
      priority integer NOT NULL,
      status text NOT NULL CHECK (status IN ('planned', 'sent', 'failed', 'suppressed')),
      reason text,
      scheduled_for date NOT NULL,
      sent_at timestamptz,
      message_id text,
      recipient text,
      health_score numeric(5, 2),
      risk_level text,
      drivers text,
      context jsonb NOT NULL DEFAULT '{}',
      attempts integer NOT NULL DEFAULT 0,
      last_error text,
      run_id text,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT interventions_idempotency UNIQUE (supplier_id, rule, as_of_date, channel)
    )
    """,
    "CREATE INDEX IF NOT EXISTS interventions_supplier_idx ON ops.interventions (supplier_id, as_of_date)",
    """
    CREATE TABLE IF NOT EXISTS ops.in_app_notifications (
      notification_id bigserial PRIMARY KEY,
      intervention_id bigint NOT NULL UNIQUE REFERENCES ops.interventions,
      supplier_id text NOT NULL,
      title text NOT NULL,
      body text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      read_at timestamptz
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.support_interactions (
      interaction_id bigserial PRIMARY KEY,
      intervention_id bigint UNIQUE REFERENCES ops.interventions,
      supplier_id text NOT NULL,
      interaction_type text NOT NULL
        CHECK (interaction_type IN ('onboarding_call', 'check_in', 'technical_support', 'upgrade_discussion')),
      scheduled_for date NOT NULL,
      completed_at timestamptz,
      notes text,
      outcome text,
      created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.opt_outs (
      supplier_id text NOT NULL,
      channel text,
      created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
]


def ensure_intervention_tables(conn: psycopg.Connection) -> None:
    """Create the ops tables of the intervention stage if they do not exist."""
    with ddl_transaction(conn):
        conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
        for statement in DDL:
            conn.execute(statement)


def message_id(supplier_id: str, rule: str, as_of: date, channel: str) -> str:
    """A Message-ID derived from the idempotency key (the same for every retry)."""
    digest = hashlib.sha256(f"{supplier_id}|{rule}|{as_of}|{channel}".encode()).hexdigest()[:32]
    return f"<{digest}@cs-pipeline>"


class EmailResource(dg.ConfigurableResource):
    """E-mail delivery. With ``host`` set, SMTP (STARTTLS when ``use_tls``, login when ``user`` is set);
    without it, the embedded default writes each message as ``<outbox>/<message-id>.eml``.

    Environment: CS_PIPELINE_SMTP_HOST, _PORT, _USER, _PASSWORD, _TLS, CS_PIPELINE_OUTBOX.
    """

    host: str | None = None
    port: int = 587
    user: str | None = None
    password: str | None = None
    use_tls: bool = True
    tls_verify: bool = True  # False only when explicitly configured: STARTTLS without certificate checks
    outbox_dir: str = Field(default=".cs_pipeline/outbox")
    timeout_seconds: float = 20.0

    @property
    def mode(self) -> str:
        return "smtp" if self.host else "outbox"

    def send(self, message: EmailMessage) -> str:
        """Send or file ``message``; returns where it went (``smtp://host`` or the .eml path).

        Raises:
            smtplib.SMTPException, OSError: delivery failed (the caller records the message as failed).
        """
        if not self.host:
            outbox = Path(self.outbox_dir)
            outbox.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").split("@")[0] + ".eml"
            (outbox / name).write_bytes(bytes(message))
            return str(outbox / name)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds) as smtp:
            if self.use_tls:
                context = ssl.create_default_context()  # verifies the certificate and the host name
                if not self.tls_verify:
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)
        return f"smtp://{self.host}:{self.port}"


def build_message(sender: str, recipient: str, subject: str, body: str, msg_id: str) -> EmailMessage:
    """A plain-text e-mail with a fixed Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = msg_id
    message.set_content(body)
    return message


@dataclass
class DeliveryReport:
    """Counts of one delivery pass."""

    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    skipped_already_done: int = 0


def record_plan(conn: psycopg.Connection, planned: pd.DataFrame, run_id: str | None) -> int:
    """Insert the planned and suppressed rows; existing keys are left as they are. Returns new rows."""
    if planned.empty:
        return 0
    columns = ["supplier_id", "rule", "channel", "as_of_date", "template", "audience", "priority", "status",
               "reason", "scheduled_for", "health_score", "risk_level", "drivers", "context", "run_id"]
    rows = []
    for record in planned.to_dict("records"):
        context = {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in record.items()
                   if k not in columns and not (isinstance(v, float) and pd.isna(v))}
        rows.append((record["supplier_id"], record["rule"], record["channel"], record["as_of_date"],
                     record["template"], record["audience"], int(record["priority"]), record["status"],
                     record["reason"], record["scheduled_for"],
                     None if pd.isna(record.get("health_score")) else float(record["health_score"]),
                     record.get("risk_level"), record.get("drivers"), json.dumps(context, default=str), run_id))
    with conn.transaction(), conn.cursor() as cur:
        before = cur.execute("SELECT count(*) FROM ops.interventions").fetchone()[0]
        cur.executemany(
            f"INSERT INTO ops.interventions ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            "ON CONFLICT ON CONSTRAINT interventions_idempotency DO NOTHING", rows)
        after = cur.execute("SELECT count(*) FROM ops.interventions").fetchone()[0]
    return after - before


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
