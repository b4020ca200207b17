"""Issue 31, item 6: least privilege. The pipeline's role needs no CREATEROLE: without the BI role it warns
once and carries on; ``cs-pipeline db grant-bi`` (or its ``--print`` SQL) is the admin step that creates the
role, after which the pipeline's grants work as that role. Real embedded PostgreSQL, a real role without
CREATEROLE owning its database (what managed PostgreSQL services hand out)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.core.access import ensure_bi_role, grant_bi
from cs_pipeline.core.paths import PROJECT_ROOT

APP, BI, DB = "cs_app_nocreaterole", "cs_bi_least", "cs_least_privilege"


@pytest.fixture()
def app_role(warehouse):
    admin = conninfo_to_dict(warehouse.endpoints().warehouse)
    with psycopg.connect(make_conninfo(**{**admin, "dbname": "postgres"}), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        for role in (BI, APP):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE NOCREATEDB PASSWORD 'app-pw'").format(
            sql.Identifier(APP)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB), sql.Identifier(APP)))
    yield ({**admin, "user": APP, "password": "app-pw", "dbname": DB}, {**admin, "dbname": DB})


def test_without_createrole_the_pipeline_warns_once_and_grant_bi_is_the_admin_step(app_role, caplog):
    app, admin = app_role
    with caplog.at_level(logging.WARNING, logger="cs_pipeline.core.access"):
        with psycopg.connect(make_conninfo(**app), autocommit=True) as conn:
            assert ensure_bi_role(conn, BI) is False  # no "permission denied to create role"
            assert ensure_bi_role(conn, BI) is False
            conn.execute("CREATE SCHEMA marts")
            conn.execute("CREATE TABLE marts.before_grant AS SELECT 1 AS x")
    warnings = [r for r in caplog.records if "grant-bi" in r.getMessage()]
    assert len(warnings) == 1 and BI in warnings[0].getMessage()

    with psycopg.connect(make_conninfo(**admin), autocommit=True) as conn:  # the admin step, once
        grant_bi(conn, BI, APP)
        grant_bi(conn, BI, APP)  # idempotent

    with psycopg.connect(make_conninfo(**app), autocommit=True) as conn:
        assert ensure_bi_role(conn, BI) is True
        conn.execute("CREATE TABLE marts.after_grant AS SELECT 2 AS x")
        conn.execute("CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.private AS SELECT 3 AS x")
    with psycopg.connect(make_conninfo(**admin), autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(BI)))
        assert conn.execute("SELECT x FROM marts.before_grant").fetchone() == (1,)
        assert conn.execute("SELECT x FROM marts.after_grant").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT x FROM raw.private")


def test_grant_bi_print_shows_the_sql_for_the_pipeline_role(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CS_PIPELINE_", "DAGSTER_"))}
    env.update(CS_PIPELINE_HOME=str(tmp_path), CS_PIPELINE_DATABASE_URL="postgresql://cs_app:pw@db.example/cs")
    done = subprocess.run([str(Path(sys.executable).parent / "cs-pipeline"), "db", "grant-bi", "--print"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert 'CREATE ROLE "cs_bi_reader" NOLOGIN;' in done.stdout
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "cs_app" IN SCHEMA "marts" GRANT SELECT ON TABLES TO "cs_bi_reader";' \
        in done.stdout
    assert "pw" not in done.stdout.replace("PRIVILEGES", "")


def test_bi_role_set_up_rewrites_no_table_it_does_not_change(warehouse, settings):
    """A GRANT/REVOKE over ALL TABLES rewrote every raw table's catalogue row on each first connection, and
    parallel raw loads then failed with "tuple concurrently updated": a repeated set-up now changes no
    row (same xmin), while a privilege granted on raw by hand is still revoked."""
    from psycopg import sql

    from cs_pipeline.core.access import ensure_bi_role

    role = settings.bi_role
    with warehouse.connect(autocommit=True) as admin:
        for name in ("raw.bi_xmin_probe", "marts.bi_xmin_probe"):
            admin.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (x int)").format(sql.Identifier(*name.split("."))))
        ensure_bi_role(admin, role)
        rows = "SELECT oid::regclass::text, xmin::text FROM pg_class WHERE oid = ANY(%s::regclass[]) ORDER BY 1"
        names = ["raw.bi_xmin_probe", "marts.bi_xmin_probe"]
        before = admin.execute(rows, (names,)).fetchall()
        ensure_bi_role(admin, role)
        assert admin.execute(rows, (names,)).fetchall() == before
        admin.execute(sql.SQL("GRANT SELECT ON raw.bi_xmin_probe TO {}").format(sql.Identifier(role)))
        ensure_bi_role(admin, role)
        held = "SELECT has_table_privilege(%s, %s, 'SELECT')"
        assert not admin.execute(held, (role, "raw.bi_xmin_probe")).fetchone()[0]
        assert admin.execute(held, (role, "marts.bi_xmin_probe")).fetchone()[0]
        for name in names:
            admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(*name.split("."))))
