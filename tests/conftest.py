"""Shared fixtures: one real PostgreSQL for the whole session (the embedded one, or
CS_PIPELINE_DATABASE_URL when set), in a temporary CS_PIPELINE_HOME.

Tiers: a test that uses the database or the temporary home (directly or through another fixture) is
marked ``integration`` here, automatically; every other test is a fast unit test of pure functions.
``pytest -m "not integration"`` runs only the fast tier (seconds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.ingest.tables import ensure_raw_tables
from cs_pipeline.core.settings import Settings

INTEGRATION_FIXTURES = {"cs_home", "settings", "warehouse", "conn", "clean_raw"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the database or the temporary home as ``integration``."""
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Each test leaves the process environment as it found it: the CLI run in-process exports its resolved
    settings for the Dagster processes it would start (``core.settings.export_for_children``:
    CS_PIPELINE_HOME, DAGSTER_HOME, the storage URL), which would otherwise point later tests at another
    test's home and its stopped server."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


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
    with resource.connect(autocommit=True) as connection:
        ensure_raw_tables(connection)  # the ingest stage's tables, which clean_raw empties
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
