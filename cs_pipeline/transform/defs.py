"""Dagster definitions of the transform stage: the dbt project as one partitioned multi-asset
(dagster-dbt), and the ``dbt`` resource.

* ``dbt_models``: the whole dbt project on the daily partitions, one ``dbt build`` per run. Models tagged
  ``daily`` (stg_wedsync__activity_events, intermediate, fct_supplier_activity_daily,
  supplier_engagement_daily, fct_feature_adoption) process a window of days: a run over a range of days
  is one ``dbt build`` with the window in ``CS_PIPELINE_DBT_MIN_DATE/_MAX_DATE`` (single-run backfill
  policy) over ``DayWindow.rebuild``: from the first changed day to the newest day built, so a
  re-run of an old day also rebuilds every later day it affects. Those later partitions are reported
  as materialised by the same run (``AssetMaterialization`` events with ``rebuilt_after``), so Dagster
  shows them, and customer_health rescores them (``rebuilt_days``), in that run.
  The feature catalogue seed, the other staging views and dim_suppliers are rebuilt whole each run.

dbt tests become Dagster asset checks. The translator groups models by layer and sets kinds.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from functools import cached_property
from importlib.metadata import version as package_version
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging.version import Version

from cs_pipeline.core.access import ensure_bi_role
from cs_pipeline.core.child_env import exported
from cs_pipeline.core.paths import DBT_PROJECT_DIR
from cs_pipeline.core.reruns import report_rebuilt_partitions
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.core.settings import Settings
from cs_pipeline.core.window import DayWindow
from cs_pipeline.transform.dbt import (
    FULL_REFRESH_TAG,
    apply_catalogue_env,
    build_state,
    dbt_env,
    dbt_executable,
    prepare_manifest,
    prepare_parse_state,
    put_dbt_on_path,
)

DAILY_TAG = "daily"

#: PostgreSQL advisory lock key held by a dbt build of the marts (one build at a time per warehouse).
MARTS_BUILD_LOCK = 0x63735F6D61727473  # "cs_marts"

LAYER_GROUPS = {"staging": "staging", "intermediate": "intermediate", "marts": "marts"}


class CsDbtTranslator(DagsterDbtTranslator):
    """Groups dbt nodes by layer (seeds, staging, intermediate, marts) and tags them dbt + postgres."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        if props["resource_type"] == "seed":
            group = "seeds"
        else:
            folder = props.get("fqn", ["", ""])[1] if len(props.get("fqn", [])) > 2 else "marts"
            group = LAYER_GROUPS.get(folder, "marts")
        return spec.replace_attributes(group_name=group, kinds={"dbt", "postgres"})


def dbt_project() -> DbtProject:
    """The project in ``dbt_project/``, with its manifest prepared.

    Under ``dagster dev`` / ``dg dev``, ``DbtProject.prepare_if_dev()`` re-parses on every load (dagster-dbt's
    own mechanism). Everywhere else (the ``cs-pipeline`` CLI, tests, ``dagster asset materialize``, a fresh
    clone with no ``target/``), ``prepare_if_dev`` does nothing, so ``prepare_manifest`` parses when the
    manifest is missing or older than a project file: nobody has to run ``dbt parse`` by hand.
    """
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    put_dbt_on_path()
    project.prepare_if_dev()
    prepare_manifest(project)
    return project


