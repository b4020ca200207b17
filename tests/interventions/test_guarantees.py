"""Issue 14: interventions never over-contact a customer. Each test runs against the embedded PostgreSQL
(synthetic marts tables with exactly the columns the stage reads) and, for e-mail, a real aiosmtpd server
on loopback: caps across concurrent processes, one rule per supplier and day, transitions with evidence,
re-runs and the sensor cursor, the first-day critical alert, exactly once at the SMTP boundary, address
validation and header-safe names, unbiased uplift, and manual interventions (job and CLI)."""

from __future__ import annotations

import email as email_lib
import os
import socket
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from aiosmtpd.controller import Controller

from cs_pipeline.interventions.defs import (
    CUSTOMER_HEALTH,
    intervention_job,
    manual_intervention_job,
    manual_run_config,
    plan_sensor_tick,
    risk_escalation_sensor,
)
from cs_pipeline.interventions.delivery import EmailResource, InvalidAddress, validate_address
from cs_pipeline.interventions.outcomes import uplift_table
from cs_pipeline.interventions.planning import apply_filters, in_control_group, plan, render
from cs_pipeline.interventions.playbook import load_playbook
from cs_pipeline.interventions.service import run_interventions
from cs_pipeline.ingest.tables import ensure_partition
from tests.helpers import reset_warehouse

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = load_playbook()
DAY = date(2025, 7, 10)

MARTS_DDL = """
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE marts.customer_health (
  supplier_id text, as_of_date date, risk_level text, previous_risk_level text, health_score numeric(5, 2),
  score_delta_7d numeric, score_delta_30d numeric, vendor_category text, tier text, drivers text);
CREATE TABLE marts.supplier_engagement_daily (
  supplier_id text, as_of_date date, lifecycle_stage text, days_since_onboarded int, days_since_last_login int,
  days_since_signup int, status text);
CREATE TABLE marts.dim_suppliers (supplier_id text, business_name text, vendor_category text, tier text,
  status text);
CREATE TABLE marts.fct_feature_adoption (supplier_id text, feature text, is_core boolean, active_days_30d int,
  uses_90d int);
CREATE TABLE marts.success_milestones (supplier_id text, milestone_type text, achieved_at date,
  celebrated boolean, celebrated_at timestamptz);
"""


@pytest.fixture(scope="module")
def synthetic(warehouse):
    """Minimal marts tables for the module; the dbt-built marts are dropped before and after."""
    with warehouse.connect() as c:
        reset_warehouse(c)
        c.execute("DROP TABLE IF EXISTS ops.in_app_notifications, ops.support_interactions, ops.opt_outs, "
                  "ops.interventions CASCADE")
        c.execute(MARTS_DDL)
        c.commit()
    yield
    with warehouse.connect() as c:
        reset_warehouse(c)
        c.execute("DROP TABLE IF EXISTS ops.in_app_notifications, ops.support_interactions, ops.opt_outs, "
                  "ops.interventions CASCADE")
        c.commit()


@pytest.fixture()
def db(synthetic, conn):
    """An empty synthetic warehouse and intervention history for each test."""
    conn.execute("TRUNCATE marts.customer_health, marts.supplier_engagement_daily, marts.dim_suppliers, "
                 "marts.fct_feature_adoption, marts.success_milestones, raw.suppliers")
    conn.execute("DROP TABLE IF EXISTS ops.in_app_notifications, ops.support_interactions, ops.opt_outs, "
                 "ops.interventions CASCADE")
    conn.commit()
    return conn


def load(conn, rows: list[dict], names: dict[str, str] | None = None, emails: dict[str, str] | None = None) -> None:
    """Insert health + engagement rows (one dict per supplier and day) and the suppliers' snapshot."""
    health, engagement = [], []
    for r in rows:
        r = {"score": 50.0, "delta7": 0.0, "stage": "active", "onboarded": 100, "login": 1, "status": "active",
             "previous": None, **r}
        health.append((r["sid"], r["day"], r["risk"], r["previous"], r["score"], r["delta7"], 0.0, "photographer",
                       "starter", "no login for 9 days: 10 of 30 points"))
        engagement.append((r["sid"], r["day"], r["stage"], r["onboarded"], r["login"], r["onboarded"] + 5,
                           r["status"]))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO marts.customer_health VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", health)
        cur.executemany("INSERT INTO marts.supplier_engagement_daily VALUES (%s, %s, %s, %s, %s, %s, %s)", engagement)
    ids = sorted({r["sid"] for r in rows})
    names, emails = names or {}, emails or {}
    snapshot = max(r["day"] for r in rows)
    ensure_partition(conn, "suppliers", snapshot)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM marts.dim_suppliers WHERE supplier_id = ANY(%s)", (ids,))
        cur.execute("DELETE FROM raw.suppliers WHERE supplier_id = ANY(%s)", (ids,))
        cur.executemany("INSERT INTO marts.dim_suppliers VALUES (%s, %s, 'photographer', 'starter', 'active') ",
                        [(s, names.get(s, f"Studio {s}")) for s in ids])
        cur.executemany("INSERT INTO raw.suppliers (supplier_id, business_name, email, signed_up_at, _partition_date, "
                        "_source_file, _record_number) VALUES (%s, %s, %s, '2024-01-01', %s, 't.csv', 1)",
                        [(s, names.get(s, f"Studio {s}"), emails.get(s, f"{s}@example.org"), snapshot) for s in ids])
    conn.commit()


class Handler:
    """Keeps every accepted message; answers QUIT with ``quit_reply`` when set (e.g. 421); refuses the
    recipients in ``refuse`` (echoing the address, as real servers do); answers the next ``data_refusals``
    DATA commands with ``451``."""

    def __init__(self) -> None:
        self.messages: list[email_lib.message.Message] = []
        self.quit_reply: str | None = None
        self.refuse: set[str] = set()
        self.data_refusals = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_refusals:
            self.data_refusals -= 1
            return "451 4.3.0 temporary failure, try again later"
        message = email_lib.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted"

    async def handle_QUIT(self, server, session, envelope):
        return self.quit_reply or "221 Bye"


