"""One manual intervention launched from the command line (``cs-pipeline intervene``): run the
``manual_intervention`` job in-process on the persistent instance and read back the row it acted on."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from cs_pipeline.core.settings import Settings


@dataclass(frozen=True)
class ManualOutcome:
    """What a launch did. ``intervention_id`` None: the job recorded no row (``failure`` says why, from
    the failed step, or is empty). ``delivery`` ``already_sent`` / ``reconciled``: an earlier launch sent
    it and this one sent nothing (``note`` says so). ``status``/``reason``/``forced``/``error``: the row of
    ``ops.interventions`` (reason and error empty strings when unset)."""

    run_id: str
    intervention_id: int | None = None
    status: str = ""
    reason: str = ""
    forced: bool = False
    error: str = ""
    delivery: str | None = None
    note: str = ""
    failure: str = ""


def launch_manual(settings: Settings, supplier: str, channel: str, template: str, message: str, force: bool,
                  requested_by: str) -> ManualOutcome:
    """Run ``manual_intervention_job`` for ``supplier`` on ``channel`` (same opt-out, cooldown,
    exactly-once and audit path as the playbook), tagged ``cs_pipeline/requested_by=requested_by``.
    ``template``/``message`` empty: the job's defaults. Never raises for a failed step: see ``failure``."""
    from cs_pipeline.core.resources import warehouse_from_settings
    from cs_pipeline.interventions.defs import (
        MANUAL_OP,
        email_from_env,
        manual_intervention_job,
        manual_run_config,
    )
    from cs_pipeline.runtime.instance import get_instance

    instance = get_instance(settings)
    warehouse = warehouse_from_settings(settings)
    result = manual_intervention_job.execute_in_process(
        run_config=manual_run_config(supplier, channel, template, message, force), instance=instance,
        resources={"warehouse": warehouse, "email": email_from_env(settings)}, raise_on_error=False,
        tags={"cs_pipeline/requested_by": requested_by})
    # The job records which row it acted on (a re-launch acts on the row an earlier run created).
    recorded = [m.metadata for m in result.asset_materializations_for_node(MANUAL_OP)]
    launched = recorded[-1]["intervention_id"].value if recorded else None
    delivery = recorded[-1]["delivery"].value if recorded and "delivery" in recorded[-1] else None
    note = recorded[-1]["note"].value if recorded and "note" in recorded[-1] else ""
    row = None
    if launched is not None:
        with warehouse.connect() as conn:
            row = conn.execute("SELECT intervention_id, status, coalesce(reason, ''), forced, coalesce(last_error, '') "
                               "FROM ops.interventions WHERE intervention_id = %s", (launched,)).fetchone()
    if row is None:
        failure = next((e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE), None)
        detail = failure.step_failure_data.user_failure_data.description if failure and \
            failure.step_failure_data.user_failure_data else ""
        return ManualOutcome(run_id=result.run_id, failure=detail or "")
    intervention_id, status, reason, forced, error = row
    return ManualOutcome(run_id=result.run_id, intervention_id=intervention_id, status=status, reason=reason,
                         forced=bool(forced), error=error, delivery=delivery, note=note)
