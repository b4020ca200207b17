"""Dagster definitions of the intervention stage: ``risk_escalation_sensor``, ``intervention_job``,
``manual_intervention``, the ``intervention_outcomes`` asset, the ``email`` resource, and
``ops/interventions``, the asset the jobs write (so its reads of raw.suppliers and its writes to
success_milestones show in the asset graph).

(No ``from __future__ import annotations`` here: Dagster inspects the context annotations.)
"""

import json
from datetime import date, timedelta

import dagster as dg

from cs_pipeline.core.db import read_frame, relation_exists
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.interventions import service
from cs_pipeline.interventions.delivery import EmailResource, ensure_intervention_tables
from cs_pipeline.interventions.outcome_store import read_outcome_rows, write_outcomes
from cs_pipeline.interventions.outcomes import uplift_table
from cs_pipeline.interventions.playbook import CHANNELS, load_playbook
from cs_pipeline.interventions.service import (
    due_suppliers,
    latest_health_day,
    run_interventions,
)
from cs_pipeline.quality.gx import gate_failed
from cs_pipeline.core.settings import ENV_SMTP_PASSWORD, Settings

CUSTOMER_HEALTH = dg.AssetKey(["marts", "customer_health"])
INTERVENTIONS = dg.AssetKey(["ops", "interventions"])
#: ops.interventions (with ops.in_app_notifications and ops.support_interactions) is written by
#: intervention_job, an op job launched by risk_escalation_sensor, not materialised as an asset: this spec
#: puts it in the lineage. The job reads owners' e-mail addresses from raw.suppliers, the day's scores from
#: customer_health, uncelebrated milestones (and marks them celebrated) from success_milestones, and the
#: least adopted core feature from fct_feature_adoption.
interventions_spec = dg.AssetSpec(
    key=INTERVENTIONS,
    group_name="interventions",
    deps=[dg.AssetKey(["raw", "suppliers"]), CUSTOMER_HEALTH, dg.AssetKey(["marts", "success_milestones"]),
          dg.AssetKey(["marts", "fct_feature_adoption"])],
    kinds={"postgres"},
    description="ops.interventions: every planned, sent, failed or suppressed intervention (written by "
                "intervention_job, launched by risk_escalation_sensor); also ops.in_app_notifications and "
                "ops.support_interactions. The job sets success_milestones.celebrated after a celebration.",
)
#: Days the sensor remembers as evaluated (in its cursor).
EVALUATED_MEMORY = 60


class InterventionConfig(dg.Config):
    """One day's interventions: plan every rule due on ``as_of_date`` (under the planning lock), then
    deliver. ``rule`` / ``supplier_ids`` (optional) restrict it to one rule / some suppliers."""

    rule: str = ""
    as_of_date: str
    supplier_ids: list[str] = []
    batch: int = 0


@dg.op(description="Plan and reserve a day's interventions (opt-outs, one rule per supplier, cooldowns, caps, "
                   "control group; PostgreSQL-locked), then deliver them exactly once.")
def deliver_interventions(context: dg.OpExecutionContext, config: InterventionConfig, warehouse: WarehouseResource,
                          email: EmailResource) -> dg.Output:
    playbook = load_playbook()
    day = date.fromisoformat(config.as_of_date)
    with warehouse.connect() as conn:
        report = run_interventions(conn, playbook, email, config.rule or None, day, config.supplier_ids or None,
                                   run_id=context.run_id)
        counts = service.undelivered_past_window(conn, playbook)
        disabled = service.disabled_rules(conn, playbook, day)
    for rule_name, reason in disabled.items():  # e.g. churn_risk_rising without a churn model (issue 26)
        context.log.info(f"rule {rule_name} not evaluated on {day}: {reason}")
    # Every run reports the delivery check on ops/interventions (also runnable on its own from the UI).
    context.log_event(dg.AssetCheckEvaluation(
        asset_key=INTERVENTIONS, check_name="delivered_within_retry_window", passed=not any(counts.values()),
        severity=dg.AssetCheckSeverity.WARN, metadata={**counts, "retry_window_hours": playbook.retry_window_hours}))
    context.log.info(f"{config.rule or 'all rules'} {day}: {report}")
    context.log_event(dg.AssetMaterialization(asset_key=INTERVENTIONS, partition=None, metadata={
        "rule": config.rule or "all", "as_of_date": config.as_of_date, "sent": report.sent,
        "failed": report.failed, "retried": report.retried, "expired": report.expired}))
    if report.failed:
        context.log.warning(f"{report.failed} delivery failure(s): re-run the job to retry only those")
    return dg.Output(
        report.sent,
        metadata={"sent": report.sent, "failed": report.failed, "planned": report.planned,
                  "suppressed": report.suppressed, "already_done": report.skipped_already_done,
                  "reconciled": report.reconciled, "retried": report.retried, "expired": report.expired,
                  "email_mode": email.mode, "rules_not_evaluated": dg.MetadataValue.json(disabled)},
    )


