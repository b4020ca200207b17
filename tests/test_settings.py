from datetime import date
from pathlib import Path

import pytest

from cs_pipeline.settings import Settings, SettingsError
from cs_pipeline.core.warehouse import _as_psycopg2_url, _sqlalchemy_url


def test_defaults_relative_to_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.home == tmp_path / ".cs_pipeline"
    assert s.landing_dir == tmp_path / ".cs_pipeline" / "landing"
    assert s.pgdata_dir == tmp_path / ".cs_pipeline" / "pgdata"
    assert s.embedded and s.database_url is None
    assert s.partition_start == date(2024, 1, 1)


def test_environment_overrides():
    s = Settings.from_env({
        "CS_PIPELINE_HOME": "/srv/cs", "CS_PIPELINE_DATABASE_URL": "postgresql://u:p@db/cs",
        "CS_PIPELINE_PARTITION_START": "2025-03-01", "CS_PIPELINE_LANDING_DIR": "/data/in",
    })
    assert s.home == Path("/srv/cs") and s.landing_dir == Path("/data/in")
    assert not s.embedded and s.partition_start == date(2025, 3, 1)


def test_blank_database_url_means_embedded():
    assert Settings.from_env({"CS_PIPELINE_DATABASE_URL": "  "}).embedded


@pytest.mark.parametrize("env, name", [
    ({"CS_PIPELINE_PARTITION_START": "yesterday"}, "CS_PIPELINE_PARTITION_START"),
    ({"CS_PIPELINE_BI_ROLE": "Robert'); drop"}, "CS_PIPELINE_BI_ROLE"),
])
def test_invalid_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_dagster_storage_urls_use_psycopg2():
    assert _as_psycopg2_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    url = _sqlalchemy_url({"host": "/tmp/sock", "user": "postgres", "dbname": "dagster"})
    assert url.startswith("postgresql+psycopg2://postgres@/dagster") and "host=%2Ftmp%2Fsock" in url


def test_embedded_server_runs_with_bulk_load_settings(conn, settings):
    if settings.database_url:
        pytest.skip("an external server keeps its own settings")
    from cs_pipeline.core.warehouse import EMBEDDED_SETTINGS

    for name, value in EMBEDDED_SETTINGS.items():
        assert conn.execute(f"SHOW {name}").fetchone()[0] == value, name


def test_configure_embedded_is_idempotent(tmp_path):
    from cs_pipeline.core.warehouse import SETTINGS_FILE, configure_embedded

    (tmp_path / "postgresql.conf").write_text("shared_buffers = '128MB'\n")
    configure_embedded(tmp_path)
    configure_embedded(tmp_path)
    conf = (tmp_path / "postgresql.conf").read_text()
    assert conf.startswith("shared_buffers = '128MB'\n")
    assert conf.count(f"include_if_exists = '{SETTINGS_FILE}'") == 1
    assert "wal_level = 'minimal'" in (tmp_path / SETTINGS_FILE).read_text()