@pytest.fixture()
def smtp():
    handler = Handler()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, EmailResource(host="127.0.0.1", port=port, use_tls=False)
    finally:
        controller.stop()


def not_in_control(rule: str, n: int, prefix: str = "s", day: date = DAY) -> list[str]:
    """``n`` supplier ids whose case of ``rule`` due on ``day`` is in the treated arm."""
    ids = [f"{prefix}{i:04d}" for i in range(n * 3)]
    return [s for s, c in zip(ids, in_control_group(ids, rule, PLAYBOOK.control_share, episode=day)) if not c][:n]


def in_app_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM ops.in_app_notifications").fetchone()[0]


# --- 1. caps across runs ----------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from datetime import date
    import psycopg
    from cs_pipeline.interventions.delivery import EmailResource
    from cs_pipeline.interventions.playbook import load_playbook
    from cs_pipeline.interventions.service import run_interventions
    conninfo, port, day, order = sys.argv[1], int(sys.argv[2]), date.fromisoformat(sys.argv[3]), sys.argv[4]
    ids = [f"s{i:04d}" for i in range(600)]
    batches = [ids[:300], ids[300:]] if order == "ab" else [ids[300:], ids[:300]]
    email = EmailResource(host="127.0.0.1", port=port, use_tls=False)
    with psycopg.connect(conninfo) as conn:
        for batch in batches:  # the sensor's batches of one rule, as two concurrent runs would take them
            print(run_interventions(conn, load_playbook(), email, "escalated_to_at_risk", day, batch))
