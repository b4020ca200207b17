"""Issue 31, item 2: a real PostgreSQL server with TLS (Debian's PostgreSQL 15, scram-sha-256, a self-signed
certificate): with ``sslmode=verify-full`` and the right root certificate psycopg, dbt and the Dagster
storage (dagster-postgres) connect over TLS; with a wrong root certificate every one of them refuses.

Also the project's test that it runs on a real server, not only the embedded one. Skipped when the
server binaries or openssl are missing (``.ci/run`` installs them)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cs_pipeline.core.paths import DBT_PROJECT_DIR
from cs_pipeline.core.settings import Settings
from cs_pipeline.core.warehouse import WarehouseError, resolve_endpoints
from cs_pipeline.transform.dbt import dbt_env

PG_BIN = Path("/usr/lib/postgresql/15/bin")
APP_PASSWORD = "app:s3cret@tls"
pytestmark = pytest.mark.slow


def _as_postgres(*args: str, **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ("runuser", "-u", "postgres", "--", *args)
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **kwargs)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if not (PG_BIN / "postgres").exists() or shutil.which("openssl") is None:
        pytest.skip("Debian's postgresql 15 or openssl is not installed")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres OS user")
    base = Path(tempfile.mkdtemp(prefix="cs_pg15tls_"))  # outside pytest's 0700 base: the postgres user reads it
    base.chmod(0o755)
    crt, key = _self_signed(base, "server")
    wrong, _ = _self_signed(base, "wrong")
    data = base / "data"
    data.mkdir(mode=0o700)
    pwfile = base / "pwfile"
    pwfile.write_text("super-secret\n")
    if os.geteuid() == 0:
        for path in (data, key, crt, pwfile, base):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    key.chmod(0o600)
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                   f"ssl = on\nssl_cert_file = '{crt}'\nssl_key_file = '{key}'\n")
    (data / "pg_hba.conf").write_text("local all all scram-sha-256\n"
                                      "hostssl all all 127.0.0.1/32 scram-sha-256\n")
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "start")
    try:
        admin = f"host=127.0.0.1 port={port} user=postgres password=super-secret dbname=postgres sslmode=require"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE app LOGIN CREATEDB PASSWORD {}").format(
                sql.Literal(APP_PASSWORD)))
            conn.execute("CREATE DATABASE cs_pipeline OWNER app")
        yield {"port": port, "ca": crt, "wrong": wrong, "base": base}
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _url(server: dict, root: Path) -> str:
    from urllib.parse import quote

    return (f"postgresql://app:{quote(APP_PASSWORD, safe='')}@localhost:{server['port']}/cs_pipeline"
            f"?sslmode=verify-full&sslrootcert={root}&connect_timeout=10")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CS_PIPELINE_", "DAGSTER_"))}


def _dbt_debug(url: str, cwd: Path) -> subprocess.CompletedProcess:
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent)) or "dbt"
    return subprocess.run([dbt, "debug", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                           str(DBT_PROJECT_DIR)], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**_clean_env(), **dbt_env(url)})


def test_verify_full_with_the_right_root_certificate_connects_every_component(tls_server, tmp_path):
    url = _url(tls_server, tls_server["ca"])
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    debug = _dbt_debug(url, tmp_path)
    assert debug.returncode == 0, debug.stdout[-3000:]
    assert APP_PASSWORD not in debug.stdout

    import dagster as dg

    from cs_pipeline.runtime.instance import prepare_dagster_home

    home = tmp_path / "home"
    settings = Settings.for_home(home, database_url=url)
    dagster_home, endpoints = prepare_dagster_home(settings)  # creates database "dagster" over TLS
    assert "sslmode=verify-full" in endpoints.dagster_storage and APP_PASSWORD not in endpoints.dagster_storage
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        assert instance.get_runs() == []  # dagster-postgres' storage, migrated over TLS
    finally:
        instance.dispose()
    with psycopg.connect(url) as conn:  # the storage's own connections were TLS too
        rows = conn.execute("SELECT count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s "
                            "JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'dagster'").fetchone()
    assert rows == (0,)


def test_a_wrong_root_certificate_is_refused_by_every_component(tls_server, tmp_path):
    url = _url(tls_server, tls_server["wrong"])
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(url).close()
    debug = _dbt_debug(url, tmp_path)
    assert debug.returncode != 0 and "certificate verify failed" in debug.stdout, debug.stdout[-3000:]
    with pytest.raises(WarehouseError, match="certificate verify failed"):
        resolve_endpoints(Settings.for_home(tmp_path / "home", database_url=url))

    import sqlalchemy

    from cs_pipeline.core.warehouse import _sqlalchemy_url

    storage = _sqlalchemy_url({**psycopg.conninfo.conninfo_to_dict(url), "dbname": "postgres"})
    with pytest.raises(sqlalchemy.exc.OperationalError, match="certificate verify failed"):
        sqlalchemy.create_engine(storage).connect().close()


def test_the_demo_runs_over_tls_as_a_role_without_createrole(tls_server, tmp_path):
    """The whole demo (ingest, dbt, scoring, interventions, Dagster storage) on the real server over
    ``verify-full``, as a role that owns its database and has CREATEDB but not CREATEROLE (issue 31, items
    2 and 6): the BI role is missing, so the pipeline warns and carries on."""
    from urllib.parse import quote

    url = _url(tls_server, tls_server["ca"])
    env = {**_clean_env(), "CS_PIPELINE_HOME": str(tmp_path / "home"), "CS_PIPELINE_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "demo", "--suppliers", "10", "--days", "4"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert APP_PASSWORD not in output and quote(APP_PASSWORD, safe="") not in output
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM marts.customer_health").fetchone()[0] > 0
        assert conn.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
