"""Dagster resources shared by every asset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from cs_pipeline.core.access import ensure_bi_role
from cs_pipeline.core.db import ensure_schemas
from cs_pipeline.core.warehouse import Endpoints, resolve_endpoints
from cs_pipeline.settings import Settings


class WarehouseResource(dg.ConfigurableResource):
    """Hands psycopg 3 connections to the warehouse to every asset.

    With ``database_url`` unset the embedded PostgreSQL under ``home`` is started on first use (not at
    definition load) and shared with every other process of the project.

    Attributes:
        database_url: libpq URL or conninfo of an existing PostgreSQL (``CS_PIPELINE_DATABASE_URL``).
        home: ``CS_PIPELINE_HOME``; the embedded server's data directory is ``<home>/pgdata``.
    """

    database_url: str | None = None
    home: str = ".cs_pipeline"

    _endpoints: Endpoints | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The settings this resource stands for (environment values overridden by its config)."""
        base = Settings.from_env()
        return base.model_copy(update={"database_url": self.database_url or None, "home": Path(self.home).absolute()})

    def endpoints(self) -> Endpoints:
        """Resolve the warehouse (starting the embedded server if needed) and create the schemas once.

        Raises:
            cs_pipeline.core.warehouse.WarehouseError: the server could not be reached or prepared.
        """
        if self._endpoints is None:
            endpoints = resolve_endpoints(self.settings())
            with psycopg.connect(endpoints.warehouse, autocommit=True) as conn:
                ensure_schemas(conn)
                ensure_bi_role(conn, self.settings().bi_role)
            self._endpoints = endpoints
        return self._endpoints

    @property
    def conninfo(self) -> str:
        """libpq conninfo of the warehouse database."""
        return self.endpoints().warehouse

    @contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A new psycopg connection to the warehouse, closed on exit.

        Without ``autocommit`` the block is one transaction: committed on success, rolled back when
        the block raises (psycopg's connection context manager).
        """
        with psycopg.connect(self.conninfo, autocommit=autocommit) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            if not autocommit:
                conn.commit()
            yield conn


def warehouse_from_settings(settings: Settings) -> WarehouseResource:
    """The resource for ``settings``, keeping the database URL out of the UI when it came from the env."""
    if settings.database_url:
        return WarehouseResource(database_url=dg.EnvVar("CS_PIPELINE_DATABASE_URL"), home=str(settings.home))
    return WarehouseResource(home=str(settings.home))