""")


def test_daily_cap_holds_across_two_concurrent_processes(db, smtp, warehouse):
    handler, email = smtp
    ids = [f"s{i:04d}" for i in range(600)]
    rows = [{"sid": s, "day": DAY - timedelta(days=1), "risk": "healthy", "score": 80.0} for s in ids]
    rows += [{"sid": s, "day": DAY, "risk": "at_risk", "previous": "healthy", "score": 40.0 + i % 20}
             for i, s in enumerate(ids)]
    load(db, rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, warehouse.conninfo, str(email.port), DAY.isoformat(),
                               order], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for order in ("ab", "ba")]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    facing = len(handler.messages) + in_app_count(db)
    assert facing <= PLAYBOOK.daily_cap
    ids_received = [m["Message-ID"] for m in handler.messages]
    assert len(ids_received) == len(set(ids_received))  # nobody e-mailed twice by the two runs
    counts = dict(db.execute("SELECT coalesce(reason, status), count(*) FROM ops.interventions GROUP BY 1").fetchall())
    assert counts["sent"] == facing > PLAYBOOK.daily_cap * 0.85  # the cap was used, not passed
    assert counts["sent"] + counts["control"] + counts["daily_cap"] == 1200  # every key planned once
    # all of the rule's channels go together: one outcome per supplier
    assert db.execute("SELECT max(n) FROM (SELECT count(DISTINCT coalesce(reason, status)) AS n "
                      "FROM ops.interventions GROUP BY supplier_id) t").fetchone()[0] == 1


def test_when_the_cap_binds_highest_priority_then_highest_risk_are_kept():
    ids = [f"r{i:03d}" for i in range(40)]
    context = pd.DataFrame({"supplier_id": ids, "risk_level": ["critical" if i % 10 == 0 else "at_risk" for i in range(40)],
                            "health_score": [float(60 - i) for i in range(40)]})
    planned = pd.concat([plan(PLAYBOOK.rule("sharp_score_drop"), context.iloc[:20], DAY),  # priority 15, in-app
                         plan(PLAYBOOK.rule("milestone_celebration"), context.iloc[20:], DAY)])  # priority 5
    small = PLAYBOOK.model_copy(update={"daily_cap": 6, "control_share": 0.0})
    out = apply_filters(planned, pd.DataFrame(), context.assign(status="active")[["supplier_id", "status"]], small, DAY)
    kept = list(out.loc[out["status"] == "planned", "supplier_id"])
    # priority 15 first; within it critical (r000, r010) first, then the lowest health scores (r019, r018, ...)
    assert kept == ["r010", "r000", "r019", "r018", "r017", "r016"]
    assert set(out.loc[out["status"] == "suppressed", "reason"]) == {"daily_cap"}


def test_supplier_matching_two_rules_is_contacted_by_one_rule(db, smtp):
    handler, email = smtp
    sid = [s for s in not_in_control("new_supplier_inactive", 5)
           if not in_control_group([s], "escalated_to_at_risk", PLAYBOOK.control_share, episode=DAY)[0]][0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy", "stage": "onboarding",
               "onboarded": 6, "login": 6},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy", "stage": "onboarding",
               "onboarded": 7, "login": 7}])
    for rule in ("escalated_to_at_risk", "new_supplier_inactive"):  # two runs, lower priority first
        run_interventions(db, PLAYBOOK, email, rule, DAY)
    contacts = db.execute("SELECT DISTINCT rule FROM ops.interventions WHERE status = 'sent'").fetchall()
    assert contacts == [("new_supplier_inactive",)]
    assert len(handler.messages) == 1 and in_app_count(db) == 0
    reasons = dict(db.execute("SELECT channel, reason FROM ops.interventions WHERE rule = 'escalated_to_at_risk'"))
    assert reasons == {"email": "one_rule_per_day", "in_app": "one_rule_per_day"}


# --- 2. transitions need evidence ---------------------------------------------------------------------


def test_missing_previous_day_contacts_nobody(db, smtp):
    handler, email = smtp
    standing = not_in_control("sharp_score_drop", 30, "st")
    escalated = not_in_control("escalated_to_at_risk", 1, "esc")[0]
    stale = not_in_control("escalated_to_at_risk", 1, "old")[0]
    stale_drop = not_in_control("sharp_score_drop", 1, "sd")[0]
    rows = []
    for sid in standing:  # at risk with a sharp drop on D-2 and D; D-1 missing (a blocked quality gate)
        rows += [{"sid": sid, "day": DAY - timedelta(days=2), "risk": "at_risk", "delta7": -25.0},
                 {"sid": sid, "day": DAY, "risk": "at_risk", "previous": None, "delta7": -25.0}]
    rows += [{"sid": escalated, "day": DAY - timedelta(days=2), "risk": "healthy"},
             {"sid": escalated, "day": DAY, "risk": "at_risk", "previous": None},
             {"sid": stale, "day": DAY - timedelta(days=5), "risk": "healthy"},  # beyond the 3-day gap
             {"sid": stale, "day": DAY, "risk": "at_risk", "previous": "healthy"},
             # a sharp drop with no score within the gap (D-5 only): no evidence of a *new* drop
             {"sid": stale_drop, "day": DAY - timedelta(days=5), "risk": "at_risk", "delta7": -25.0},
             {"sid": stale_drop, "day": DAY, "risk": "at_risk", "previous": "at_risk", "delta7": -25.0}]
    load(db, rows)
    for rule in ("sharp_score_drop", "escalated_to_at_risk"):
        run_interventions(db, PLAYBOOK, email, rule, DAY)
    contacted = {r[0] for r in db.execute("SELECT supplier_id FROM ops.interventions WHERE status = 'sent'")}
    assert contacted == {escalated}  # the one real transition (evidence two days before); nobody else
    assert [m["To"] for m in handler.messages] == [f"{escalated}@example.org"]


# --- 3. re-runs and the sensor --------------------------------------------------------------------------


def _sensor(instance, warehouse, cursor=None):
    data = risk_escalation_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}, cursor=cursor))
    return list(data.run_requests or []), data.cursor


def _materialise(instance, day: date) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(CUSTOMER_HEALTH, partition=day.isoformat()))


def test_sensor_rerun_of_newest_day_and_days_in_one_tick(db, smtp, warehouse):
    handler, email = smtp
    first, late, d2, d3 = not_in_control("escalated_to_at_risk", 4, "rr")
    load(db, [{"sid": first, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": first, "day": DAY, "risk": "at_risk", "previous": "healthy"},
              {"sid": late, "day": DAY - timedelta(days=1), "risk": "healthy"}])
    instance = dg.DagsterInstance.ephemeral()
    _materialise(instance, DAY - timedelta(days=20))  # old history: a backfill, contacts nobody
    _materialise(instance, DAY)
    requests, cursor = _sensor(instance, warehouse)
    assert [r.tags["cs_pipeline/as_of_date"] for r in requests] == [DAY.isoformat()]
    resources = {"warehouse": warehouse, "email": email}
    for r in requests:
        assert intervention_job.execute_in_process(run_config=r.run_config, instance=instance,
                                                   resources=resources).success
    assert [m["To"] for m in handler.messages] == [f"{first}@example.org"]

    # The newest day is corrected and materialised again: `late` is newly due.
    load(db, [{"sid": late, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    _materialise(instance, DAY)
    again, cursor = _sensor(instance, warehouse, cursor)
    assert len(again) == 1 and again[0].run_key != requests[0].run_key
    for r in again:
        intervention_job.execute_in_process(run_config=r.run_config, instance=instance, resources=resources)
    assert sorted(m["To"] for m in handler.messages) == sorted([f"{first}@example.org", f"{late}@example.org"])

    # Two new days within one tick, materialised out of order: both evaluated. A past day: nobody.
    load(db, [{"sid": d2, "day": DAY + timedelta(days=1), "risk": "healthy"},
              {"sid": d2, "day": DAY + timedelta(days=2), "risk": "at_risk"},
              {"sid": d3, "day": DAY, "risk": "healthy"},
              {"sid": d3, "day": DAY + timedelta(days=1), "risk": "at_risk"},
              {"sid": d3, "day": DAY - timedelta(days=6), "risk": "healthy"},
              {"sid": d3, "day": DAY - timedelta(days=5), "risk": "at_risk"}])
    _materialise(instance, DAY + timedelta(days=2))
    _materialise(instance, DAY + timedelta(days=1))
    _materialise(instance, DAY - timedelta(days=5))  # a past day with a transition: a backfill, nobody
    both, cursor = _sensor(instance, warehouse, cursor)
    assert sorted(r.tags["cs_pipeline/as_of_date"] for r in both) == \
        [(DAY + timedelta(days=1)).isoformat(), (DAY + timedelta(days=2)).isoformat()]
    assert _sensor(instance, warehouse, cursor)[0] == []


def test_sensor_tick_plan_is_pure_and_remembers_days():
    day = DAY
    chosen, notes, cursor = plan_sensor_tick([(5, day - timedelta(days=1)), (6, day)], None, day, 3)
    assert chosen == [(day, 6)]  # first tick: only the newest day
    chosen, notes, cursor = plan_sensor_tick([(7, day - timedelta(days=10)), (8, day), (9, day - timedelta(days=1))],
                                             cursor, day, 3)
    # the newest day again, a day that arrived late (out of order, never evaluated): both; day-10: backfill
    assert chosen == [(day - timedelta(days=1), 9), (day, 8)] and any("contacts nobody" in n for n in notes)
    chosen, notes, cursor = plan_sensor_tick([(10, day - timedelta(days=1))], cursor, day, 3)
    assert chosen == []  # a re-run of an evaluated past day contacts nobody


# --- 4. critical always alerts ----------------------------------------------------------------------------


def test_first_day_critical_supplier_produces_one_alert(db, smtp):
    handler, email = smtp
    load(db, [{"sid": "crit", "day": DAY, "risk": "critical", "score": 12.0},
              {"sid": "crit", "day": DAY + timedelta(days=1), "risk": "critical", "previous": "critical"},
              {"sid": "crit", "day": DAY + timedelta(days=8), "risk": "critical", "previous": "critical"}])
    for day in (DAY, DAY, DAY + timedelta(days=1)):
        run_interventions(db, PLAYBOOK, email, None, day)
    alerts = [m for m in handler.messages if m["To"] == PLAYBOOK.cs_team_email]
    assert len(alerts) == 1 and "crit" in alerts[0]["Subject"]
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=8))  # after the 7-day cooldown: again
    assert len([m for m in handler.messages if m["To"] == PLAYBOOK.cs_team_email]) == 2


# --- 5. exactly once at the SMTP boundary ---------------------------------------------------------------


def test_smtp_421_on_quit_receives_each_message_once_across_retries(db, smtp):
    handler, email = smtp
    handler.quit_reply = "421 4.3.0 closing connection"
    ids = not_in_control("escalated_to_at_risk", 5, "q")
    load(db, [r for s in ids for r in ({"sid": s, "day": DAY - timedelta(days=1), "risk": "healthy"},
                                       {"sid": s, "day": DAY, "risk": "at_risk", "previous": "healthy"})])
    reports = [run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY) for _ in range(3)]
    received = pd.Series([m["Message-ID"] for m in handler.messages]).value_counts()
    assert len(received) == 5 and (received == 1).all()
    # accepted = sent and confirmed on the first run (not left 'sending' and reconciled as 'unconfirmed')
    assert reports[0].sent == 10 and reports[0].failed == 0 and sum(r.reconciled for r in reports) == 0
    assert db.execute("SELECT array_agg(DISTINCT status || ':' || coalesce(reason, '')) FROM ops.interventions "
                      "WHERE channel = 'email'").fetchone()[0] == ["sent:"]


def test_interrupted_sending_rows_are_reconciled_without_resending(db, smtp):
    handler, email = smtp
    unsure, unstarted = not_in_control("escalated_to_at_risk", 2, "x")
    load(db, [r for s in (unsure, unstarted) for r in ({"sid": s, "day": DAY - timedelta(days=1), "risk": "healthy"},
                                                      {"sid": s, "day": DAY, "risk": "at_risk"})])
    run_interventions(db, PLAYBOOK, EmailResource(host="127.0.0.1", port=1, use_tls=False, timeout_seconds=2),
                      "escalated_to_at_risk", DAY)  # nothing listens: certainly not accepted -> failed
    assert db.execute("SELECT count(*) FROM ops.interventions WHERE channel = 'email' AND status = 'failed'"
                      ).fetchone()[0] == 2
    # A crash after DATA started (unsure) and one before it (unstarted), as a killed process leaves them.
    db.execute("UPDATE ops.interventions SET status = 'sending', delivery_stage = 'data' WHERE supplier_id = %s "
               "AND channel = 'email'", (unsure,))
    db.execute("UPDATE ops.interventions SET status = 'sending', delivery_stage = NULL WHERE supplier_id = %s "
               "AND channel = 'email'", (unstarted,))
    db.commit()
    report = run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert report.reconciled == 1
    assert [m["To"] for m in handler.messages] == [f"{unstarted}@example.org"]
    rows = dict(db.execute("SELECT supplier_id, status || ':' || coalesce(reason, '') FROM ops.interventions "
                           "WHERE channel = 'email'").fetchall())
    assert rows == {unsure: "sent:unconfirmed", unstarted: "sent:"}


# --- 6. unbiased outcomes -------------------------------------------------------------------------------


def test_control_group_is_assigned_after_cooldown_and_caps():
    ids = [f"c{i:04d}" for i in range(400)]
    control = [s for s, c in zip(ids, in_control_group(ids, "escalated_to_at_risk", 0.10, episode=DAY)) if c]
    planned = plan(PLAYBOOK.rule("escalated_to_at_risk"), pd.DataFrame({"supplier_id": ids}), DAY)
    cooled = pd.DataFrame([{"supplier_id": s, "rule": "sharp_score_drop", "channel": c, "audience": "supplier",
                            "as_of_date": DAY - timedelta(days=2)} for s in control for c in ("email", "in_app")])
    out = apply_filters(planned, cooled, pd.DataFrame({"supplier_id": ids, "status": "active"}), PLAYBOOK, DAY)
    assert set(out.loc[out["supplier_id"].isin(control), "reason"]) == {"cooldown"}
    assert (out["reason"] == "control").sum() == 0  # the hash's control suppliers were filtered first


def test_uplift_excludes_cs_alerts_and_calls_and_has_a_confidence_interval():
    """Intention to treat: a failed or expired treated message still counts as treated; alerts, call tasks
    and manual interventions are no treatment; the interval is Welch's on the score change in points."""
    rows = []
    for i in range(400):
        control = i % 4 == 0
        change = (i % 7) - 3.0 + (0.0 if control else 6.0)  # treated cases gain 6 points
        status = "suppressed" if control else ("failed" if i % 10 == 1 else "expired" if i % 10 == 3 else "sent")
        base = {"supplier_id": f"u{i}", "as_of_date": DAY, "health_at_trigger": 40.0 + i % 5,
                "health_outcome": 40.0 + i % 5 + change, "churned": i % 9 == 0, "contaminated": i % 8 == 0}
        for channel in ("email", "in_app"):
            rows.append({**base, "intervention_id": len(rows), "rule": "escalated_to_at_risk", "channel": channel,
                         "audience": "supplier", "status": status, "reason": "control" if control else None})
        rows.append({**base, "intervention_id": len(rows), "rule": "escalated_to_critical", "channel": "call",
                     "audience": "cs_team", "status": "sent", "reason": None})
        rows.append({**base, "intervention_id": len(rows), "rule": "critical_alert", "channel": "email",
                     "audience": "cs_team", "status": "sent", "reason": None})
        rows.append({**base, "intervention_id": len(rows), "rule": "manual", "channel": "email",
                     "audience": "supplier", "status": "sent", "reason": None})
    table = uplift_table(pd.DataFrame(rows)).set_index(["rule", "channel"])
    assert set(table.index.get_level_values("rule")) == {"escalated_to_at_risk"}  # alerts, calls, manual: no
    s = table.loc[("escalated_to_at_risk", "all")]
    assert (s["treated"], s["control"]) == (300, 100)  # failed and expired treated cases stay treated
    assert s["difference"] == pytest.approx(6.0, abs=0.3) and s["ci_low"] < s["difference"] < s["ci_high"]
    assert s["ci_high"] - s["ci_low"] < 2.0 and s["verdict"] == "uplift"
    assert s["contamination"] == pytest.approx(0.5)  # half the control cases (i % 8 == 0)
    assert table.loc[("escalated_to_at_risk", "email"), "treated"] == 300