def _translator() -> CsDbtTranslator:
    return CsDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def build_dbt_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The dbt multi-asset ``dbt_models`` (every seed, model and data test) on ``partitions_def``: one
    ``dbt build`` per run (issue 18: each dbt invocation costs seconds of start-up, so a run makes one).
    Models tagged ``daily`` process the run's day window (see ``DayWindow.rebuild``); the seed, the
    staging views and dim_suppliers are rebuilt whole (cheap), so their partitions only record when."""
    project = dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        name="dbt_models",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        dagster_dbt_translator=_translator(),
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                   warehouse: WarehouseResource) -> Iterator[Any]:
        """The dbt project for the run's partition window (one ``dbt build`` for a range of days), one
        build at a time per warehouse (``MARTS_BUILD_LOCK``)."""
        full_refresh = context.run.tags.get(FULL_REFRESH_TAG) == "true"
        partitioned = context.has_partition_key or context.has_partition_key_range
        with warehouse.connect(autocommit=True) as lock:
            # One marts build at a time, whoever starts it (CLI, schedule, UI, a backfill): each build
            # carries running totals from the day before its window and rebuilds up to the newest built
            # day, so two at once would read each other's half-built days. A session lock: released when
            # this connection closes, also if the process dies.
            if not lock.execute("SELECT pg_try_advisory_lock(%s)", (MARTS_BUILD_LOCK,)).fetchone()[0]:
                context.log.info("waiting for another run's dbt build of this warehouse to finish")
                lock.execute("SELECT pg_advisory_lock(%s)", (MARTS_BUILD_LOCK,))
            with warehouse.connect() as conn:
                newest, changed = build_state(conn)
            # a run without a partition (a seed or a check alone from the UI): the newest built day
            run = DayWindow.of_run(context) if partitioned else DayWindow.day(newest or datetime.now(timezone.utc).date())
            build = run.rebuild(newest, None if full_refresh else changed)
            # dbt unit tests check the SQL, not the data: they run in CI (tests/transform), not in every
            # run (dbt's advice; issue 18: they were half of a daily build).
            args = ["build", *(["--full-refresh"] if full_refresh else []), "--exclude-resource-type", "unit_test"]
            environment_, seed_dir = _dbt_environment(warehouse, build)
            context.log.info(f"dbt build{' --full-refresh' if full_refresh else ''} for {build} "
                             f"(run for {run}); feature catalogue seed from "
                             f"{DBT_PROJECT_DIR / seed_dir / 'feature_catalogue.csv'}")
            with environment_:
                invocation = dbt.cli(args, context=context)
            yield from invocation.stream()
            with warehouse.connect(autocommit=True) as conn:
                ensure_bi_role(conn, warehouse.bi_role)
        if partitioned:
            daily = [key for key in context.selected_asset_keys if key in daily_keys]
            report_rebuilt_partitions(context, daily, build.first, build.last, partitions_def)

    # The models tagged ``daily`` (dagster-dbt turns dbt tags into asset tags): the ones whose later
    # partitions a re-run rebuilds.
    daily_keys = {spec.key for spec in dbt_models.specs if DAILY_TAG in spec.tags}
    return [dbt_models]


def _dbt_environment(warehouse: WarehouseResource, window: DayWindow):
    """(The environment of one dbt invocation, as a context manager; the catalogue's seed directory).

    The environment: the warehouse's profile, the feature catalogue in force (``CS_PIPELINE_DBT_SEED_DIR``),
    the day window, and ``DBT_TARGET_PATH`` at the warehouse's parse state (``prepare_parse_state``), so dbt
    parses partially.

    Raises:
        cs_pipeline.core.catalogue.CatalogueError: the team's catalogue is invalid.
    """
    settings = warehouse.settings()
    env = dbt_env(warehouse.conninfo)
    seed_dir = apply_catalogue_env(settings, env)
    state = prepare_parse_state(settings.home / "dbt_target", env)
    return exported({**env, **window.dbt_env(), "DBT_TARGET_PATH": str(state)}), seed_dir


class CsDbtCliResource(DbtCliResource):
    """dagster-dbt's ``DbtCliResource`` without the dbt adapter it opens in the run process before every
    invocation.

    ``DbtCliResource.cli`` loads the profile and project and parses every macro of dbt and its adapter
    (487 of them) in the Dagster process, only so that ``fetch_row_counts`` / ``fetch_column_metadata``
    could query the warehouse afterwards. cs_pipeline calls neither, and that set-up cost 3.3 s of every
    run, a fifth of a daily run at 1,000 suppliers (issue 18). It also reads dbt's version from the
    installed package instead of running ``dbt --version`` (2.5 s). The dbt subprocess is unchanged.
    """

    def _initialize_dbt_core_adapter(self, args):
        return None

    @cached_property
    def _cli_version(self) -> Version:
        """The installed dbt-core's version, from the package metadata: dagster-dbt runs ``dbt --version``
        in a subprocess for it once per resource instance, i.e. once per run (2.5 s, issue 18).
        ``dbt_executable()`` is this environment's dbt, so the two agree."""
        return Version(package_version("dbt-core"))


def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource for ``dbt_project/`` (profile from the CS_PIPELINE_DBT_* environment)."""
    return CsDbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR),
                            dbt_executable=dbt_executable())


def build_defs(settings: Settings, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The transform stage: the dbt multi-asset (its dbt data tests become asset checks) and the
    ``dbt`` resource. ``settings`` is unused today; every stage's ``build_defs`` takes it."""
    del settings
    return dg.Definitions(assets=build_dbt_assets(partitions_def), resources={"dbt": dbt_resource()})
