"""A connection to the warehouse for work outside Dagster (reports, fits), starting the embedded server
on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo

from cs_pipeline.core.settings import Settings, child_env
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