# --- 7. addresses and names ------------------------------------------------------------------------------


def test_comma_separated_address_is_refused_and_recorded_failed(db, smtp):
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "m")[0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": sid, "day": DAY, "risk": "at_risk"}],
         emails={sid: "owner@a.example, boss@b.example,third@c.example"})
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert handler.messages == []
    status, reason, error = db.execute("SELECT status, reason, last_error FROM ops.interventions "
                                       "WHERE channel = 'email'").fetchone()
    assert (status, reason) == ("failed", "invalid_email") and "@" not in error
    with pytest.raises(InvalidAddress):
        validate_address("a@b.example;c@d.example")
    assert validate_address("Owner@Juniper.example") == "Owner@juniper.example"


def test_line_separators_in_names_are_sanitised(db, smtp):
    handler, email = smtp
    load(db, [{"sid": "crit2", "day": DAY, "risk": "critical"}], names={"crit2": "Oak\u2028Hall\r\nBcc: x@evil.example"})
    run_interventions(db, PLAYBOOK, email, None, DAY)
    assert len(handler.messages) == 1
    subject = handler.messages[0]["Subject"]
    assert "Oak Hall Bcc: x@evil.example" in subject and handler.messages[0]["Bcc"] is None
    assert handler.messages[0]["X-Envelope-To"] == PLAYBOOK.cs_team_email
    subject, body = render("reengagement_tips", {"business_name": "A\u2029B", "health_score": "40", "drivers": "",
                                                 "days_since_last_login": 3, "vendor_category": "venue"})
    assert "\u2029" not in subject + body and "A B" in subject


