"""A connection to the warehouse for work outside Dagster (reports, fits), starting the embedded server
on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo

from cs_pipeline.core.child_env import child_env
from cs_pipeline.core.settings import Settings
from cs_pipeline.core.warehouse import parse_conninfo, resolve_endpoints


@contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the warehouse database of ``settings`` (one transaction, committed on
    success, closed on exit). Starts the embedded server when ``CS_PIPELINE_DATABASE_URL`` is unset.

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the server could not be reached or prepared.
    """
    with psycopg.connect(resolve_endpoints(settings).warehouse) as conn:
        yield conn


def psql_invocation(settings: Settings, psql: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that open ``psql`` on the warehouse of ``settings``: the conninfo
    without its password on the command line (every local user can read a process's argv), the password in
    psql's environment (``PGPASSWORD``, readable only by this user and root).

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the server could not be reached or prepared.
    """
    params = parse_conninfo(resolve_endpoints(settings).warehouse)
    password = params.pop("password", None)
    env = child_env(settings, PGPASSWORD=password) if password else child_env(settings)
    return [psql, make_conninfo(**params)], env


def bi_grant_sql(settings: Settings, owner: str | None = None) -> tuple[str, list[str]]:
    """The admin step that creates the BI role (``cs_pipeline.core.access.grant_bi_statements``) as SQL
    text, for ``owner`` (default: the user of ``CS_PIPELINE_DATABASE_URL``, ``postgres`` on the embedded
    server). Returns (owner, statements); connects to nothing."""
    from cs_pipeline.core.access import grant_bi_statements

    if owner is None:
        owner = parse_conninfo(settings.database_url).get("user", "postgres") if settings.database_url else "postgres"
    return owner, [statement.as_string(None) for statement in grant_bi_statements(settings.bi_role, owner)]


def grant_bi_role(settings: Settings, owner: str | None = None) -> str:
    """Run the admin step on the warehouse of ``settings`` (connecting as its URL's role, which must be
    allowed to create roles): create the BI role and its grants on marts for tables ``owner`` creates.
    Returns the owner.

    Raises:
        psycopg.Error: the connecting role may not create roles or grant for ``owner``.
    """
    from cs_pipeline.core.access import grant_bi

    owner, _ = bi_grant_sql(settings, owner)
    with psycopg.connect(resolve_endpoints(settings).warehouse, autocommit=True) as conn:
        grant_bi(conn, settings.bi_role, owner)
    return owner
