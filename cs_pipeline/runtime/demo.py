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
    record_sensor_cursor(instance, risk_escalation_sensor, second.cursor or tick.cursor)
    return SensorTicks(run_keys=[r.run_key for r in requests], skip_message=tick.skip_message,
                       second_requests=len(second.run_requests or []), second_skip_message=second.skip_message)


def sensor_selector(sensor: dg.SensorDefinition):
    """The instigator origin under which ``dagster dev`` (workspace.yaml) and ``dg dev`` (``[tool.dg.project]``,
    the same location name) keep ``sensor``'s state: location ``cs_pipeline``, the single repository of
    ``@dg.definitions``. The daemon finds the state by this origin's selector id."""
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    from cs_pipeline.core.paths import PROJECT_ROOT

    [location] = location_origins_from_yaml_paths([str(PROJECT_ROOT / "workspace.yaml")])
    return RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), sensor.name)


def record_sensor_cursor(instance: dg.DagsterInstance, sensor: dg.SensorDefinition, cursor: str | None) -> None:
    """Store ``cursor`` as ``sensor``'s cursor on ``instance`` (what ``dagster sensor cursor --set`` does, without
    loading the code location), so that the daemon's first tick after the demo starts from the demo's ticks
    and launches no run for days the demo already evaluated (issue 29). The sensor stays as declared in code
    (running by default); an existing state keeps its tick history and status."""
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
    )
    from dagster._time import get_current_timestamp

    origin = sensor_selector(sensor)
    stored = instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
    if stored is None:
        instance.add_instigator_state(InstigatorState(
            origin, InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE,
            SensorInstigatorData(min_interval=sensor.minimum_interval_seconds, cursor=cursor,
                                 last_sensor_start_timestamp=get_current_timestamp(), sensor_type=sensor.sensor_type)))
        return
    data = stored.instigator_data
    instance.update_instigator_state(stored.with_data(SensorInstigatorData(
        last_tick_timestamp=data.last_tick_timestamp, last_run_key=data.last_run_key,
        min_interval=sensor.minimum_interval_seconds, cursor=cursor,
        last_tick_start_timestamp=data.last_tick_start_timestamp,
        last_sensor_start_timestamp=data.last_sensor_start_timestamp, sensor_type=sensor.sensor_type)))


def stored_sensor_cursor(instance: dg.DagsterInstance, sensor: dg.SensorDefinition) -> str | None:
    """``sensor``'s cursor as the daemon will read it from ``instance`` (None: no state yet)."""
    origin = sensor_selector(sensor)
    stored = instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
    return stored.instigator_data.cursor if stored is not None and stored.instigator_data else None


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