# --- 8. manual interventions ----------------------------------------------------------------------------


def test_manual_intervention_job_respects_cooldown_force_and_opt_out(db, smtp, warehouse):
    handler, email = smtp
    day = datetime.now(timezone.utc).date() - timedelta(days=1)  # manual interventions are dated today (UTC)
    sid, other = not_in_control("escalated_to_at_risk", 2, "man", day=day)
    load(db, [r for s in (sid, other) for r in ({"sid": s, "day": day - timedelta(days=1), "risk": "healthy"},
                                                {"sid": s, "day": day, "risk": "at_risk"})])
    run_interventions(db, PLAYBOOK, email, None, day)  # the playbook e-mailed both yesterday
    assert len(handler.messages) == 2
    instance = dg.DagsterInstance.ephemeral()
    resources = {"warehouse": warehouse, "email": email}

    def launch(**config):
        return manual_intervention_job.execute_in_process(run_config=manual_run_config(**config), instance=instance,
                                                          resources=resources, raise_on_error=False)

    before = len(handler.messages)
    blocked = launch(supplier_id=sid, channel="email", message="Can we help with your forms?")
    row = db.execute("SELECT status, reason, forced FROM ops.interventions WHERE rule = 'manual'").fetchone()
    assert not blocked.success and row == ("suppressed", "cooldown", False)
    assert len(handler.messages) == before
    forced = launch(supplier_id=sid, channel="email", message="Can we help with your forms?", force=True)
    assert forced.success
    row = db.execute("SELECT status, forced, run_id FROM ops.interventions WHERE rule = 'manual'").fetchone()
    assert row[0] == "sent" and row[1] is True and row[2] == forced.run_id
    sent = [m for m in handler.messages if m["To"] == f"{sid}@example.org" and "customer success" in m["Subject"]]
    assert len(sent) == 1 and "Can we help with your forms?" in sent[0].get_payload(decode=True).decode()
    assert launch(supplier_id=sid, channel="email", force=True).success  # a re-launch: reconciled, not re-sent
    assert len([m for m in handler.messages if "customer success" in m["Subject"]]) == 1
    db.execute("CREATE TABLE IF NOT EXISTS ops.opt_outs (supplier_id text NOT NULL, channel text, "
               "created_at timestamptz NOT NULL DEFAULT now())")
    db.execute("INSERT INTO ops.opt_outs (supplier_id, channel) VALUES (%s, NULL)", (other,))
    db.commit()
    assert not launch(supplier_id=other, channel="in_app", force=True).success
    assert db.execute("SELECT status, reason, forced FROM ops.interventions WHERE rule = 'manual' "
                      "AND supplier_id = %s", (other,)).fetchone() == ("suppressed", "opted_out", True)


def test_cli_intervene_goes_through_the_job(db, smtp, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cs_pipeline.cli import app

    handler, email = smtp
    load(db, [{"sid": "cli1", "day": DAY, "risk": "healthy"}])
    monkeypatch.setenv("CS_PIPELINE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CS_PIPELINE_SMTP_PORT", str(email.port))
    monkeypatch.setenv("CS_PIPELINE_SMTP_TLS", "false")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # restored (unset) afterwards
    runner = CliRunner()
    result = runner.invoke(app, ["intervene", "cli1", "--channel", "call", "--message", "ask about payments"])
    assert result.exit_code == 0, result.output
    assert "sent" in result.output
    notes = db.execute("SELECT notes FROM ops.support_interactions WHERE supplier_id = 'cli1'").fetchall()
    assert len(notes) == 1 and "ask about payments" in notes[0][0]
    assert db.execute("SELECT requested_by FROM ops.interventions WHERE rule = 'manual'").fetchone()[0].startswith("cli:")
    bad = runner.invoke(app, ["intervene", "cli1", "--channel", "pigeon"])
    assert bad.exit_code == 2


# --- review of issue 14 (hostile reviewer): holes found after the merge ------------------------------------


def _escalated(db, sid: str, **extra) -> None:
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"}], **extra)


def test_data_refused_with_451_is_retried_and_sent_once(db, smtp):
    """A reply refusing DATA is certain non-delivery: ``failed``, and the next run sends it (not 'unconfirmed')."""
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "d")[0]
    _escalated(db, sid)
    handler.data_refusals = 1
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert handler.messages == []
    assert db.execute("SELECT status FROM ops.interventions WHERE channel = 'email'").fetchone()[0] == "failed"
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert [m["To"] for m in handler.messages] == [f"{sid}@example.org"]
    assert db.execute("SELECT status, reason FROM ops.interventions WHERE channel = 'email'"
                      ).fetchone() == ("sent", None)


