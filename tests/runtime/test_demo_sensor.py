"""Issue 29 item 5: after the demo's sensor ticks, the cursor is stored on the instance where the daemon reads
it, so the first tick once the UI starts launches no ``intervention_job`` run for a day the demo evaluated."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from cs_pipeline.interventions.defs import CUSTOMER_HEALTH, risk_escalation_sensor
from cs_pipeline.runtime.demo import escalate, sensor_selector, stored_sensor_cursor
from tests.interventions.test_guarantees import DAY, db, load, not_in_control, synthetic  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _tick(instance, warehouse, cursor):
    data = risk_escalation_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}, cursor=cursor))
    return list(data.run_requests or [])


def test_first_daemon_tick_after_the_demo_requests_no_run(db, settings, warehouse):  # noqa: F811
    [escalated] = not_in_control("escalated_to_at_risk", 1, "demo")
    load(db, [{"sid": escalated, "day": DAY - timedelta(days=1), "risk": "healthy"},
              {"sid": escalated, "day": DAY, "risk": "at_risk", "previous": "healthy"}])
    with dg.instance_for_test() as instance:
        for day in (DAY - timedelta(days=1), DAY):  # the demo's backfill, then the newest day
            instance.report_runless_asset_event(dg.AssetMaterialization(CUSTOMER_HEALTH, partition=day.isoformat()))
        assert stored_sensor_cursor(instance, risk_escalation_sensor) is None
        ticks = escalate(settings, instance)
        assert len(ticks.run_keys) == 1 and ticks.second_requests == 0
        # The daemon's tick: the state it finds by the sensor's selector id, with the cursor the demo left.
        origin = sensor_selector(risk_escalation_sensor)
        state = instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id())
        assert state is not None and state.status == dg._core.scheduler.instigation.InstigatorStatus.DECLARED_IN_CODE
        assert origin.get_selector().location_name == "cs_pipeline"
        cursor = stored_sensor_cursor(instance, risk_escalation_sensor)
        assert cursor is not None
        assert _tick(instance, warehouse, cursor) == []
        assert len(_tick(instance, warehouse, None)) == 1  # what the daemon's first tick did without the cursor
