"""Shared fixtures: one real PostgreSQL for the whole session (the embedded one, or
CS_PIPELINE_DATABASE_URL when set), in a temporary CS_PIPELINE_HOME."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cs_pipeline.resources import WarehouseResource
from cs_pipeline.settings import Settings


@pytest.fixture(scope="session")
def cs_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cs_home")
    os.environ["CS_PIPELINE_HOME"] = str(home)
    os.environ["CS_PIPELINE_LANDING_DIR"] = str(home / "landing")
    os.environ.pop("DAGSTER_HOME", None)
    return home


@pytest.fixture(scope="session")
def settings(cs_home: Path) -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def warehouse(settings: Settings) -> WarehouseResource:
    resource = WarehouseResource(database_url=settings.database_url, home=str(settings.home))
    resource.endpoints()  # start the server and create the schemas once
    return resource


@pytest.fixture()
def conn(warehouse: WarehouseResource) -> Iterator[psycopg.Connection]:
    with warehouse.connect() as connection:
        yield connection


@pytest.fixture()
def clean_raw(warehouse: WarehouseResource) -> None:
    """Empty every raw table (all partitions), the rejected rows and the load audit."""
    with warehouse.connect() as c:
        c.execute("TRUNCATE raw.suppliers, raw.activity_events, raw.support_tickets, raw.billing_events, "
                  "raw.rejected_rows, ops.load_audit")
        c.commit()