def test_refused_recipient_error_does_not_record_the_address(db, smtp):
    """The server's refusal (which echoes the address) is kept in last_error without the address."""
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "rf")[0]
    _escalated(db, sid)
    handler.refuse = {f"{sid}@example.org"}
    report = run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert report.failed == 1 and handler.messages == []
    status, error = db.execute("SELECT status, last_error FROM ops.interventions WHERE channel = 'email'").fetchone()
    assert status == "failed" and "550" in error
    assert "@" not in error and sid not in error


def test_address_smtplib_cannot_send_is_invalid_not_stuck_sending(db, smtp):
    """A non-ASCII local part needs SMTPUTF8, which the sender does not speak: refused as invalid_email
    (before, it raised UnicodeEncodeError mid-session and left the row 'sending' for ever)."""
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "u")[0]
    _escalated(db, sid, emails={sid: "jürgen@example.org"})
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    assert handler.messages == []
    assert db.execute("SELECT status, reason FROM ops.interventions WHERE channel = 'email'").fetchone() == \
        ("failed", "invalid_email")
    with pytest.raises(InvalidAddress):
        validate_address("jürgen@example.org")
    assert validate_address("owner@exämple.org") == "owner@xn--exmple-cua.org"  # IDNA domain: plain ASCII


def test_opt_out_after_planning_holds_on_retry_and_forced_relaunch(db, smtp):
    """An opt-out recorded after a row was planned (or held back) stops it: a retry of a failed e-mail and a
    forced re-launch of a held-back manual intervention send nothing."""
    from cs_pipeline.interventions.service import manual_intervention

    handler, email = smtp
    sid, other = not_in_control("escalated_to_at_risk", 2, "oo")
    load(db, [r for s in (sid, other) for r in ({"sid": s, "day": DAY - timedelta(days=1), "risk": "healthy"},
                                                {"sid": s, "day": DAY, "risk": "at_risk", "previous": "healthy"})])
    down = EmailResource(host="127.0.0.1", port=1, use_tls=False, timeout_seconds=2)
    run_interventions(db, PLAYBOOK, down, "escalated_to_at_risk", DAY)  # e-mails fail: retried later
    assert db.execute("SELECT count(*) FROM ops.interventions WHERE channel = 'email' AND status = 'failed'"
                      ).fetchone()[0] == 2
    blocked = manual_intervention(db, PLAYBOOK, email, other, "in_app", day=DAY)  # contacted today: held back
    assert blocked.status == "suppressed" and blocked.reason in ("one_rule_per_day", "cooldown")
    db.execute("INSERT INTO ops.opt_outs (supplier_id, channel) VALUES (%s, 'email'), (%s, NULL)", (sid, other))
    db.commit()
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    forced = manual_intervention(db, PLAYBOOK, email, other, "in_app", force=True, day=DAY)
    assert handler.messages == []
    assert (forced.status, forced.reason) == ("suppressed", "opted_out")
    rows = dict(db.execute("SELECT supplier_id, status || ':' || coalesce(reason, '') FROM ops.interventions "
                           "WHERE channel = 'email'").fetchall())
    assert rows == {sid: "suppressed:opted_out", other: "suppressed:opted_out"}
    assert in_app_count(db) == 2  # the two in-app nudges of the playbook, delivered before the opt-outs


def test_supplier_contacted_earlier_in_the_day_is_not_contacted_by_a_later_rule(db, smtp):
    """One rule per supplier and day across runs: after a re-materialisation makes a higher-priority rule
    newly due, the supplier already contacted that day gets nothing more (not even its call task)."""
    handler, email = smtp
    sid = [s for s in not_in_control("escalated_to_at_risk", 5, "x2")
           if not in_control_group([s], "new_supplier_inactive", PLAYBOOK.control_share, episode=DAY)[0]][0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy", "stage": "onboarding",
               "onboarded": 6, "login": 6},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    run_interventions(db, PLAYBOOK, email, None, DAY)
    assert db.execute("SELECT DISTINCT rule FROM ops.interventions WHERE status = 'sent'").fetchall() == \
        [("escalated_to_at_risk",)]
    db.execute("UPDATE marts.supplier_engagement_daily SET lifecycle_stage = 'onboarding', days_since_onboarded = 7, "
               "days_since_last_login = 7 WHERE supplier_id = %s AND as_of_date = %s", (sid, DAY))
    db.commit()  # the corrected day: new_supplier_inactive (priority 40) is now newly due as well
    run_interventions(db, PLAYBOOK, email, None, DAY)
    later = dict(db.execute("SELECT channel, coalesce(reason, status) FROM ops.interventions "
                            "WHERE rule = 'new_supplier_inactive'").fetchall())
    assert later == {"email": "one_rule_per_day", "call": "one_rule_per_day"}
    assert db.execute("SELECT count(*) FROM ops.support_interactions").fetchone()[0] == 0
    assert len(handler.messages) == 1


# --- second review of issue 14 ---------------------------------------------------------------------------------


def _facing_sent(db) -> int:
    return db.execute("SELECT count(*) FROM ops.interventions WHERE audience = 'supplier' AND status = 'sent'"
                      ).fetchone()[0]