@dg.job(description="Plan and deliver a day's playbook interventions (launched by risk_escalation_sensor).",
        tags={"cs_pipeline/stage": "interventions"})
def intervention_job():
    deliver_interventions()


def _day(partition: str | None) -> date | None:
    try:
        return date.fromisoformat(partition) if partition else None
    except ValueError:
        return None


def plan_sensor_tick(events: list[tuple[int, date | None]], cursor: str | None, latest: date | None,
                     max_gap_days: int) -> tuple[list[tuple[date, int]], list[str], str | None]:
    """Which materialised days a tick evaluates (pure; the sensor adds the gate and due checks).

    Args:
        events: (storage id, partition day) of the customer_health materialisations after the cursor.
        cursor: the previous tick's cursor (JSON ``{"after": storage id, "evaluated": [days]}``) or None.
        latest: the newest scored day in the warehouse.
        max_gap_days: days before ``latest`` a day not yet evaluated may be and still be new.

    Returns:
        ((day, storage id) to evaluate, oldest first; skip notes; the new cursor). A day is evaluated when it
        is new (not evaluated before, at most ``max_gap_days`` before ``latest``; on the very first tick only
        ``latest``), or when it is ``latest`` materialised again (newly due suppliers). Every other day is a
        backfill or a re-run of a past day: it contacts nobody.
    """
    state = json.loads(cursor) if cursor else None
    evaluated = set(state["evaluated"]) if state else set()
    after = state["after"] if state else 0
    newest: dict[date, int] = {}
    for storage_id, day in events:
        after = max(after, storage_id)
        if day is not None:
            newest[day] = max(newest.get(day, 0), storage_id)
    chosen, notes = [], []
    for day, storage_id in sorted(newest.items()):
        text = day.isoformat()
        if latest is None or day > latest:
            notes.append(f"{text}: not in marts.customer_health")
        elif day == latest or (state is not None and text not in evaluated
                               and day >= latest - timedelta(days=max_gap_days)):
            chosen.append((day, storage_id))
        else:
            notes.append(f"{text}: backfill or re-run of a past day (newest day is {latest}): contacts nobody")
    evaluated |= {d.isoformat() for d, _ in chosen}
    new_cursor = json.dumps({"after": after, "evaluated": sorted(evaluated)[-EVALUATED_MEMORY:]})
    return chosen, notes, new_cursor


def forget_days(cursor: str, days: list[date]) -> str:
    """``cursor`` (see ``plan_sensor_tick``) with ``days`` no longer marked evaluated: a day whose quality
    gate failed was not evaluated, so when it is materialised again and passes it is still new (within
    ``max_gap_days`` of the newest day; older, it is a backfill as before)."""
    state = json.loads(cursor)
    gone = {d.isoformat() for d in days}
    return json.dumps({**state, "evaluated": [d for d in state["evaluated"] if d not in gone]})


