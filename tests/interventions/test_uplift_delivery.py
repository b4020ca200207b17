"""Issue 27: uplift that tells the truth (identical bookkeeping of both arms, intention to treat,
contamination) and delivery that reaches (retries by later runs, expiry, alerts until delivered, manual
interventions never held out). Real embedded PostgreSQL and a real aiosmtpd server, as in test_guarantees."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest

from cs_pipeline.interventions.delivery import EmailResource
from cs_pipeline.interventions.planning import apply_filters, in_control_group, plan
from cs_pipeline.interventions.service import run_interventions
from tests.interventions.test_guarantees import (  # noqa: F401 (fixtures)
    DAY,
    PLAYBOOK,
    db,
    load,
    not_in_control,
    smtp,
    synthetic,
)

pytestmark = pytest.mark.slow

DOWN = EmailResource(host="127.0.0.1", port=1, use_tls=False, timeout_seconds=2)  # nothing listens: refused


def time_passes(db, hours: float) -> None:
    """Move the stored clock marks back by ``hours``, as if that much time had passed (the rows' planning
    time, their backoff and their daily-cap reservation day)."""
    columns = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'ops' AND table_name = 'interventions'").fetchall()}
    shift = ["created_at = created_at - make_interval(secs => %(s)s)",
             "send_day = send_day - (%(s)s / 86400)::int"]
    if "next_attempt_at" in columns:
        shift.append("next_attempt_at = next_attempt_at - make_interval(secs => %(s)s)")
    db.execute(f"UPDATE ops.interventions SET {', '.join(shift)}", {"s": hours * 3600})
    db.commit()


def test_failed_critical_alert_is_delivered_by_the_next_days_run(db, smtp):
    handler, email = smtp
    load(db, [{"sid": "crit9", "day": DAY, "risk": "critical", "score": 15.0},
              {"sid": "crit9", "day": DAY + timedelta(days=1), "risk": "critical", "previous": "critical"}])
    run_interventions(db, PLAYBOOK, DOWN, None, DAY)  # SMTP down during day D's run
    assert db.execute("SELECT status FROM ops.interventions WHERE rule = 'critical_alert'").fetchone()[0] == "failed"
    time_passes(db, 24)
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=1))
    alerts = [m for m in handler.messages if m["To"] == PLAYBOOK.cs_team_email]
    assert len(alerts) == 1 and "crit9" in alerts[0]["Subject"]
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=1))  # a re-run sends nothing more
    assert len(handler.messages) == 1


def test_alert_is_retried_past_the_window_while_critical_then_expires_when_not(db, smtp):
    handler, email = smtp
    load(db, [{"sid": "crit8", "day": DAY, "risk": "critical"}])
    run_interventions(db, PLAYBOOK, DOWN, None, DAY)
    time_passes(db, 72)  # past the 48 h window, still critical: retried
    run_interventions(db, PLAYBOOK, DOWN, None, DAY + timedelta(days=3))
    assert db.execute("SELECT status, attempts FROM ops.interventions").fetchone() == ("failed", 2)
    load(db, [{"sid": "crit8", "day": DAY + timedelta(days=4), "risk": "at_risk", "previous": "critical"}])
    time_passes(db, 24)
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=4))
    assert handler.messages == []
    assert db.execute("SELECT status, reason FROM ops.interventions").fetchone() == ("expired", "no_longer_critical")


def test_supplier_email_failed_before_data_is_retried_by_a_later_run_and_delivered_once(db, smtp):
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "rt")[0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"},
              {"sid": sid, "day": DAY + timedelta(days=1), "risk": "at_risk", "previous": "at_risk"}])
    run_interventions(db, PLAYBOOK, DOWN, None, DAY)  # refused before DATA: certainly not accepted
    assert db.execute("SELECT status FROM ops.interventions WHERE channel = 'email'").fetchone()[0] == "failed"
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=1))  # backoff not passed yet: waits
    assert handler.messages == []
    time_passes(db, 1)
    report = run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=1))  # nobody new is due
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=1))
    assert [m["To"] for m in handler.messages] == [f"{sid}@example.org"]  # once, same Message-ID as on D
    assert report.retried == 1 and report.sent == 1
    status, msg_id = db.execute("SELECT status, message_id FROM ops.interventions WHERE channel = 'email'").fetchone()
    assert status == "sent" and handler.messages[0]["Message-ID"] == msg_id


def test_undelivered_message_expires_after_the_window_and_the_check_warns(db, smtp, warehouse):
    handler, email = smtp
    sid = not_in_control("escalated_to_at_risk", 1, "ex")[0]
    load(db, [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    run_interventions(db, PLAYBOOK, DOWN, None, DAY)
    time_passes(db, 49)  # past the default retry_window_hours (48)
    report = run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=2))
    status, reason, error = db.execute("SELECT status, reason, last_error FROM ops.interventions "
                                       "WHERE channel = 'email'").fetchone()
    assert (status, reason) == ("expired", "retry_window_passed") and "refused" in error  # the last error kept
    assert handler.messages == [] and report.expired == 1
    from cs_pipeline.interventions.defs import delivered_within_retry_window

    result = delivered_within_retry_window(dg.build_asset_check_context(resources={"warehouse": warehouse}))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["expired"].value == 1


def test_manual_email_to_a_supplier_in_the_control_share_is_sent(db, smtp):
    from cs_pipeline.interventions.service import manual_intervention

    handler, email = smtp
    ids = [f"mc{i:03d}" for i in range(200)]
    day = DAY + timedelta(days=20)
    sid = [s for s in ids if in_control_group([s], "manual", PLAYBOOK.control_share)[0]][0]  # in the holdout
    load(db, [{"sid": sid, "day": DAY, "risk": "healthy"}])
    result = manual_intervention(db, PLAYBOOK, email, sid, "email", message="How can we help?", day=day)
    assert (result.status, result.reason, result.forced) == ("sent", None, False)
    assert [m["To"] for m in handler.messages] == [f"{sid}@example.org"]


def _history(rows: list[tuple[str, str, str]], day) -> pd.DataFrame:
    """ops.interventions rows of ``day`` (supplier, channel, status:reason) as ``service.history`` reads them."""
    out = []
    for sid, channel, state in rows:
        status, _, reason = state.partition(":")
        out.append({"supplier_id": sid, "rule": "escalated_to_at_risk", "channel": channel, "audience": "supplier",
                    "as_of_date": day, "status": status, "reason": reason or None})
    return pd.DataFrame(out)


def test_a_control_case_re_enters_on_the_same_schedule_as_a_treated_one():
    rule = PLAYBOOK.rule("escalated_to_at_risk")
    treated, control = "treated1", "control1"
    history = _history([(treated, "email", "sent:"), (treated, "in_app", "sent:"),
                        (control, "email", "suppressed:control"), (control, "in_app", "suppressed:control")], DAY)
    suppliers = pd.DataFrame({"supplier_id": [treated, control], "status": "active"})
    context = pd.DataFrame({"supplier_id": [treated, control]})
    for later, expected in ((3, "cooldown"), (8, None)):  # both escalate again 3 and 8 days later
        day = DAY + timedelta(days=later)
        out = apply_filters(plan(rule, context, day), history, suppliers, PLAYBOOK, day)
        reasons = out.groupby("supplier_id")["reason"].agg(lambda r: set(r.dropna()) - {"control"})
        assert reasons[treated] == reasons[control] == ({expected} if expected else set()), later
    # the weekly cap counts a control case's messages as it counts a treated case's
    busy = _history([(s, "email", state) for s, state in ((treated, "sent:"), (control, "suppressed:control"))
                     for _ in range(3)], DAY - timedelta(days=2))
    out = apply_filters(plan(rule, context, DAY), busy.assign(channel="in_app"), suppliers,
                        PLAYBOOK.model_copy(update={"cooldown_days": 0}), DAY)
    assert set(out["reason"]) == {"weekly_cap"}


def test_contamination_of_a_control_case_is_counted(db, smtp):
    from cs_pipeline.interventions.outcome_store import read_outcome_rows
    from cs_pipeline.interventions.outcomes import case_outcomes, uplift

    handler, email = smtp
    ids = [f"ct{i:03d}" for i in range(300)]
    flags = in_control_group(ids, "escalated_to_at_risk", PLAYBOOK.control_share, episode=DAY)
    control, clean = [s for s, c in zip(ids, flags) if c][:2]
    rows = []
    for sid in (control, clean):
        rows += [{"sid": sid, "day": DAY - timedelta(days=1), "risk": "healthy"},
                 {"sid": sid, "day": DAY, "risk": "at_risk", "previous": "healthy"}]
    rows += [{"sid": control, "day": DAY + timedelta(days=2), "risk": "critical", "previous": "at_risk"},
             {"sid": clean, "day": DAY + timedelta(days=2), "risk": "at_risk", "previous": "at_risk"}]
    rows += [{"sid": s, "day": DAY + timedelta(days=30), "risk": "healthy", "score": 70.0} for s in (control, clean)]
    load(db, rows)
    run_interventions(db, PLAYBOOK, email, None, DAY)
    assert set(db.execute("SELECT reason FROM ops.interventions").fetchall()) == {("control",)}
    run_interventions(db, PLAYBOOK, email, None, DAY + timedelta(days=2))  # escalated: a call task for one
    assert db.execute("SELECT count(*) FROM ops.support_interactions WHERE supplier_id = %s", (control,)
                      ).fetchone()[0] == 1
    cases = case_outcomes(read_outcome_rows(db, 30)).set_index("supplier_id")
    assert list(cases["arm"]) == ["control", "control"]
    assert bool(cases.loc[control, "contaminated"]) and not bool(cases.loc[clean, "contaminated"])
    assert cases.loc[control, "health_change"] == pytest.approx(20.0)  # 50 -> 70 after 30 days
    assert uplift(cases.reset_index())["contamination"] == pytest.approx(0.5)