def test_daily_cap_holds_per_utc_sending_day_across_as_of_days_and_manual(db, smtp):
    """A sensor catching up two scored days, a manual intervention (dated today) and a retry of a message
    reserved on an earlier UTC day, all sent on one calendar day: at most ``daily_cap`` supplier-facing
    messages (before, the cap counted per as_of day: 6 + 6 + 1 + 1 went out)."""
    from cs_pipeline.interventions.service import manual_intervention

    handler, email = smtp
    small = PLAYBOOK.model_copy(update={"daily_cap": 6, "control_share": 0.0})
    old, manual_sid = "cap_old", "cap_manual"
    first = [f"cap_a{i}" for i in range(4)]
    second = [f"cap_b{i}" for i in range(4)]
    rows = [{"sid": old, "day": DAY - timedelta(days=3), "risk": "healthy"},
            {"sid": old, "day": DAY - timedelta(days=2), "risk": "at_risk", "previous": "healthy"},
            {"sid": manual_sid, "day": DAY, "risk": "healthy"}]
    rows += [r for s in first for r in ({"sid": s, "day": DAY - timedelta(days=2), "risk": "healthy"},
                                        {"sid": s, "day": DAY - timedelta(days=1), "risk": "at_risk"})]
    rows += [r for s in second for r in ({"sid": s, "day": DAY - timedelta(days=1), "risk": "healthy"},
                                         {"sid": s, "day": DAY, "risk": "at_risk"})]
    load(db, rows)
    # A message reserved on an earlier UTC day whose e-mail failed (SMTP down): retried below, today.
    down = EmailResource(host="127.0.0.1", port=1, use_tls=False, timeout_seconds=2)
    run_interventions(db, small, down, "escalated_to_at_risk", DAY - timedelta(days=2))
    db.execute("UPDATE ops.interventions SET send_day = send_day - 1")
    db.commit()
    for day in (DAY - timedelta(days=1), DAY):  # the sensor catching up two days within one calendar day
        run_interventions(db, small, email, None, day)
    assert _facing_sent(db) - 1 == 6  # today: the cap (the old supplier's in-app went out yesterday)
    assert set(db.execute("SELECT DISTINCT supplier_id FROM ops.interventions WHERE reason = 'daily_cap'"
                          ).fetchall()) >= {(s,) for s in second}
    # the highest risk / lowest score first when it binds: a whole rule (e-mail + in-app) per supplier
    kept = db.execute("SELECT count(DISTINCT supplier_id) FROM ops.interventions WHERE status = 'sent' "
                      "AND as_of_date = %s", (DAY - timedelta(days=1),)).fetchone()[0]
    assert kept == 3
    held = manual_intervention(db, small, email, manual_sid, "in_app")  # dated today: same calendar day
    assert (held.status, held.reason) == ("suppressed", "daily_cap")
    report = run_interventions(db, small, email, "escalated_to_at_risk", DAY - timedelta(days=2))  # the retry
    assert report.deferred == 1 and report.sent == 0
    status, error = db.execute("SELECT status, last_error FROM ops.interventions WHERE supplier_id = %s "
                               "AND channel = 'email'", (old,)).fetchone()
    assert status == "failed" and error.startswith("daily_cap of ")
    assert len(handler.messages) + in_app_count(db) - 1 == 6  # received today (minus yesterday's in-app)
    # Tomorrow (the reservation moved back a day again, as the calendar would): the retry goes, once.
    db.execute("UPDATE ops.interventions SET send_day = send_day - 1")
    db.commit()
    run_interventions(db, small, email, "escalated_to_at_risk", DAY - timedelta(days=2))
    assert [m["To"] for m in handler.messages].count(f"{old}@example.org") == 1


def test_control_supplier_is_not_contacted_by_another_rule_that_day(db, smtp):
    """A supplier held back as control for one rule is not treated by another rule the same day (a later
    run after a re-materialisation makes a higher-priority rule newly due): the control group stays clean."""
    handler, email = smtp
    ids = [f"cg{i:04d}" for i in range(400)]
    sid = [s for s, c in zip(ids, in_control_group(ids, "escalated_to_at_risk", PLAYBOOK.control_share, episode=DAY))
           if c and not in_control_group([s], "new_supplier_inactive", PLAYBOOK.control_share, episode=DAY)[0]][0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy", "stage": "onboarding",
               "onboarded": 6, "login": 6},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    run_interventions(db, PLAYBOOK, email, None, DAY)
    assert set(db.execute("SELECT reason FROM ops.interventions").fetchall()) == {("control",)}
    db.execute("UPDATE marts.supplier_engagement_daily SET lifecycle_stage = 'onboarding', days_since_onboarded = 7, "
               "days_since_last_login = 7 WHERE supplier_id = %s AND as_of_date = %s", (sid, DAY))
    db.commit()  # the corrected day: new_supplier_inactive (priority 40) is now newly due as well
    run_interventions(db, PLAYBOOK, email, None, DAY)
    later = dict(db.execute("SELECT channel, status || ':' || coalesce(reason, '') FROM ops.interventions "
                            "WHERE rule = 'new_supplier_inactive'").fetchall())
    assert later == {"email": "suppressed:control_other_rule", "call": "suppressed:control_other_rule"}
    assert handler.messages == [] and in_app_count(db) == 0
    assert db.execute("SELECT count(*) FROM ops.support_interactions").fetchone()[0] == 0


def test_cancellation_after_planning_holds_on_retry_and_forced_relaunch(db, smtp):
    """A supplier cancelled after its rows were planned (or held back) is not contacted: a retry of a failed
    e-mail and a forced re-launch of a held-back manual intervention send nothing (like opt-outs)."""
    from cs_pipeline.interventions.service import manual_intervention

    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "cn")[0]
    _escalated(db, sid)
    down = EmailResource(host="127.0.0.1", port=1, use_tls=False, timeout_seconds=2)
    run_interventions(db, PLAYBOOK, down, "escalated_to_at_risk", DAY)  # the e-mail fails: retried later
    assert db.execute("SELECT status FROM ops.interventions WHERE channel = 'email'").fetchone()[0] == "failed"
    # in-app sent today: held back by the cooldown (manual interventions are not bound by one_rule_per_day)
    blocked = manual_intervention(db, PLAYBOOK, email, sid, "in_app", day=DAY)
    assert blocked.status == "suppressed" and blocked.reason == "cooldown"
    db.execute("UPDATE marts.dim_suppliers SET status = 'cancelled' WHERE supplier_id = %s", (sid,))
    db.commit()
    run_interventions(db, PLAYBOOK, email, "escalated_to_at_risk", DAY)
    forced = manual_intervention(db, PLAYBOOK, email, sid, "in_app", force=True, day=DAY)
    assert handler.messages == []
    assert (forced.status, forced.reason) == ("suppressed", "cancelled")
    assert db.execute("SELECT status, reason FROM ops.interventions WHERE channel = 'email'").fetchone() == \
        ("suppressed", "cancelled")
    assert in_app_count(db) == 1  # the playbook's nudge, delivered before the cancellation; nothing manual


