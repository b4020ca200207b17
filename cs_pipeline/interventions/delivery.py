"""Delivering interventions: e-mail over SMTP (or .eml files in the outbox), in-app notifications and
call tasks, each recorded exactly once in ``ops.interventions``.

Every intervention has the key (supplier_id, rule, as_of_date, channel), unique in ``ops.interventions``.
Planning inserts its rows with ON CONFLICT DO NOTHING (see ``reservation.plan_day``). Delivery of one row:

* in-app notifications and call tasks are written in the same transaction that marks the row ``sent``
  (exactly once);
* an e-mail first takes a session advisory lock on the row (a concurrent deliverer skips it; the lock
  dies with the session), then commits ``status = 'sending'`` before any SMTP traffic. Just before the
  DATA command it commits ``delivery_stage = 'data'``. DATA answered 250 = accepted: the row becomes
  ``sent`` and a later error (e.g. ``421`` on QUIT) is only noted. An error before DATA, or a refusal of
  DATA or of the message (any reply but 250 to its content), is certain non-delivery: ``failed``,
  retried by the next run. A failure while DATA is in flight (no reply) leaves ``sending`` with stage
  ``data``; so does a crash anywhere after the ``data`` commit.
  A retry reconciles a ``sending`` row: stage ``data`` = possibly accepted -> ``sent`` with
  ``reason = 'unconfirmed'``, never sent again (at most once); no stage = DATA never started -> sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
from email_validator import EmailNotValidError, validate_email
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
      status text NOT NULL CONSTRAINT interventions_status_check
        CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'suppressed', 'expired')),
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
      delivery_stage text,
      forced boolean NOT NULL DEFAULT false,
      requested_by text,
      send_day date,
      next_attempt_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT interventions_idempotency UNIQUE (supplier_id, rule, as_of_date, channel)
    )
    """,
    # Tables created by earlier versions: add the columns and the 'sending' status (only when missing, so a
    # normal run takes no ACCESS EXCLUSIVE lock).
    """
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'ops'
                     AND table_name = 'interventions' AND column_name = 'delivery_stage') THEN
        ALTER TABLE ops.interventions ADD COLUMN delivery_stage text,
          ADD COLUMN forced boolean NOT NULL DEFAULT false, ADD COLUMN requested_by text,
          DROP CONSTRAINT IF EXISTS interventions_status_check,
          ADD CONSTRAINT interventions_status_check
            CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'suppressed'));
      END IF;
    END $$
    """,
    # send_day (the UTC day a row's message is reserved to go out, for the daily cap), added later.
    """
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'ops'
                     AND table_name = 'interventions' AND column_name = 'send_day') THEN
        ALTER TABLE ops.interventions ADD COLUMN send_day date;
        UPDATE ops.interventions SET send_day = (coalesce(sent_at, created_at) AT TIME ZONE 'UTC')::date;
      END IF;
    END $$
    """,
    # Issue 27: 'expired' (undelivered past the retry window) and the retry backoff, added later.
    """
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'ops'
                     AND table_name = 'interventions' AND column_name = 'next_attempt_at') THEN
        ALTER TABLE ops.interventions ADD COLUMN next_attempt_at timestamptz,
          DROP CONSTRAINT IF EXISTS interventions_status_check,
          ADD CONSTRAINT interventions_status_check
            CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'suppressed', 'expired'));
      END IF;
    END $$
    """,
    "CREATE INDEX IF NOT EXISTS interventions_send_day_idx ON ops.interventions (send_day, audience)",
    "CREATE INDEX IF NOT EXISTS interventions_supplier_idx ON ops.interventions (supplier_id, as_of_date)",
    "CREATE INDEX IF NOT EXISTS interventions_day_idx ON ops.interventions (as_of_date, audience)",
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

    Environment (``interventions.defs.email_from_env``): CS_PIPELINE_SMTP_HOST, _PORT, _USER, _PASSWORD, _TLS,
    _TLS_VERIFY; the outbox is ``$CS_PIPELINE_HOME/outbox``.
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

    def send(self, message: EmailMessage, before_data: Callable[[], None] | None = None) -> str:
        """Send or file ``message``; returns where it went (``smtp://host:port`` or the .eml path).

        SMTP: one session per message (EHLO, STARTTLS when ``use_tls``, AUTH when ``user``, MAIL, RCPT,
        then ``before_data()``, then DATA). Once DATA is answered with 250 the message is accepted and
        this returns normally whatever happens next (an error or ``421`` on QUIT is ignored).

        Raises:
            NotAccepted: the server certainly did not accept the message (connection, TLS, AUTH, MAIL or
                RCPT failed, or DATA was refused with a reply); safe to send again.
            smtplib.SMTPException, OSError: the connection failed while DATA was in flight: the message
                may have been accepted (do not send again).
        """
        if not self.host:
            outbox = Path(self.outbox_dir)
            outbox.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").split("@")[0] + ".eml"
            if before_data is not None:
                before_data()
            (outbox / name).write_bytes(bytes(message))
            return str(outbox / name)
        smtp = None
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
            smtp.ehlo()
            if self.use_tls:
                context = ssl.create_default_context()  # verifies the certificate and the host name
                if not self.tls_verify:
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
            sender = message["From"]
            recipients = [message["To"]]
            code, reply = smtp.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            for rcpt in recipients:
                code, reply = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
        except (smtplib.SMTPException, OSError) as exc:
            _close(smtp)
            raise NotAccepted(redact(f"{type(exc).__name__}: {exc}")) from exc
        if before_data is not None:
            before_data()
        try:
            code, reply = smtp.data(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
        except smtplib.SMTPDataError as exc:  # the server answered DATA with a refusal: not accepted
            _close(smtp)
            raise NotAccepted(redact(f"{type(exc).__name__}: {exc}")) from exc
        except BaseException:
            _close(smtp)
            raise
        if code != 250:  # smtplib returns (does not raise) the reply to the message: 451, 554... = refused
            _close(smtp)
            raise NotAccepted(redact(f"SMTPDataError: ({code}, {reply!r})"))
        try:  # accepted: whatever QUIT answers (421, a reset) does not undo it
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            _close(smtp)
        return f"smtp://{self.host}:{self.port}"


class NotAccepted(Exception):
    """The SMTP server certainly did not accept the message (the message says why, without addresses)."""


class InvalidAddress(ValueError):
    """An e-mail address that is missing, not exactly one address, or not valid RFC 5322."""


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        smtp.close()
    except OSError:
        pass


#: Anything shaped like an e-mail address (also inside ``<...>`` or quotes, as SMTP replies echo them).
_ADDRESS = re.compile(r"[^\s<>()\[\],;:'\"]+@[^\s<>()\[\],;:'\"]+")


def redact(text: str) -> str:
    """``text`` with every e-mail address replaced by ``<address>``: for errors, ``last_error``, logs and
    metadata (an SMTP refusal such as ``550 <owner@example.org>: unknown`` names the recipient)."""
    return _ADDRESS.sub("<address>", text)


def validate_address(value: str | None) -> str:
    """The normalised ASCII form of one e-mail address (email-validator, syntax only: no DNS lookup).

    Internationalised domains are returned IDNA-encoded (``xn--``); a non-ASCII local part is refused,
    because it needs SMTPUTF8, which the sender (smtplib with ASCII commands) does not speak.

    Raises:
        InvalidAddress: empty, several addresses (``,`` or ``;``), display names, a non-ASCII local part,
            or invalid syntax; the message gives the reason but not the address.
    """
    if value is None or not str(value).strip():
        raise InvalidAddress("no e-mail address")
    text = str(value).strip()
    if any(sep in text for sep in ",;<>") or any(ch.isspace() for ch in text):
        raise InvalidAddress("not exactly one address")
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(redact(f"invalid address: {exc}".replace(text, "<address>"))) from None
    return result.ascii_email or result.normalized


def build_message(sender: str, recipient: str, subject: str, body: str, msg_id: str) -> EmailMessage:
    """A plain-text e-mail with a fixed Message-ID; the subject is made one line (no CR, LF, U+2028...)."""
    from cs_pipeline.interventions.planning import single_line

    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = single_line(subject)
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
    #: ``sending`` rows left by an interrupted delivery, recorded as sent without sending again.
    reconciled: int = 0
    #: Rows planned (inserted) by this pass.
    planned: int = 0
    #: Retries of a message reserved for an earlier UTC day, not sent now because today's daily cap is full
    #: (left ``planned``/``failed`` for a later run).
    deferred: int = 0
    #: Undelivered rows of other days this pass tried again (``sending.deliver_pending``).
    retried: int = 0
    #: Undelivered rows given up by this pass (past ``retry_window_hours``, or an alert no longer critical).
    expired: int = 0


def record_plan(conn: psycopg.Connection, planned: pd.DataFrame, run_id: str | None) -> int:
    """Insert the planned and suppressed rows; existing keys are left as they are. Returns new rows.

    ``planned``: output of ``apply_filters`` (extra columns go to ``context``; optional ``forced``,
    ``requested_by``, ``send_day``: the UTC day the message is reserved to go out, for the daily cap).
    Runs in its own transaction, or inside the caller's (savepoint).
    """
    if planned.empty:
        return 0
    columns = ["supplier_id", "rule", "channel", "as_of_date", "template", "audience", "priority", "status",
               "reason", "scheduled_for", "health_score", "risk_level", "drivers", "context", "run_id", "forced",
               "requested_by", "send_day"]
    rows = []
    for record in planned.to_dict("records"):
        context = {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in record.items()
                   if k not in columns and not (isinstance(v, float) and pd.isna(v))}
        rows.append((record["supplier_id"], record["rule"], record["channel"], record["as_of_date"],
                     record["template"], record["audience"], int(record["priority"]), record["status"],
                     record["reason"], record["scheduled_for"],
                     None if pd.isna(record.get("health_score")) else float(record["health_score"]),
                     record.get("risk_level"), record.get("drivers"), json.dumps(context, default=str), run_id,
                     bool(record.get("forced") or False), record.get("requested_by"), record.get("send_day")))
    inserted = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO ops.interventions ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            "ON CONFLICT ON CONSTRAINT interventions_idempotency DO NOTHING RETURNING intervention_id", rows,
            returning=True)
        while True:
            inserted += len(cur.fetchall())
            if not cur.nextset():
                break
    return inserted


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
