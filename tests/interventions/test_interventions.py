"""Interventions: pure playbook logic, then the worked scenario of DOMAIN.md from raw events through
Dagster, the escalation sensor and intervention_job to an e-mail on a real SMTP server on loopback and
a call task; exactly-once delivery across ticks, re-runs and a partial SMTP failure."""

from __future__ import annotations

import email as email_lib
import json
import socket
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from aiosmtpd.controller import Controller

from cs_pipeline.definitions import build_definitions
from cs_pipeline.interventions.defs import intervention_job, risk_escalation_sensor
from cs_pipeline.interventions.delivery import EmailResource
from cs_pipeline.interventions.planning import (
    apply_filters,
    in_control_group,
    newly_matching,
    next_business_day,
    plan,
    render,
)
from cs_pipeline.interventions.playbook import PlaybookError, load_playbook
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import (
    BILLING_COLUMNS,
    EVENT_COLUMNS,
    SUPPLIER_COLUMNS,
    TICKET_COLUMNS,
    _write,
    reset_interventions,
)

PLAYBOOK = load_playbook()
DAY = date(2025, 6, 9)


# --- pure logic ----------------------------------------------------------------------------------


def facts(**overrides) -> dict:
    row = dict(supplier_id="s1", as_of_date=DAY, risk_level="healthy", previous_risk_level="healthy",
               score_delta_7d=0.0, score_delta_30d=0.0, lifecycle_stage="active", days_since_onboarded=100,
               days_since_last_login=1, days_since_signup=120, status="active")
    row.update(overrides)
    return row


def test_rules_fire_only_for_suppliers_that_newly_match():
    today = pd.DataFrame([
        facts(supplier_id="esc", risk_level="at_risk", previous_risk_level="healthy"),
        facts(supplier_id="crit", risk_level="critical", previous_risk_level="at_risk"),
        facts(supplier_id="still", risk_level="at_risk", previous_risk_level="at_risk"),
        facts(supplier_id="new", lifecycle_stage="onboarding", days_since_onboarded=8, days_since_last_login=7),
        facts(supplier_id="old_news", lifecycle_stage="onboarding", days_since_onboarded=9, days_since_last_login=8),
        facts(supplier_id="drop", score_delta_7d=-25.0),
    ])
    yesterday = pd.DataFrame([
        facts(supplier_id="esc"), facts(supplier_id="crit", risk_level="at_risk"),
        facts(supplier_id="still", risk_level="at_risk"), facts(supplier_id="drop"),
        facts(supplier_id="new", lifecycle_stage="onboarding", days_since_onboarded=7, days_since_last_login=6),
        facts(supplier_id="old_news", lifecycle_stage="onboarding", days_since_onboarded=8, days_since_last_login=7),
    ])
    got = {r.name: newly_matching(r, today, yesterday) for r in PLAYBOOK.rules}
    assert got["escalated_to_at_risk"] == ["esc"]
    assert got["escalated_to_critical"] == ["crit"]
    assert got["new_supplier_inactive"] == ["new"]
    assert got["sharp_score_drop"] == ["drop"]
    assert got["milestone_celebration"] == []
    assert got["critical_alert"] == ["crit"]  # every day it is critical (cooldowns limit the repeats)
    # No previous score (first scored day, or a gap): not a transition.
    assert newly_matching(PLAYBOOK.rule("escalated_to_at_risk"), today, yesterday.iloc[0:0]) == []
    milestones = pd.DataFrame({"supplier_id": ["esc", "gone"], "milestone_type": ["first_login", "first_login"]})
    assert newly_matching(PLAYBOOK.rule("milestone_celebration"), today, yesterday, milestones) == ["esc"]


def test_control_group_is_deterministic_and_about_ten_percent():
    ids = [f"sup_{i:06d}" for i in range(4000)]
    first = in_control_group(ids, "escalated_to_at_risk", 0.10, episode=DAY)
    assert (first == in_control_group(ids, "escalated_to_at_risk", 0.10, episode=DAY)).all()
    assert 0.08 < first.mean() < 0.12
    assert (first != in_control_group(ids, "escalated_to_critical", 0.10, episode=DAY)).any()
    # each episode of a supplier is a new case, drawn independently (a supplier is not control for ever)
    again = in_control_group(ids, "escalated_to_at_risk", 0.10, episode=DAY + timedelta(days=9))
    assert (first != again).any() and 0.005 < (first & again).mean() < 0.02


def test_next_business_day():
    assert next_business_day(date(2025, 6, 6)) == date(2025, 6, 9)  # Friday -> Monday
    assert next_business_day(date(2025, 6, 9)) == date(2025, 6, 10)


