"""Dagster definitions of the intervention stage: ``risk_escalation_sensor``, ``intervention_job``, the
``intervention_outcomes`` asset, the ``email`` resource, and ``ops/interventions``, the asset the job
writes (so its reads of raw.suppliers and its writes to success_milestones show in the asset graph).

(No ``from __future__ import annotations`` here: Dagster inspects the context annotations.)
"""

import os
from datetime import date

import dagster as dg
import numpy as np
import pandas as pd

from cs_pipeline.core.db import copy_frame, read_frame, relation_exists
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.interventions.delivery import EmailResource, ensure_intervention_tables
from cs_pipeline.interventions.playbook import load_playbook
from cs_pipeline.interventions.service import due_suppliers, latest_health_day, run_interventions
from cs_pipeline.quality.gx import gate_failed
from cs_pipeline.settings import Settings

CUSTOMER_HEALTH = dg.AssetKey(["marts", "customer_health"])
INTERVENTIONS = dg.AssetKey(["ops", "interventions"])
BATCH_SIZE = 200

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


class InterventionConfig(dg.Config):
    """One batch: a rule, an as-of day and the suppliers (empty: every supplier newly matching)."""

    rule: str
    as_of_date: str
    supplier_ids: list[str] = []
    batch: int = 0


@dg.op(description="Plan, filter (opt-outs, control group, cooldowns, caps) and deliver one batch.")
def deliver_interventions(context: dg.OpExecutionContext, config: InterventionConfig, warehouse: WarehouseResource,
                          email: EmailResource) -> dg.Output:
    playbook = load_playbook()
    day = date.fromisoformat(config.as_of_date)
    with warehouse.connect() as conn:
        report = run_interventions(conn, playbook, email, config.rule, day, config.supplier_ids or None,
                                   run_id=context.run_id)
    context.log.info(f"{config.rule} {day} batch {config.batch}: {report}")
    context.log_event(dg.AssetMaterialization(asset_key=INTERVENTIONS, partition=None, metadata={
        "rule": config.rule, "as_of_date": config.as_of_date, "sent": report.sent, "failed": report.failed}))
    if report.failed:
        context.log.warning(f"{report.failed} delivery failure(s): re-run the job to retry only those")
    return dg.Output(
        report.sent,
        metadata={"sent": report.sent, "failed": report.failed, "suppressed": report.suppressed,
                  "already_done": report.skipped_already_done, "email_mode": email.mode},
    )


@dg.job(description="Deliver one playbook rule's interventions for a day (launched by risk_escalation_sensor).",
        tags={"cs_pipeline/stage": "interventions"})
def intervention_job():
    deliver_interventions()


def _partition_day(event: dg.EventLogEntry) -> date | None:
    partition = event.dagster_event.partition if event.dagster_event else None
    return date.fromisoformat(partition) if partition else None


@dg.asset_sensor(asset_key=CUSTOMER_HEALTH, job=intervention_job, name="risk_escalation_sensor",
                 minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
                 description="On each customer_health materialisation of the newest day, launch intervention_job "
                             "for the suppliers that newly match a playbook rule (run key per rule, day, batch).")
def risk_escalation_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry,
                           warehouse: WarehouseResource):
    day = _partition_day(asset_event)
    playbook = load_playbook()
    with warehouse.connect() as conn:
        latest = latest_health_day(conn)
        if day is None or latest is None:
            return dg.SkipReason("customer_health has no scored day yet")
        if day != latest:
            return dg.SkipReason(f"customer_health for {day} is a backfill (newest day is {latest}); past days do "
                                 f"not contact suppliers unless intervention_job is launched for them")
        if gate_failed(conn, "marts/customer_health", day):
            return dg.SkipReason(f"customer_health for {day} failed its quality gate: no interventions for that day")
        ensure_intervention_tables(conn)
        due = due_suppliers(conn, playbook, day)
    if not due:
        return dg.SkipReason(f"no supplier newly matches a playbook rule on {day}")
    requests = []
    for rule, ids in due.items():
        for batch, start in enumerate(range(0, len(ids), BATCH_SIZE)):
            chunk = ids[start:start + BATCH_SIZE]
            requests.append(dg.RunRequest(
                run_key=f"{rule}:{day.isoformat()}:{batch}",
                run_config={"ops": {"deliver_interventions": {"config": {
                    "rule": rule, "as_of_date": day.isoformat(), "supplier_ids": chunk, "batch": batch}}}},
                tags={"cs_pipeline/rule": rule, "cs_pipeline/as_of_date": day.isoformat(),
                      "cs_pipeline/suppliers": str(len(chunk))},
            ))
    return requests


OUTCOMES_SQL = """
WITH base AS (
  SELECT i.intervention_id, i.supplier_id, i.rule, i.channel, i.as_of_date, i.status, i.reason,
         (i.status = 'suppressed' AND i.reason = 'control') AS is_control,
         i.health_score::float8 AS health_at_trigger, i.risk_level AS risk_at_trigger
  FROM ops.interventions i
  WHERE i.status = 'sent' OR (i.status = 'suppressed' AND i.reason = 'control')
)
SELECT b.*,
  h7.health_score::float8 AS health_7d, h7.risk_level AS risk_7d,
  h14.health_score::float8 AS health_14d, h14.risk_level AS risk_14d,
  h30.health_score::float8 AS health_30d, h30.risk_level AS risk_30d
FROM base b
LEFT JOIN marts.customer_health h7 ON h7.supplier_id = b.supplier_id AND h7.as_of_date = b.as_of_date + 7
LEFT JOIN marts.customer_health h14 ON h14.supplier_id = b.supplier_id AND h14.as_of_date = b.as_of_date + 14
LEFT JOIN marts.customer_health h30 ON h30.supplier_id = b.supplier_id AND h30.as_of_date = b.as_of_date + 30
"""


