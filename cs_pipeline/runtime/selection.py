"""Asset selections for ``cs-pipeline materialize``: keys like ``raw/suppliers`` (comma-separated, with
``+`` and ``*`` for neighbours, as ``dagster asset materialize --select``) or Dagster's selection syntax
(``group:health``), and the ad-hoc job that materialises them."""

from __future__ import annotations

import dagster as dg

#: Name of the ad-hoc asset job added for one ``materialize`` command.
SELECTION_JOB = "cs_pipeline_materialize"


def resolve_selection(select: str, defs: dg.Definitions) -> list[dg.AssetKey]:
    """The asset keys ``select`` names, sorted.

    Raises:
        Exception: Dagster's error for an unknown key or bad syntax (its first line says which).
    """
    graph = defs.resolve_asset_graph()
    items = [item.strip() for item in select.split(",") if item.strip()]
    if any(":" in item for item in items):
        return sorted(dg.AssetSelection.from_string(select).resolve(graph))
    from dagster._core.selector.subset_selector import parse_asset_selection

    return sorted(parse_asset_selection(list(graph.assets_defs), items))


def partitioned_kinds(defs: dg.Definitions, keys: list[dg.AssetKey]) -> set[bool]:
    """Which kinds the selection holds: True for daily-partitioned assets, False for unpartitioned ones."""
    graph = defs.resolve_asset_graph()
    return {graph.get(k).partitions_def is not None for k in keys}


def with_selection_job(defs: dg.Definitions, keys: list[dg.AssetKey]) -> dg.Definitions:
    """``defs`` plus the asset job ``SELECTION_JOB`` over ``keys`` (and their checks)."""
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(SELECTION_JOB, selection=keys)]))
