"""The one Dagster entry point: ``dagster dev -m cs_pipeline.definitions`` or workspace.yaml."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from cs_pipeline.health.assets import ScoringResource, build_health_assets
from cs_pipeline.ingest.assets import LandingZoneResource, build_ingest_assets
from cs_pipeline.interventions.dagster_defs import (
    email_from_env,
    intervention_job,
    intervention_outcomes,
    risk_escalation_sensor,
)
from cs_pipeline.transform.assets import build_dbt_assets, dbt_resource
from cs_pipeline.partitions import daily_partitions
from cs_pipeline.resources import warehouse_from_settings
from cs_pipeline.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, schedules, sensors and resources for ``settings``."""
    partitions_def = daily_partitions(settings.partition_start)
    assets = [*build_ingest_assets(partitions_def), *build_dbt_assets(partitions_def),
              *build_health_assets(partitions_def), intervention_outcomes]
    daily_job = dg.define_asset_job(
        "daily_customer_success",
        selection=dg.AssetSelection.groups("ingest", "seeds", "staging", "intermediate", "marts", "health")
        - dg.AssetSelection.assets(["marts", "health_score_backtest"]),
        description="Every daily stage for one day (or a range, as one run): ingest -> dbt marts -> "
                    "customer_health -> success_milestones.",
    )
    backtest_job = dg.define_asset_job(
        "health_score_backtest_job",
        selection=dg.AssetSelection.assets(["marts", "health_score_backtest"]),
        description="Backtest every scorecard on the warehouse's history (weekly).",
    )
    @dg.schedule(cron_schedule="0 2 * * *", job=daily_job, execution_timezone="UTC",
                 name="daily_customer_success_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every day at 02:00 UTC, run daily_customer_success for the day before.")
    def daily_customer_success_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return dg.Definitions(
        assets=assets,
        jobs=[daily_job, backtest_job, intervention_job],
        sensors=[risk_escalation_sensor],
        schedules=[
            daily_customer_success_schedule,
            dg.ScheduleDefinition(job=backtest_job, cron_schedule="0 4 * * 1", execution_timezone="UTC",
                                  name="health_score_backtest_weekly"),
        ],
        resources={
            "warehouse": warehouse_from_settings(settings),
            "landing": LandingZoneResource(directory=str(settings.landing_dir)),
            "dbt": dbt_resource(),
            "scoring": ScoringResource(scorecard=settings.scorecard),
            "email": email_from_env(settings),
        },
    )


defs = build_definitions(Settings.from_env())
