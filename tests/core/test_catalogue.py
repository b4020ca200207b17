"""A team's own feature catalogue (issue 17 item 3): which file is in force (CS_PIPELINE_FEATURE_CATALOGUE
wins over the one an import recorded, which wins over WedSync's seed), ingestion's event names follow it,
a bad file gives one error naming the file and the fix, and dbt is pointed at a staged copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cs_pipeline.core.catalogue import (
    CatalogueError,
    load_catalogue,
    record_catalogue,
    render,
    stage_for_dbt,
)
from cs_pipeline.core.paths import DBT_PROJECT_DIR, FEATURE_CATALOGUE_CSV, PROJECT_ROOT
from cs_pipeline.feeds.imports import MappingError, check_event_names, load_mapping
from cs_pipeline.ingest.sources import catalogue_event_names, sources
from cs_pipeline.core.settings import (
    ENV_FEATURE_CATALOGUE,
    ENV_HOME,
    Settings,
    resolve_feature_catalogue,
)
from cs_pipeline.transform.dbt import SEED_DIR_ENV, apply_catalogue_env

OWN = PROJECT_ROOT / "tests" / "data" / "own_product"
HEADER = "event_name,feature,is_core,adoption_min_active_days,adoption_window_days\n"


@pytest.fixture()
def env(monkeypatch, tmp_path):
    """A clean environment with its own CS_PIPELINE_HOME and no catalogue variable."""
    monkeypatch.delenv(ENV_FEATURE_CATALOGUE, raising=False)
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "home"))
    return tmp_path


def test_catalogue_in_force_env_wins_over_recorded_over_shipped(env, monkeypatch):
    home = env / "home"
    assert resolve_feature_catalogue() is None and catalogue_event_names() == catalogue_event_names(FEATURE_CATALOGUE_CSV)
    assert "form_sent" in sources()["activity_events"].columns[3].allowed
    recorded = record_catalogue(OWN / "catalogue.csv", home)
    assert recorded == home / "catalogue" / "feature_catalogue.csv"
    assert Settings.from_env().feature_catalogue == recorded
    assert sources()["activity_events"].columns[3].allowed == ("login", "report_built", "dashboard_shared")
    other = env / "mine.csv"
    other.write_text(HEADER + "page_viewed,pages,true,1,7\n")
    monkeypatch.setenv(ENV_FEATURE_CATALOGUE, str(other))
    assert Settings.from_env().feature_catalogue == other
    assert catalogue_event_names() == ("page_viewed",)
    other.write_text(HEADER + "page_viewed,pages,true,1,7\nsearch_run,search,false,2,30\n")
    os.utime(other, ns=(1, 10**18))  # an edit within the same clock tick is still seen (mtime changed)
    assert catalogue_event_names() == ("page_viewed", "search_run")


@pytest.mark.parametrize(("text", "expected"), [
    ("event_name,feature,is_core\nlogin,session,false\n", "adoption_min_active_days, adoption_window_days missing"),
    (HEADER + "login,session,false,2,30\nlogin,session,false,2,30\n", "'login' already on line 2"),
    (HEADER + "login,session,sometimes,2,30\n", "line 2: is_core"),
    (HEADER + "login,session,false,2,120\n", "line 2: adoption_window_days"),
    (HEADER, "no rows"),
])
def test_a_bad_catalogue_names_the_file_and_the_fix(tmp_path, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert str(path) in message and expected in message and "\n" not in message
    assert "event_name" in message  # the fix: what a catalogue looks like, or which row to change


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "nope.csv")


def test_dbt_loads_the_seed_from_a_staged_copy(env, monkeypatch):
    home = env / "home"
    assert stage_for_dbt(None, home) == "seeds"
    mine = env / "my events.csv"
    mine.write_text(HEADER.replace(",", ", ") + "report_built, reports, TRUE, 2, 30\n")  # spaces, upper case
    staged = stage_for_dbt(mine, home)
    # Relative to the dbt project (an absolute seed path makes dbt write its SQL over the CSV).
    assert not Path(staged).is_absolute() and staged.startswith("seeds_staged/")
    target = DBT_PROJECT_DIR / staged / "feature_catalogue.csv"
    try:
        assert target.read_text() == HEADER + "report_built,reports,true,2,30\n"
        before = target.stat().st_mtime_ns
        stage_for_dbt(mine, home)  # unchanged: not rewritten (dbt's partial parse sees no change)
        assert target.stat().st_mtime_ns == before
        assert stage_for_dbt(mine, env / "other_home") != staged  # another home, another directory
        environ: dict[str, str] = {}
        monkeypatch.setenv(ENV_FEATURE_CATALOGUE, str(mine))
        assert apply_catalogue_env(Settings.from_env(), environ) == staged and environ[SEED_DIR_ENV] == staged
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)
        shutil.rmtree(DBT_PROJECT_DIR / stage_for_dbt(mine, env / "other_home"), ignore_errors=True)
    assert render(load_catalogue(FEATURE_CATALOGUE_CSV)) == FEATURE_CATALOGUE_CSV.read_text()
    assert "env_var('CS_PIPELINE_DBT_SEED_DIR', 'seeds')" in (DBT_PROJECT_DIR / "dbt_project.yml").read_text()


def test_mapping_event_names_are_checked_against_the_catalogue(tmp_path):
    own = load_mapping(OWN / "mapping.yaml")
    assert own.catalogue == "catalogue.csv"
    catalogue = catalogue_event_names(OWN / "catalogue.csv")
    check_event_names(own, catalogue, OWN / "catalogue.csv")  # names come from the data: ingestion checks them
    purchase = load_mapping(PROJECT_ROOT / "mappings" / "purchase_log.yaml")  # payment_received + login
    check_event_names(purchase, catalogue_event_names(FEATURE_CATALOGUE_CSV), FEATURE_CATALOGUE_CSV)
    with pytest.raises(MappingError) as caught:
        check_event_names(purchase, catalogue, OWN / "catalogue.csv")
    assert "'payment_received'" in str(caught.value) and str(OWN / "catalogue.csv") in str(caught.value)
    no_login = tmp_path / "c.csv"
    no_login.write_text(HEADER + "report_built,reports,true,2,30\n")
    with pytest.raises(MappingError, match="'login'"):
        check_event_names(own, catalogue_event_names(no_login), no_login)


def test_cli_with_a_bad_catalogue_variable_says_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "login,session,maybe,2,30\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CS_PIPELINE_")}
    env.update({ENV_HOME: str(tmp_path / "home"), ENV_FEATURE_CATALOGUE: str(bad), "PYTHONPATH": str(PROJECT_ROOT),
                "COLUMNS": "100"})
    done = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "run", "--start", "2025-01-01"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert str(bad) in lines[0] and "is_core" in lines[0]