@dg.sensor(job=intervention_job, name="risk_escalation_sensor", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reads every new customer_health materialisation (cursor over the event log, not only the "
                       "latest); for each new scored day (and the newest day materialised again) whose quality gate "
                       "passed and where some supplier is due (or, on the newest day, an undelivered message "
                       "waits for its retry), launches intervention_job (run key "
                       "interventions:<day>:<event storage id>). A day whose gate failed is evaluated when it is "
                       "materialised again and passes. Backfills contact nobody.")
def risk_escalation_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    state = json.loads(context.cursor) if context.cursor else None
    events, page = [], None
    records_filter = dg.AssetRecordsFilter(asset_key=CUSTOMER_HEALTH, after_storage_id=state["after"] if state else None)
    while True:
        result = context.instance.fetch_materializations(records_filter, limit=1000, cursor=page, ascending=True)
        events += [(r.storage_id, _day(r.partition_key)) for r in result.records]
        if not result.has_more:
            break
        page = result.cursor
    if not events:
        return dg.SkipReason("no new customer_health materialisation")
    playbook = load_playbook()
    requests, notes = [], []
    with warehouse.connect() as conn:
        latest = latest_health_day(conn)
        chosen, notes, cursor = plan_sensor_tick(events, context.cursor, latest, playbook.transition_max_gap_days)
        gated = []
        for day, storage_id in chosen:
            if gate_failed(conn, "marts/customer_health", day):
                notes.append(f"{day}: failed its quality gate, no interventions (evaluated when it passes)")
                gated.append(day)
                continue
            due = due_suppliers(conn, playbook, day)
            notes += [f"{day}: rule {name} not evaluated: {why}"
                      for name, why in service.disabled_rules(conn, playbook, day).items()]
            retries = service.retryable(conn) if day == latest else 0
            if not due and not retries:
                notes.append(f"{day}: no supplier due")
                continue
            requests.append(dg.RunRequest(
                run_key=f"interventions:{day.isoformat()}:{storage_id}",
                run_config={"ops": {"deliver_interventions": {"config": {"as_of_date": day.isoformat()}}}},
                tags={"cs_pipeline/as_of_date": day.isoformat(),
                      "cs_pipeline/due": str(sum(len(ids) for ids in due.values())),
                      "cs_pipeline/retries": str(retries)},
            ))
    context.update_cursor(forget_days(cursor, gated))
    for note in notes:
        context.log.info(note)
    if not requests:
        return dg.SkipReason("; ".join(notes) or "nothing to evaluate")
    return requests


class ManualInterventionConfig(dg.Config):
    """One intervention by hand. Keys are a public contract (the launchpad, ``cs-pipeline intervene`` and the
    dashboard use them): supplier_id, channel (email | in_app | call), template (empty: manual_message, or
    check_in_call for calls), message (free text for the template), force (override cooldowns and caps;
    recorded)."""

    supplier_id: str
    channel: str
    template: str = ""
    message: str = ""
    force: bool = False


#: The op of ``manual_intervention`` (run config: ``{"ops": {MANUAL_OP: {"config": {...}}}}``).
MANUAL_OP = "send_manual_intervention"


def manual_run_config(supplier_id: str, channel: str, template: str = "", message: str = "",
                      force: bool = False) -> dict:
    """The run config of the ``manual_intervention`` job (for the launchpad, the CLI and the dashboard)."""
    return {"ops": {MANUAL_OP: {"config": {"supplier_id": supplier_id, "channel": channel, "template": template,
                                           "message": message, "force": force}}}}


@dg.op(name=MANUAL_OP, description="Plan, filter (opt-out, cancellation; cooldown and caps unless force) and "
                                   "deliver one manual intervention, recorded in ops.interventions (rule manual).")
def send_manual_intervention(context: dg.OpExecutionContext, config: ManualInterventionConfig,
                             warehouse: WarehouseResource, email: EmailResource) -> dg.Output:
    if config.channel not in CHANNELS:
        raise dg.Failure(f"channel must be one of {', '.join(CHANNELS)}, not {config.channel!r}")
    playbook = load_playbook()
    requested_by = context.run.tags.get("cs_pipeline/requested_by") or context.run.tags.get("dagster/user")         or "dagster"
    with warehouse.connect() as conn:
        try:
            result = service.manual_intervention(conn, playbook, email, config.supplier_id, config.channel,
                                                 config.template or None, config.message or None, config.force,
                                                 run_id=context.run_id, requested_by=requested_by)
        except service.ManualInterventionError as exc:
            raise dg.Failure(str(exc)) from None
    metadata = {"intervention_id": result.intervention_id, "status": result.status,
                "reason": result.reason or "", "forced": result.forced, "email_mode": email.mode,
                "delivery": result.delivery, "note": result.note}
    context.log_event(dg.AssetMaterialization(asset_key=INTERVENTIONS, partition=None, metadata={
        "rule": "manual", "channel": config.channel, "status": result.status, "forced": result.forced,
        "intervention_id": result.intervention_id, "delivery": result.delivery, "note": result.note}))
    context.log.info(f"manual intervention {result.intervention_id}: {result.note}")
    if result.status not in ("sent",):
        hint = " (launch again with force to override)" if result.reason in service.FORCEABLE else ""
        raise dg.Failure(f"not delivered: {result.status} ({result.reason or 'see last_error'}){hint}",
                         metadata=metadata)
    return dg.Output(result.intervention_id, metadata=metadata)


@dg.job(name="manual_intervention", tags={"cs_pipeline/stage": "interventions"},
        description="One intervention launched by a CS manager (launchpad, cs-pipeline intervene, the dashboard): "
                    "config supplier_id, channel (email | in_app | call), template, message, force.")
def manual_intervention_job():
    send_manual_intervention()


@dg.asset(key=["marts", "intervention_outcomes"], group_name="interventions", deps=[INTERVENTIONS, CUSTOMER_HEALTH],
          kinds={"python", "postgres"},
          description="marts.intervention_outcomes: every message of a randomised case (supplier-facing e-mails and "
                      "in-app messages of the playbook, by assigned arm: treated whatever became of the message, or "
                      "control) with the health score outcome_days later, churn within the horizon and "
                      "contamination; uplift per rule and channel by intention to treat: difference in mean score "
                      "change with a 95 % Welch interval, CUPED-adjusted, churn difference, contamination, "
                      "'too few cases' below the sample size that detects 5 points at 80 % power.")
def intervention_outcomes(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    playbook = load_playbook()
    with warehouse.connect() as conn:
        ensure_intervention_tables(conn)
        if not relation_exists(conn, "marts.customer_health"):
            return dg.MaterializeResult(metadata={"status": dg.MetadataValue.text("no health scores yet")})
        frame = read_outcome_rows(conn, playbook.outcome_days)
        cases = write_outcomes(conn, frame)
        counts = read_frame(conn, "SELECT rule, channel, status, coalesce(reason, '') AS reason, count(*) AS n "
                                  "FROM ops.interventions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    table = uplift_table(frame)
    records = json.loads(table.to_json(orient="records"))  # plain JSON types; NaN -> null
    summary = {f"{r['rule']}/{r['channel']}": {k: v for k, v in r.items() if k not in ("rule", "channel")}
               for r in records}
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "cases": dg.MetadataValue.int(cases),
        "uplift_by_rule": dg.MetadataValue.json(summary),
        "uplift_table": dg.MetadataValue.md(_uplift_markdown(records)),
        "interventions_by_rule_channel_status": dg.MetadataValue.md(
            "\n".join(f"- {r.rule} / {r.channel} / {r.status} {r.reason}: {r.n}" for r in counts.itertuples())),
    })


def _uplift_markdown(records: list[dict]) -> str:
    lines = ["| rule | channel | treated | control | difference (points) | 95 % CI | CUPED | contamination | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ci = "n/a" if r["ci_low"] is None else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
        lines.append(f"| {r['rule']} | {r['channel']} | {r['treated']} | {r['control']} | {r['difference']} | {ci} | "
                     f"{r['cuped_difference']} | {r['contamination']} | {r['verdict']} |")
    return "\n".join(lines)


@dg.asset_check(asset=INTERVENTIONS, name="delivered_within_retry_window",
                description="Warns when a message is still undelivered retry_window_hours after it was planned, "
                            "or was given up (expired) in the last cooldown_days days.")
def delivered_within_retry_window(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    playbook = load_playbook()
    with warehouse.connect() as conn:
        ensure_intervention_tables(conn)
        counts = service.undelivered_past_window(conn, playbook)
    return dg.AssetCheckResult(passed=not any(counts.values()), severity=dg.AssetCheckSeverity.WARN,
                               metadata={**counts, "retry_window_hours": playbook.retry_window_hours})


def email_from_env(settings: Settings) -> EmailResource:
    """The ``email`` resource from ``settings.smtp`` (``CS_PIPELINE_SMTP_*``; host unset: the outbox under
    CS_PIPELINE_HOME). STARTTLS verifies the server's certificate unless ``CS_PIPELINE_SMTP_TLS_VERIFY=false``
    says otherwise. The password stays a ``dg.EnvVar``, so the Dagster UI never shows it."""
    smtp = settings.smtp
    if smtp.host is None:
        return EmailResource(outbox_dir=str(settings.outbox_dir))
    return EmailResource(
        host=smtp.host,
        port=smtp.port,
        user=smtp.user,
        password=dg.EnvVar(ENV_SMTP_PASSWORD) if smtp.password is not None else None,
        use_tls=smtp.use_tls,
        tls_verify=smtp.tls_verify,
        outbox_dir=str(settings.outbox_dir),
    )


def build_defs(settings: Settings) -> dg.Definitions:
    """The intervention stage: the sensor, the job, the outcomes asset, ``ops/interventions`` in the
    lineage, and the ``email`` resource (``CS_PIPELINE_SMTP_*``; the outbox when no host is set)."""
    return dg.Definitions(
        assets=[interventions_spec, intervention_outcomes],
        asset_checks=[delivered_within_retry_window],
        jobs=[intervention_job, manual_intervention_job],
        sensors=[risk_escalation_sensor],
        resources={"email": email_from_env(settings)},
    )