def test_manual_relaunch_reports_already_delivered_not_sent(db, smtp, warehouse, monkeypatch, tmp_path):
    """Launching the same manual intervention (supplier, channel, day) again sends nothing, and the job
    and ``cs-pipeline intervene`` say so: already delivered earlier, not sent again (not "sent")."""
    from typer.testing import CliRunner

    from cs_pipeline.cli import app

    handler, email = smtp
    load(db, [{"sid": "again1", "day": DAY, "risk": "healthy"}])
    monkeypatch.setenv("CS_PIPELINE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CS_PIPELINE_SMTP_PORT", str(email.port))
    monkeypatch.setenv("CS_PIPELINE_SMTP_TLS", "false")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    runner = CliRunner()
    first = runner.invoke(app, ["intervene", "again1", "--channel", "email", "--message", "hello"])
    assert first.exit_code == 0, first.output
    assert ": sent" in first.output and "not sent again" not in first.output and len(handler.messages) == 1
    again = runner.invoke(app, ["intervene", "again1", "--channel", "email", "--message", "hello again"])
    assert len(handler.messages) == 1  # not sent twice
    assert "already delivered earlier" in again.output and "not sent again" in again.output, again.output
    assert ": sent" not in again.output
    job = manual_intervention_job.execute_in_process(
        run_config=manual_run_config("again1", "email", message="third"), instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": warehouse, "email": email}, raise_on_error=False)
    metadata = job.output_for_node("send_manual_intervention") and \
        job.asset_materializations_for_node("send_manual_intervention")[0].metadata
    assert metadata["delivery"].value == "already_sent" and len(handler.messages) == 1
    assert "not sent again" in metadata["note"].value


def test_sensor_evaluates_a_gated_day_once_it_is_fixed_after_a_newer_day(db, smtp, warehouse):
    """A day whose quality gate failed is not evaluated; when it is materialised again and passes (after a
    newer day arrived), the sensor evaluates it then (before, it was remembered as evaluated and skipped)."""
    from cs_pipeline.quality.gx import ensure_validation_table

    handler, email = smtp
    gated, newer = not_in_control("escalated_to_at_risk", 2, "gt")
    load(db, [{"sid": gated, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": gated, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    ensure_validation_table(db)
    db.execute("DELETE FROM ops.validation_results WHERE asset = 'marts/customer_health'")
    db.commit()

    def gate(day: date, failed: bool) -> None:
        db.execute("INSERT INTO ops.validation_results (asset, partition_date, suite, passed, blocking_failed, "
                   "evaluated, failed, details) VALUES ('marts/customer_health', %s, 'health', %s, %s, 1, %s, '{}')",
                   (day, not failed, failed, int(failed)))
        db.commit()

    instance = dg.DagsterInstance.ephemeral()
    gate(DAY, failed=True)
    _materialise(instance, DAY)
    requests, cursor = _sensor(instance, warehouse)
    assert requests == []  # the gate failed: no interventions
    load(db, [{"sid": newer, "day": DAY, "risk": "healthy"},
              {"sid": newer, "day": DAY + timedelta(days=1), "risk": "at_risk", "previous": "healthy"},
              {"sid": gated, "day": DAY + timedelta(days=1), "risk": "at_risk", "previous": "at_risk"}])
    gate(DAY + timedelta(days=1), failed=False)
    _materialise(instance, DAY + timedelta(days=1))
    requests, cursor = _sensor(instance, warehouse, cursor)
    assert [r.tags["cs_pipeline/as_of_date"] for r in requests] == [(DAY + timedelta(days=1)).isoformat()]
    gate(DAY, failed=False)  # the gated day is fixed and re-run
    _materialise(instance, DAY)
    requests, cursor = _sensor(instance, warehouse, cursor)
    assert [r.tags["cs_pipeline/as_of_date"] for r in requests] == [DAY.isoformat()]
    resources = {"warehouse": warehouse, "email": email}
    assert intervention_job.execute_in_process(run_config=requests[0].run_config, instance=instance,
                                               resources=resources).success
    assert [m["To"] for m in handler.messages] == [f"{gated}@example.org"]
    _materialise(instance, DAY)  # evaluated now: a further re-run of the past day contacts nobody
    _materialise(instance, DAY - timedelta(days=10))  # a backfill: nobody
    assert _sensor(instance, warehouse, cursor)[0] == []


def test_critical_alert_does_not_claim_a_call_task_on_a_first_critical_day(db, smtp):
    """On a supplier's first scored day as critical no call task exists (no transition): the alert must not
    say one was created."""
    handler, email = smtp
    load(db, [{"sid": "crit3", "day": DAY, "risk": "critical", "score": 10.0}])
    run_interventions(db, PLAYBOOK, email, None, DAY)
    assert db.execute("SELECT count(*) FROM ops.support_interactions").fetchone()[0] == 0
    (alert,) = handler.messages
    body = alert.get_payload(decode=True).decode()
    assert "crit3" in alert["Subject"] and "has been created" not in body
    assert "does not create a call task" in body


def test_failure_before_data_is_recorded_as_retried_and_is_retried(db, tmp_path):
    """An error before DATA (here the outbox cannot be created) is certain non-delivery: the row says it is
    retried (not "uncertain, not retried") and the next run does send it, once."""
    sid = not_in_control("escalated_to_at_risk", 1, "bd")[0]
    _escalated(db, sid)
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the outbox directory should be")
    run_interventions(db, PLAYBOOK, EmailResource(outbox_dir=str(blocker)), "escalated_to_at_risk", DAY)
    status, error = db.execute("SELECT status, last_error FROM ops.interventions WHERE channel = 'email'").fetchone()
    assert status == "failed" and "retried by the next run" in error and "not retried" not in error
    outbox = tmp_path / "outbox"
    run_interventions(db, PLAYBOOK, EmailResource(outbox_dir=str(outbox)), "escalated_to_at_risk", DAY)
    run_interventions(db, PLAYBOOK, EmailResource(outbox_dir=str(outbox)), "escalated_to_at_risk", DAY)
    assert len(list(outbox.glob("*.eml"))) == 1
    assert db.execute("SELECT status FROM ops.interventions WHERE channel = 'email'").fetchone()[0] == "sent"
