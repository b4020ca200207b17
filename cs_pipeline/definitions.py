"""The one Dagster entry point (``dagster dev -m cs_pipeline.definitions``, workspace.yaml, ``dg dev``).

Each stage's ``defs.py`` returns that stage's ``Definitions``; this module merges them with the jobs and
schedules that span stages (``daily_customer_success`` and the weekly backtest) and the shared
``warehouse`` resource. ``defs`` is built lazily (``@dg.definitions``): importing the package starts
nothing, not even the embedded PostgreSQL, which starts on a resource's first use.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import dagster as dg

from cs_pipeline.core.partitions import daily_partitions
from cs_pipeline.core.resources import warehouse_from_settings
from cs_pipeline.health import defs as health
from cs_pipeline.ingest import defs as ingest
from cs_pipeline.interventions import defs as interventions
from cs_pipeline.core.settings import Settings
from cs_pipeline.transform import defs as transform

# Dagster's notices about its own beta and superseded parameters (``backfill_policy``, which has no non-beta
# form, and ``owners``, which Dagster passes itself when it binds a sensor to its job) are for the project's
# developers, not for the people running `dagster dev`, `dg` or the command line: every process that loads
# these definitions (code servers included) ignores them (issue 29).
# Only those raised from Dagster's own modules: our code's warnings, and Python's, still show.
for _category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
    warnings.filterwarnings("ignore", category=_category, module=r"dagster(\.|_|$)")

DAILY_GROUPS = ("ingest", "seeds", "staging", "intermediate", "marts", "health")


#: Tag of the runs that write the marts; ``cs_pipeline.runtime.instance`` limits them to one at a time.
MARTS_WRITER_TAG = "cs_pipeline/writes_marts"


def pipeline_defs() -> dg.Definitions:
    """The jobs and schedules that span stages: ``daily_customer_success`` (every daily stage for one day,
    or a range as one run) with its 02:00 UTC schedule, and ``health_score_backtest_job`` (weekly)."""
    daily_job = dg.define_asset_job(
        "daily_customer_success",
        selection=dg.AssetSelection.groups(*DAILY_GROUPS)
        - dg.AssetSelection.assets(["marts", "health_score_backtest"], ["models", "churn_model"]),  # weekly, issue 26
        description="Every daily stage for one day (or a range, as one run): ingest -> dbt marts -> "
                    "customer_health -> success_milestones.",
        # One process per run, not one per step: each step process would import Dagster, dbt, pandas
        # and Great Expectations again (seconds each; measured 115 s against 215 s for a daily run through
        # `dagster job execute`), which costs more than running the four raw loads two at a time saves
        # (issue 18). Isolation between runs stays: every run has its own process.
        executor_def=dg.in_process_executor,
        # The queued run coordinator runs at most one run with this tag at a time (dagster.yaml).
        tags={MARTS_WRITER_TAG: "true"},
    )
    backtest_job = dg.define_asset_job(
        "health_score_backtest_job",
        selection=dg.AssetSelection.assets(["marts", "health_score_backtest"]),
        description="Backtest every scorecard on the warehouse's history (weekly).",
        executor_def=dg.in_process_executor,
    )

    @dg.schedule(cron_schedule="0 2 * * *", job=daily_job, execution_timezone="UTC",
                 name="daily_customer_success_schedule", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every day at 02:00 UTC, run daily_customer_success for the day before.")
    def daily_customer_success_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return dg.Definitions(
        jobs=[daily_job, backtest_job],
        schedules=[
            daily_customer_success_schedule,
            dg.ScheduleDefinition(job=backtest_job, cron_schedule="0 4 * * 1", execution_timezone="UTC",
                                  name="health_score_backtest_weekly"),
        ],
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, schedules, sensors and resources for ``settings``: the stages' own
    ``Definitions`` in data-flow order, merged (``dg.Definitions.merge``)."""
    partitions_def = daily_partitions(settings.partition_start)
    return dg.Definitions.merge(
        dg.Definitions(resources={"warehouse": warehouse_from_settings(settings)}),
        ingest.build_defs(settings, partitions_def),
        transform.build_defs(settings, partitions_def),
        health.build_defs(settings, partitions_def),
        interventions.build_defs(settings),
        pipeline_defs(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions for the settings in this process's environment (read when Dagster loads them)."""
    return build_definitions(Settings.from_env())