def _planned(rule: str, ids: list[str]) -> pd.DataFrame:
    context = pd.DataFrame({"supplier_id": ids, "business_name": ids})
    return plan(PLAYBOOK.rule(rule), context, DAY)


def test_filters_cooldown_caps_cancelled_opt_out_and_control():
    ids = [f"sup_{i:04d}" for i in range(60)]
    control = set(pd.Series(ids)[in_control_group(ids, "escalated_to_at_risk", PLAYBOOK.control_share, episode=DAY)])
    planned = _planned("escalated_to_at_risk", ids)
    sent = pd.DataFrame([
        {"supplier_id": ids[1], "channel": "email", "audience": "supplier", "as_of_date": DAY - timedelta(days=3)},
        {"supplier_id": ids[2], "channel": "email", "audience": "supplier", "as_of_date": DAY - timedelta(days=8)},
    ] + [{"supplier_id": ids[3], "channel": "in_app", "audience": "supplier", "as_of_date": DAY - timedelta(days=d)}
         for d in (1, 2, 3)])
    suppliers = pd.DataFrame({"supplier_id": ids, "status": ["cancelled" if i == 0 else "active" for i in range(60)]})
    opted = pd.DataFrame({"supplier_id": [ids[4]], "channel": [None]})
    out = apply_filters(planned, sent, suppliers, PLAYBOOK, DAY, opted).set_index(["supplier_id", "channel"])
    assert out.loc[(ids[0], "email"), "reason"] == "cancelled"
    assert out.loc[(ids[4], "email"), "reason"] == "opted_out" and out.loc[(ids[4], "in_app"), "reason"] == "opted_out"
    for sid in control - {ids[0], ids[1], ids[3], ids[4]}:  # control is drawn after the other filters
        assert out.loc[(sid, "email"), "reason"] == "control"
    if ids[1] not in control:
        assert out.loc[(ids[1], "email"), "reason"] == "cooldown"  # sent 3 days ago
        assert out.loc[(ids[1], "in_app"), "status"] == "planned"  # other channel
    if ids[2] not in control:
        assert out.loc[(ids[2], "email"), "status"] == "planned"  # 8 days ago: cooled down
    if ids[3] not in control:
        assert out.loc[(ids[3], "email"), "reason"] == "weekly_cap"  # 3 already this week
    small = PLAYBOOK.model_copy(update={"daily_cap": 5, "control_share": 0.0})
    capped = apply_filters(planned, sent.iloc[0:0], suppliers.assign(status="active"), small, DAY)
    # a supplier's rule (e-mail + in-app) is admitted whole: two suppliers (4 messages) fit a cap of 5
    assert (capped["status"] == "planned").sum() == 4 and set(capped["reason"].dropna()) == {"daily_cap"}


def test_critical_alert_to_the_cs_team_is_never_held_back():
    ids = [f"sup_{i:04d}" for i in range(200)]
    planned = pd.concat([_planned("critical_alert", ids), _planned("escalated_to_critical", ids)], ignore_index=True)
    everyone_sent = pd.DataFrame([{"supplier_id": s, "channel": c, "audience": "supplier", "as_of_date": DAY}
                                  for s in ids for c in ("email", "call")])
    out = apply_filters(planned, everyone_sent, pd.DataFrame({"supplier_id": ids, "status": "active"}), PLAYBOOK, DAY)
    alerts = out.loc[(out["channel"] == "email") & (out["audience"] == "cs_team")]
    assert len(alerts) == 200 and (alerts["status"] == "planned").all()
    assert (out.loc[out["channel"] == "call", "status"] == "suppressed").all()


def test_templates_render_with_name_score_drivers_and_feature():
    subject, body = render("reengagement_tips", {"business_name": "Juniper Lane Photography", "health_score": "43",
                                                 "drivers": "no login for 9 days: 10 of 30 points",
                                                 "days_since_last_login": 9, "vendor_category": "photographer",
                                                 "least_adopted_feature": "journeys"})
    assert "Juniper Lane Photography" in subject
    assert "43 / 100" in body and "no login for 9 days" in body and "automated journeys" in body


