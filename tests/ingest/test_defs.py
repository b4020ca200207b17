"""The ingest assets materialised through Dagster with real resources."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate


@pytest.fixture(scope="module")
def landed(settings):
    generate(GeneratorConfig(suppliers=80, days=6, start=date(2025, 3, 1), seed=11, out=settings.landing_dir))
    return settings


def test_materialise_one_partition_reports_metadata(landed, clean_raw, conn):
    defs = build_definitions(landed)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key="2025-03-02", asset_selection=[dg.AssetKey(["raw", "activity_events"])],
                                    instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [mat] = result.asset_materializations_for_node("raw__activity_events")
    meta = mat.metadata
    rows = conn.execute("SELECT count(*), count(DISTINCT supplier_id) FROM raw.activity_events "
                        "WHERE _partition_date = '2025-03-02'").fetchone()
    assert meta["rows_loaded"].value == rows[0] > 0
    assert meta["distinct_suppliers"].value == rows[1]
    assert meta["rows_rejected"].value == 0 and meta["conservation_holds"].value is True
    assert meta["files"].value == "activity_events_2025-03-02.csv"
    assert meta["min_time"].value.startswith("2025-03-02") and "preview" in meta


def test_a_range_materialises_in_one_run(landed, clean_raw, conn):
    defs = build_definitions(landed)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    raw = [dg.AssetKey(["raw", name]) for name in ("suppliers", "activity_events", "support_tickets", "billing_events")]
    result = job.execute_in_process(instance=instance, asset_selection=raw, tags={
        "dagster/asset_partition_range_start": "2025-03-01", "dagster/asset_partition_range_end": "2025-03-06"})
    assert result.success
    days = conn.execute("SELECT source, count(*) FROM ops.load_audit GROUP BY 1 ORDER BY 1").fetchall()
    assert days == [("activity_events", 6), ("billing_events", 6), ("suppliers", 6), ("support_tickets", 6)]
    assert len(instance.get_runs()) == 1


def test_a_missing_file_fails_the_run_and_names_it(landed, clean_raw, conn):
    defs = build_definitions(landed)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key="2025-03-20", asset_selection=[dg.AssetKey(["raw", "suppliers"])],
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "suppliers_2025-03-20.csv" in failure.metadata["problems"].value
    assert conn.execute("SELECT count(*) FROM ops.load_audit").fetchone()[0] == 0
