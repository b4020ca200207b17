"""A feature is core or not as a whole (issue 29 item 9): a catalogue whose feature mixes core and non-core
events passed validation at import, then the first run failed dbt's uniqueness test (13,098 rows) with no
pointer to the catalogue. It is now refused where the catalogue is loaded, by ``cs-pipeline import`` and
``cs-pipeline run`` alike, with one line naming the file, the feature and the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cs_pipeline.core.catalogue import CatalogueError, load_catalogue
from cs_pipeline.core.paths import FEATURE_CATALOGUE_CSV, PROJECT_ROOT
from cs_pipeline.core.settings import ENV_FEATURE_CATALOGUE, ENV_HOME

OWN = PROJECT_ROOT / "tests" / "data" / "own_product"
HEADER = "event_name,feature,is_core,adoption_min_active_days,adoption_window_days\n"
#: The own-product catalogue with a second, non-core event in its core feature ``reports``.
MIXED = HEADER + ("login,session,false,2,30\nreport_built,reports,true,2,30\nreport_viewed,reports,false,2,30\n"
                  "dashboard_shared,sharing,false,2,30\n")


def _cli(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CS_PIPELINE_") and k != "DAGSTER_HOME"}
    env.update({ENV_HOME: str(home), "PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "100", **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "cs_pipeline.cli", *args], env=env, cwd=home.parent,
                          capture_output=True, text=True, timeout=180, check=False)


def _one_line(done: subprocess.CompletedProcess) -> str:
    """The single non-empty line of a refused command's output (rich may wrap a long line: joined)."""
    text = " ".join(line.strip() for line in done.stdout.splitlines() if line.strip())
    assert done.returncode == 2 and text, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return text


def test_shipped_catalogues_still_load():
    for path in (FEATURE_CATALOGUE_CSV, OWN / "catalogue.csv"):
        rows = load_catalogue(path)
        assert rows and len({r.event_name for r in rows}) == len(rows)


def test_a_feature_mixing_core_and_non_core_events_is_refused_by_the_loader(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(MIXED)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "feature 'reports' mixes core and non-core events" in message
    assert "'report_built' is_core true on line 3" in message and "'report_viewed' false on line 4" in message
    assert "give every event of a feature the same is_core" in message
    # the order in the file does not matter: non-core first names the same pair
    path.write_text(HEADER + "report_viewed,reports,false,2,30\nreport_built,reports,true,2,30\n")
    with pytest.raises(CatalogueError, match=r"'report_built' is_core true on line 3, 'report_viewed' false on line 2"):
        load_catalogue(path)


def test_import_refuses_the_mixed_catalogue_before_writing_anything(tmp_path):
    data = tmp_path / "own_product"
    shutil.copytree(OWN, data)
    (data / "catalogue.csv").write_text(MIXED)
    home, landing = tmp_path / "home", tmp_path / "landing"
    done = _cli(home, "import", "--mapping", str(data / "mapping.yaml"), "--from", str(data), "--out", str(landing))
    line = _one_line(done)
    assert str(data / "catalogue.csv") in line and "feature 'reports' mixes core and non-core events" in line
    assert "same is_core" in line
    assert not (home / "catalogue").exists()  # not recorded for later runs
    assert not landing.exists() or not any(landing.iterdir())


def test_run_refuses_the_mixed_catalogue_in_force(tmp_path):
    bad = tmp_path / "mixed.csv"
    bad.write_text(MIXED)
    done = _cli(tmp_path / "home", "run", "--start", "2025-01-01", extra_env={ENV_FEATURE_CATALOGUE: str(bad)})
    line = _one_line(done)
    assert str(bad) in line and "feature 'reports' mixes core and non-core events" in line