def test_playbook_errors_name_the_field(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("version: x\ncs_team_email: cs@x.example\nfrom_email: a@x.example\nrules:\n"
                   "  - {name: r, description: d, priority: 1, condition: {risk_level: [critical]},"
                   " actions: [{channel: pigeon, template: feature_nudge}]}\n")
    with pytest.raises(PlaybookError, match=r"p\.yaml: rules\.0\.actions\.0\.channel"):
        load_playbook(bad)


# --- the worked scenario through Dagster and a real SMTP server ------------------------------------


class CapturingHandler:
    """An SMTP server's handler: keeps every message; refuses recipients listed in ``refuse``."""

    def __init__(self) -> None:
        self.messages: list[email_lib.message.Message] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email_lib.message_from_bytes(envelope.content))
        return "250 Message accepted"


@pytest.fixture()
def smtp_server():
    handler = CapturingHandler()
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def scenario_landing(directory: Path, first: date, days: int) -> None:
    """A photographer (s_photo) signs up and completes setup on the first day, logs in on the first
    two days, then never again; three busy suppliers log in every day."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(days):
        day = first + timedelta(days=i)
        suppliers = [["s_photo", "Juniper Lane Photography", "owner@juniperlane.example", "photographer", "starter",
                      "GB", f"{first}T09:00:00Z", f"{first}T11:00:00Z", "trialing", "", "19.00", "GBP"]]
        events = []
        if i < 2:
            events += [[f"p{i}a", "s_photo", "u1", "login", f"{day}T09:30:00Z", "", ""],
                       [f"p{i}b", "s_photo", "u1", "profile_updated", f"{day}T10:00:00Z", "", ""]]
        for n in range(3):
            sid = f"s_busy{n}"
            suppliers.append([sid, f"Busy {n} Weddings", f"busy{n}@example.org", "planner", "professional", "GB",
                              "2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z", "active", "", "49.00", "GBP"])
            events += [[f"b{n}_{i}a", sid, "u1", "login", f"{day}T08:00:00Z", "", ""],
                       [f"b{n}_{i}b", sid, "u1", "form_sent", f"{day}T09:00:00Z", f"c{i}", ""],
                       [f"b{n}_{i}c", sid, "u1", "form_completed", f"{day}T12:00:00Z", f"c{i}", ""]]
        _write(directory / f"suppliers_{day}.csv", SUPPLIER_COLUMNS, suppliers)
        _write(directory / f"activity_events_{day}.csv", EVENT_COLUMNS, events)
        _write(directory / f"support_tickets_{day}.csv", TICKET_COLUMNS, [])
        _write(directory / f"billing_events_{day}.csv", BILLING_COLUMNS, [])


@pytest.fixture(scope="module")
def scenario(settings, warehouse, tmp_path_factory):
    with warehouse.connect() as conn:
        reset_interventions(conn)
    first = date(2025, 6, 1)
    landing = tmp_path_factory.mktemp("scenario_landing")
    scenario_landing(landing, first, 9)
    local = settings.model_copy(update={"landing_dir": landing})
    defs = build_definitions(local)
    instance = dg.DagsterInstance.ephemeral()
    assert all(s.success for s in run_job_over_range(defs, "daily_customer_success", first, DAY, instance, 9))
    # A second materialisation of the newest day: the event the sensor reacts to.
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key=DAY.isoformat(), instance=instance,
                                  asset_selection=[dg.AssetKey(["marts", "customer_health"])]).success
    return defs, instance


def _tick(context) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """Evaluate the sensor as the daemon does: (run requests, skip message, new cursor)."""
    data = risk_escalation_sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message, data.cursor


def test_worked_scenario_sensor_job_email_and_call_task(scenario, warehouse, smtp_server, conn):
    defs, instance = scenario
    handler, port = smtp_server
    context = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse})
    requests, skip, cursor = _tick(context)
    assert skip is None and cursor
    assert len(requests) == 1 and requests[0].run_key.startswith("interventions:2025-06-09:")
    assert requests[0].run_config["ops"]["deliver_interventions"]["config"] == {"as_of_date": "2025-06-09"}

    email = EmailResource(host="127.0.0.1", port=port, use_tls=False)
    for request in requests:
        result = intervention_job.execute_in_process(run_config=request.run_config, instance=instance,
                                                     resources={"warehouse": warehouse, "email": email})
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"delivered_within_retry_window": True}  # every run reports the delivery check
    to_photo = [m for m in handler.messages if m["To"] == "owner@juniperlane.example"]
    tips = [m for m in to_photo if "tips" in m["Subject"]]
    assert len(tips) == 1
    body = tips[0].get_payload(decode=True).decode()
    assert "Juniper Lane Photography" in body and "for 7 days" in body  # last login 06-02, as of 06-09
    calls = conn.execute("SELECT supplier_id, interaction_type, scheduled_for, notes FROM ops.support_interactions "
                         "WHERE supplier_id = 's_photo'").fetchall()
    assert len(calls) == 1 and calls[0][1] == "check_in"
    assert calls[0][2] == date(2025, 6, 11)  # delay 1 day -> 06-10 (Tue) -> next business day 06-11
    row = conn.execute("SELECT status, health_score, risk_level, message_id FROM ops.interventions "
                       "WHERE supplier_id = 's_photo' AND rule = 'new_supplier_inactive' AND channel = 'email'").fetchone()
    assert row[0] == "sent" and row[1] is not None and row[3] == tips[0]["Message-ID"]

    # The same tick again (cursor advanced): nothing new. Re-running every job: nothing sent twice.
    again = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}, cursor=cursor)
    assert _tick(again)[0] == []
    before = len(handler.messages)
    for request in requests:
        intervention_job.execute_in_process(run_config=request.run_config, instance=instance,
                                            resources={"warehouse": warehouse, "email": email})
    assert len(handler.messages) == before
    assert conn.execute("SELECT count(*) FROM ops.support_interactions WHERE supplier_id = 's_photo'").fetchone()[0] == 1


def test_partial_smtp_failure_is_retried_exactly_once(scenario, warehouse, smtp_server, conn):
    defs, instance = scenario
    handler, port = smtp_server
    conn.execute("UPDATE marts.success_milestones SET celebrated = false, achieved_at = %s", (DAY,))
    conn.execute("DELETE FROM ops.interventions WHERE rule = 'milestone_celebration'")
    conn.commit()
    handler.refuse = {"busy1@example.org"}
    email = EmailResource(host="127.0.0.1", port=port, use_tls=False)
    config = {"ops": {"deliver_interventions": {"config": {"rule": "milestone_celebration",
                                                           "as_of_date": DAY.isoformat()}}}}
    first = intervention_job.execute_in_process(run_config=config, instance=instance,
                                                resources={"warehouse": warehouse, "email": email})
    assert first.success
    status = dict(conn.execute("SELECT supplier_id, status FROM ops.interventions "
                               "WHERE rule = 'milestone_celebration'").fetchall())
    treated = {s for s, st in status.items() if st in ("sent", "failed")}
    assert status.get("s_busy1") == "failed"
    celebrated = dict(conn.execute("SELECT supplier_id, bool_or(celebrated) FROM marts.success_milestones "
                                   "GROUP BY 1").fetchall())
    assert celebrated["s_busy1"] is False  # not delivered: not celebrated
    handler.refuse = set()
    intervention_job.execute_in_process(run_config=config, instance=instance,
                                        resources={"warehouse": warehouse, "email": email})
    per_recipient = pd.Series([m["To"] for m in handler.messages if "Congratulations" in m["Subject"]]).value_counts()
    expected = {"owner@juniperlane.example" if s == "s_photo" else f"busy{s[-1]}@example.org" for s in treated}
    assert set(per_recipient.index) == expected and (per_recipient == 1).all()
    assert conn.execute("SELECT count(*) FROM ops.interventions WHERE rule = 'milestone_celebration' "
                        "AND status = 'failed'").fetchone()[0] == 0
    context = json.loads(json.dumps(conn.execute("SELECT context FROM ops.interventions WHERE supplier_id = 's_busy1' "
                                                 "AND rule = 'milestone_celebration'").fetchone()[0]))
    assert context["milestones"]
    assert dict(conn.execute("SELECT supplier_id, bool_and(celebrated) FROM marts.success_milestones "
                             "WHERE supplier_id = 's_busy1' GROUP BY 1").fetchall())["s_busy1"] is True


def test_outcomes_asset_materialises(scenario, warehouse, conn):
    defs, instance = scenario
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["marts", "intervention_outcomes"])])
    assert result.success
    n = conn.execute("SELECT count(*) FROM marts.intervention_outcomes").fetchone()[0]
    assigned = conn.execute("SELECT count(*) FROM ops.interventions WHERE audience = 'supplier' AND channel <> 'call' "
                            "AND rule <> 'manual' AND (status <> 'suppressed' OR reason = 'control')").fetchone()[0]
    assert n == assigned > 0  # intention to treat: every assigned message, delivered or not
    metadata = result.asset_materializations_for_node("marts__intervention_outcomes")[0].metadata
    report = metadata["uplift_by_rule"].value
    assert report and all(item["verdict"] == "too few cases" for item in report.values())  # a handful of cases
    assert conn.execute("SELECT count(*) FROM marts.intervention_outcomes WHERE arm IS NULL").fetchone()[0] == 0