def outcomes(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Add ``recovered`` (healthy 30 days later, or 10+ points up; None until 30 days have passed) and
    summarise uplift per rule: recovery rate of treated minus control suppliers."""
    out = frame.copy()
    observed = out["health_30d"].notna()
    recovered = (out["risk_30d"] == "healthy") | ((out["health_30d"] - out["health_at_trigger"]) >= 10)
    out["recovered"] = np.where(observed, recovered, None)
    summary = {}
    for rule, group in out.loc[observed].groupby("rule"):
        per_supplier = group.groupby(["supplier_id", "is_control"])["recovered"].max().reset_index()
        treated = per_supplier.loc[~per_supplier["is_control"], "recovered"].astype(float)
        control = per_supplier.loc[per_supplier["is_control"], "recovered"].astype(float)
        summary[rule] = {
            "treated": int(len(treated)), "control": int(len(control)),
            "treated_recovery": None if treated.empty else round(float(treated.mean()), 4),
            "control_recovery": None if control.empty else round(float(control.mean()), 4),
            "uplift": None if treated.empty or control.empty else round(float(treated.mean() - control.mean()), 4),
        }
    return out, summary


@dg.asset(key=["marts", "intervention_outcomes"], group_name="interventions", deps=[INTERVENTIONS, CUSTOMER_HEALTH],
          kinds={"python", "postgres"},
          description="marts.intervention_outcomes: every sent intervention and control case with health and risk "
                      "7, 14 and 30 days later, a recovered flag, and uplift per rule (treated vs control).")
def intervention_outcomes(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as conn:
        ensure_intervention_tables(conn)
        if not relation_exists(conn, "marts.customer_health"):
            return dg.MaterializeResult(metadata={"status": dg.MetadataValue.text("no health scores yet")})
        frame, summary = outcomes(read_frame(conn, OUTCOMES_SQL))
        with conn.transaction():
            conn.execute("DROP TABLE IF EXISTS marts.intervention_outcomes_next")
            conn.execute("""
                CREATE TABLE marts.intervention_outcomes_next (
                  intervention_id bigint PRIMARY KEY, supplier_id text NOT NULL, rule text NOT NULL,
                  channel text NOT NULL, as_of_date date NOT NULL, status text NOT NULL, reason text,
                  is_control boolean NOT NULL, health_at_trigger numeric(5, 2), risk_at_trigger text,
                  health_7d numeric(5, 2), risk_7d text, health_14d numeric(5, 2), risk_14d text,
                  health_30d numeric(5, 2), risk_30d text, recovered boolean)""")
            columns = ["intervention_id", "supplier_id", "rule", "channel", "as_of_date", "status", "reason",
                       "is_control", "health_at_trigger", "risk_at_trigger", "health_7d", "risk_7d", "health_14d",
                       "risk_14d", "health_30d", "risk_30d", "recovered"]
            copy_frame(conn, ("marts", "intervention_outcomes_next"), frame, columns)
            conn.execute("DROP TABLE IF EXISTS marts.intervention_outcomes")
            conn.execute("ALTER TABLE marts.intervention_outcomes_next RENAME TO intervention_outcomes")
        counts = read_frame(conn, "SELECT rule, channel, status, coalesce(reason, '') AS reason, count(*) AS n "
                                  "FROM ops.interventions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "uplift_by_rule": dg.MetadataValue.json(summary),
        "interventions_by_rule_channel_status": dg.MetadataValue.md(
            "\n".join(f"- {r.rule} / {r.channel} / {r.status} {r.reason}: {r.n}" for r in counts.itertuples())),
    })


def email_from_env(settings: Settings) -> EmailResource:
    """SMTP settings from CS_PIPELINE_SMTP_* (host unset: the outbox under CS_PIPELINE_HOME)."""
    env = os.environ
    host = env.get("CS_PIPELINE_SMTP_HOST") or None
    if host is None:
        return EmailResource(outbox_dir=str(settings.outbox_dir))
    return EmailResource(
        host=host,
        port=int(env.get("CS_PIPELINE_SMTP_PORT", "587")),
        user=env.get("CS_PIPELINE_SMTP_USER") or None,
        password=dg.EnvVar("CS_PIPELINE_SMTP_PASSWORD") if env.get("CS_PIPELINE_SMTP_PASSWORD") else None,
        use_tls=env.get("CS_PIPELINE_SMTP_TLS", "true").lower() not in ("0", "false", "no"),
        outbox_dir=str(settings.outbox_dir),
    )


def build_defs(settings: Settings) -> dg.Definitions:
    """The intervention stage: the sensor, the job, the outcomes asset, ``ops/interventions`` in the
    lineage, and the ``email`` resource (``CS_PIPELINE_SMTP_*``; the outbox when no host is set)."""
    return dg.Definitions(
        assets=[interventions_spec, intervention_outcomes],
        jobs=[intervention_job],
        sensors=[risk_escalation_sensor],
        resources={"email": email_from_env(settings)},
    )
