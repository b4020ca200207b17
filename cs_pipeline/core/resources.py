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
from cs_pipeline.core.settings import ENV_DATABASE_URL, Settings
from cs_pipeline.core.warehouse import Endpoints, resolve_endpoints


class WarehouseResource(dg.ConfigurableResource):
    """Hands psycopg 3 connections to the warehouse to every asset.

    With ``database_url`` unset the embedded PostgreSQL under ``home`` is started on first use (not at
    definition load) and shared with every other process of the project.

    Built from the process's ``Settings`` (``warehouse_from_settings``); it never reads the environment.

    Attributes:
        database_url: libpq URL or conninfo of an existing PostgreSQL (``CS_PIPELINE_DATABASE_URL``).
        dagster_storage_url: ``CS_PIPELINE_DAGSTER_STORAGE_URL`` (None: database ``dagster`` beside the
            warehouse).
        home: ``CS_PIPELINE_HOME``; the embedded server's data directory is ``<home>/pgdata``.
        bi_role: ``CS_PIPELINE_BI_ROLE``, the read-only role granted the marts.
        feature_catalogue: the team's feature catalogue CSV in force (None: WedSync's shipped one).
    """

    database_url: str | None = None
    dagster_storage_url: str | None = None
    home: str = ".cs_pipeline"
    bi_role: str = "cs_bi_reader"
    feature_catalogue: str | None = None

    _endpoints: Endpoints | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The settings this resource stands for, from its own fields (no environment read beyond a
        ``dg.EnvVar`` field's own variable, which Dagster resolves in a run but not outside one)."""
        def value(field):
            return field.get_value() if isinstance(field, dg.EnvVar) else field

        return Settings.for_home(
            self.home, database_url=value(self.database_url) or None,
            dagster_storage_url=value(self.dagster_storage_url) or None, bi_role=self.bi_role,
            scoring={"feature_catalogue": Path(self.feature_catalogue) if self.feature_catalogue else None})

    @property
    def home_dir(self) -> Path:
        """``home``, absolute."""
        return Path(self.home).absolute()

    def endpoints(self) -> Endpoints:
        """Resolve the warehouse (starting the embedded server if needed) and create the schemas once.

        Raises:
            cs_pipeline.core.warehouse.WarehouseError: the server could not be reached or prepared.
        """
        if self._endpoints is None:
            endpoints = resolve_endpoints(self.settings())
            with psycopg.connect(endpoints.warehouse, autocommit=True) as conn:
                ensure_schemas(conn)
                ensure_bi_role(conn, self.bi_role)
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
    """The resource for ``settings``. Database URLs given in the environment stay ``dg.EnvVar``s, so the
    Dagster UI shows the variable's name, never the URL (it may carry a password)."""
    catalogue = str(settings.feature_catalogue) if settings.feature_catalogue else None
    # The warehouse's own connections need no Dagster storage URL: it is not passed.
    urls = {"database_url": dg.EnvVar(ENV_DATABASE_URL)} if settings.database_url else {}
    return WarehouseResource(**urls, home=str(settings.home), bi_role=settings.bi_role, feature_catalogue=catalogue)
