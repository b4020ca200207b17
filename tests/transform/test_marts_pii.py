"""Personal data stays out of the marts (issue 12): every mart column is classified ``meta: {pii: ...}``
in the dbt YAML, and none of them is ``pii: true``. Read from dbt's own parse (the manifest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cs_pipeline.core.paths import DBT_PROJECT_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mart_models(tmp_path_factory) -> dict[str, dict]:
    target = tmp_path_factory.mktemp("dbt_target")
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run([str(dbt), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
                    "--target-path", str(target)], check=True, capture_output=True, timeout=300, cwd=target)
    manifest = json.loads((target / "manifest.json").read_text())
    marts = {node["name"]: node for node in manifest["nodes"].values()
             if node["resource_type"] == "model" and node["schema"] == "marts"}
    assert {"dim_suppliers", "supplier_engagement_daily"} <= set(marts)
    return marts


def test_every_mart_column_is_classified(mart_models):
    unclassified = [f"{name}.{column}" for name, node in mart_models.items() for column, spec in node["columns"].items()
                    if not isinstance(spec.get("meta", {}).get("pii"), bool)]
    assert unclassified == []
    assert all(node["columns"] for node in mart_models.values())


def test_no_personal_data_in_marts(mart_models):
    personal = [f"{name}.{column}" for name, node in mart_models.items() for column, spec in node["columns"].items()
                if spec["meta"]["pii"] is True]
    assert personal == []
    assert "business_name" not in mart_models["dim_suppliers"]["columns"]
    assert "business_name" not in (DBT_PROJECT_DIR / "models" / "marts" / "dim_suppliers.sql").read_text()
