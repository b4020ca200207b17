"""A connection to the warehouse for work outside Dagster (reports, fits), starting the embedded server
on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from cs_pipeline.core.warehouse import resolve_endpoints
from cs_pipeline.core.settings import Settings


@contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the warehouse database of ``settings`` (one transaction, committed on
    success, closed on exit). Starts the embedded server when ``CS_PIPELINE_DATABASE_URL`` is unset.

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the server could not be reached or prepared.
    """
    with psycopg.connect(resolve_endpoints(settings).warehouse) as conn:
        yield conn
