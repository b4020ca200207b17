"""Dagster definitions of the transform stage: dbt models as assets (dagster-dbt), seeds and staging
unpartitioned, daily models partitioned, and the ``dbt`` resource.

* ``dbt_daily_models``: models tagged ``daily`` (stg_wedsync__activity_events, intermediate,
  fct_supplier_activity_daily, supplier_engagement_daily, fct_feature_adoption) on the daily partitions;
  a run over a range of days is one ``dbt build`` with ``--vars {"min_date", "max_date"}`` (single-run
  backfill policy) over ``rebuild_window``: from the first changed day to the newest day built, so a
  re-run of an old day also rebuilds every later day it affects. Those later partitions are reported
  as materialised by the same run (``AssetMaterialization`` events with ``rebuilt_after``), so Dagster
  shows them, and customer_health rescores them (``rebuilt_days``), in that run.
* ``dbt_reference_models``: the feature catalogue seed, staging views and dim_suppliers, unpartitioned.

dbt tests become Dagster asset checks. The translator groups models by layer and sets kinds.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from cs_pipeline.core.access import ensure_bi_role
from cs_pipeline.core.paths import DBT_PROJECT_DIR
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.settings import Settings
from cs_pipeline.transform.dbt import (
    FULL_REFRESH_TAG,
    apply_catalogue_env,
    apply_dbt_env,
    build_state,
    dbt_executable,
    dbt_vars_arg,
    prepare_manifest,
    put_dbt_on_path,
    rebuild_window,
)
from cs_pipeline.transform.reruns import report_rebuilt_partitions

DAILY_SELECT = "tag:daily"

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
    """The two dbt multi-assets for ``partitions_def``."""
    project = dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=DAILY_SELECT,
        name="dbt_daily_models",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        dagster_dbt_translator=_translator(),
    )
    def dbt_daily_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                         warehouse: WarehouseResource) -> Iterator[Any]:
        """Daily dbt models for the run's partition window (one ``dbt build`` for a range)."""
        window = context.partition_time_window
        first, last = window.start.date(), (window.end - timedelta(days=1)).date()
        full_refresh = context.run.tags.get(FULL_REFRESH_TAG) == "true"
        with warehouse.connect() as conn:
            newest, changed = build_state(conn)
        start, end = rebuild_window(first, last, newest, None if full_refresh else changed)
        apply_dbt_env(warehouse.conninfo)
        apply_catalogue_env(warehouse.settings())
        context.log.info(f"dbt build{' --full-refresh' if full_refresh else ''} of the daily models for "
                         f"{start}..{end} (run for {first}..{last})")
        args = ["build", *dbt_vars_arg(start, end), *(["--full-refresh"] if full_refresh else []),
                # dbt unit tests with a `this` input need the table: not on the first build.
                *(["--exclude", "tag:needs_this"] if newest is None else [])]
        yield from dbt.cli(args, context=context).stream()
        with warehouse.connect(autocommit=True) as conn:
            ensure_bi_role(conn, warehouse.settings().bi_role)
        report_rebuilt_partitions(context, context.selected_asset_keys, start, end, partitions_def)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        exclude=DAILY_SELECT,
        name="dbt_reference_models",
        dagster_dbt_translator=_translator(),
    )
    def dbt_reference_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                             warehouse: WarehouseResource) -> Iterator[Any]:
        """Seeds, staging views and dim_suppliers (rebuilt whole; cheap)."""
        apply_dbt_env(warehouse.conninfo)
        seed_dir = apply_catalogue_env(warehouse.settings())
        context.log.info(f"feature catalogue seed from {DBT_PROJECT_DIR / seed_dir / 'feature_catalogue.csv'}")
        yield from dbt.cli(["build"], context=context).stream()
        with warehouse.connect(autocommit=True) as conn:
            ensure_bi_role(conn, warehouse.settings().bi_role)

    return [dbt_reference_models, dbt_daily_models]



def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource for ``dbt_project/`` (profile from the CS_PIPELINE_DBT_* environment)."""
    return DbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR),
                          dbt_executable=dbt_executable())


def build_defs(settings: Settings, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The transform stage: the two dbt multi-assets (their dbt tests become asset checks) and the
    ``dbt`` resource. ``settings`` is unused today; every stage's ``build_defs`` takes it."""
    del settings
    return dg.Definitions(assets=build_dbt_assets(partitions_def), resources={"dbt": dbt_resource()})
