from datetime import date
from pathlib import Path

import pytest

from cs_pipeline.core.settings import Settings, SettingsError
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


def test_every_variable_is_a_field_of_its_sub_model():
    s = Settings.from_env({
        "CS_PIPELINE_SMTP_HOST": "smtp.example", "CS_PIPELINE_SMTP_PORT": "2525", "CS_PIPELINE_SMTP_USER": "cs",
        "CS_PIPELINE_SMTP_PASSWORD": "p@ss:w/rd", "CS_PIPELINE_SMTP_TLS": "false", "CS_PIPELINE_SMTP_TLS_VERIFY": "no",
        "CS_PIPELINE_DAGSTER_URL": "http://ui.example:3000/", "CS_PIPELINE_SCORECARD": "ws133",
        "DAGSTER_HOME": "/srv/dagster", "USER": "ana",
    })
    assert (s.smtp.host, s.smtp.port, s.smtp.user, s.smtp.use_tls, s.smtp.tls_verify) == \
        ("smtp.example", 2525, "cs", False, False)
    assert s.smtp.password.get_secret_value() == "p@ss:w/rd" and "p@ss" not in repr(s)
    assert s.dashboard.dagster_url == "http://ui.example:3000" and s.scorecard == "ws133"
    assert s.dagster_instance_dir == Path("/srv/dagster") and not s.dagster_home_is_ours and s.operator == "ana"


@pytest.mark.parametrize("env, name, fix", [
    ({"CS_PIPELINE_SCORECARD": "ws999"}, "CS_PIPELINE_SCORECARD", "ws168"),
    ({"CS_PIPELINE_FEATURE_CATALOGUE": "/nonexistent/catalogue.csv"}, "CS_PIPELINE_FEATURE_CATALOGUE", "unset it"),
    ({"CS_PIPELINE_DATABASE_URL": "not a url s3cret"}, "CS_PIPELINE_DATABASE_URL", "percent-encode"),
    ({"CS_PIPELINE_DAGSTER_URL": "ftp://ui"}, "CS_PIPELINE_DAGSTER_URL", "http"),
    ({"CS_PIPELINE_SMTP_PORT": "seventy"}, "CS_PIPELINE_SMTP_PORT", "587"),
])
def test_invalid_settings_fail_at_start_with_one_line(env, name, fix):
    """Issue 25: an unknown scorecard, a missing catalogue or a bad URL fails when the settings are read,
    in one line naming the variable and the fix, never echoing the value's secret."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith(name) and fix in message and "\n" not in message and "s3cret" not in message


def test_resources_are_built_from_settings_not_the_environment(tmp_path, monkeypatch):
    from cs_pipeline.core.resources import warehouse_from_settings

    settings = Settings.for_home(tmp_path, bi_role="team_bi")
    resource = warehouse_from_settings(settings)
    monkeypatch.setenv("CS_PIPELINE_HOME", "/elsewhere")
    monkeypatch.setenv("CS_PIPELINE_BI_ROLE", "other_role")
    assert resource.settings().home == tmp_path and resource.settings().bi_role == "team_bi"


def test_copies_update_the_sub_models_and_refuse_unknown_keys(tmp_path):
    base = Settings.for_home(tmp_path)
    copy = base.model_copy(update={"scorecard": "ws133", "landing_dir": tmp_path / "in"})
    assert copy.scorecard == "ws133" and copy.scoring.scorecard == "ws133" and copy.landing_dir == tmp_path / "in"
    assert base.scorecard == "ws168"
    with pytest.raises(TypeError, match="not a setting: scorcard"):
        base.model_copy(update={"scorcard": "ws133"})


def test_a_stray_file_never_moves_the_partition_start(tmp_path):
    """Issue 31 item 5: only names that fit the landing contract count for the partitions' start."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "suppliers_2025-03-01.csv").write_text("supplier_id\n")
    (landing / "old export (copy)_1970-01-01.bak").write_text("x\n")
    (landing / "suppliers_1970-01-02.csv").symlink_to(landing / "old export (copy)_1970-01-01.bak")
    s = Settings.from_env({"CS_PIPELINE_HOME": str(tmp_path / "home"), "CS_PIPELINE_LANDING_DIR": str(landing)})
    assert s.partition_start == date(2025, 3, 1)


def test_the_warehouse_resource_resolves_its_url_outside_a_run(tmp_path, monkeypatch):
    """A resource built from settings keeps CS_PIPELINE_DATABASE_URL as a dg.EnvVar (the UI shows the name,
    never the URL); used outside a Dagster run (the CLI after a manual intervention) it must connect to the
    URL, not parse the variable's name (it failed with "malformed database URL")."""
    from cs_pipeline.core.resources import warehouse_from_settings

    url = "postgresql://cs:s3cret@db.example:5433/cs_pipeline"
    monkeypatch.setenv("CS_PIPELINE_DATABASE_URL", url)
    monkeypatch.setenv("CS_PIPELINE_DAGSTER_STORAGE_URL", "postgresql://cs:s3cret@db.example:5433/dagster")
    settings = Settings.from_env({"CS_PIPELINE_HOME": str(tmp_path), "CS_PIPELINE_DATABASE_URL": url,
                                  "CS_PIPELINE_DAGSTER_STORAGE_URL": "postgresql://cs:s3cret@db.example:5433/dagster"})
    resolved = warehouse_from_settings(settings).settings()
    assert resolved.database_url == url and resolved.dagster_storage_url is None
