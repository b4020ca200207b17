"""The demo's steps after the backfill (``cs-pipeline demo``): evaluate the escalation sensor twice and run
the intervention job for each request, then the scorecard backtest and the intervention outcomes."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from cs_pipeline.core.settings import Settings


@dataclass(frozen=True)
class SensorTicks:
    """Two ticks of ``risk_escalation_sensor``: the first one's run requests (each run through
    ``intervention_job``) and skip message, and the second one's (with the first one's cursor: nothing
    new is expected)."""

    run_keys: list[str]
    skip_message: str | None
    second_requests: int
    second_skip_message: str | None


def escalate(settings: Settings, instance: dg.DagsterInstance) -> SensorTicks:
    """Tick ``risk_escalation_sensor`` on ``instance``, run ``intervention_job`` for each of its run
    requests (with its run config and tags), then tick again with the cursor."""
    from cs_pipeline.core.resources import warehouse_from_settings
    from cs_pipeline.interventions.defs import (
        email_from_env,
        intervention_job,
        risk_escalation_sensor,
    )

    resources = {"warehouse": warehouse_from_settings(settings), "email": email_from_env(settings)}
    tick = risk_escalation_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources={"warehouse": resources["warehouse"]}))
    requests = list(tick.run_requests or [])
    for request in requests:
        intervention_job.execute_in_process(run_config=request.run_config, instance=instance, resources=resources,
                                            tags=request.tags)
    second = risk_escalation_sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, resources={"warehouse": resources["warehouse"]}, cursor=tick.cursor))
    return SensorTicks(run_keys=[r.run_key for r in requests], skip_message=tick.skip_message,
                       second_requests=len(second.run_requests or []), second_skip_message=second.skip_message)


def backtest_and_outcomes(settings: Settings, instance: dg.DagsterInstance) -> None:
    """Run ``health_score_backtest_job`` and materialise ``marts/intervention_outcomes`` on ``instance``.

    Raises:
        dagster.DagsterExecutionStepExecutionError: a step failed.
    """
    from cs_pipeline.definitions import build_definitions

    defs = build_definitions(settings)
    defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance)
    defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["marts", "intervention_outcomes"])])
