"""The calendar of the daily partitions: where they start.

The first partition day follows the data: remembered in ``$CS_PIPELINE_HOME/calendar.json`` by
``cs-pipeline import`` (the earliest day imported), else the earliest landing file's day
(``cs_pipeline.core.settings.Settings.from_env`` asks in that order, after ``CS_PIPELINE_PARTITION_START``).
Pure file handling: no database, no Dagster.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from cs_pipeline.core.landing_contract import earliest_landing_day  # noqa: F401  (the landing contract: exact names, regular files)

CALENDAR_FILE = "calendar.json"


def remembered_partition_start(home: Path) -> date | None:
    """The first partition day remembered in ``<home>/calendar.json`` (``{"start": "YYYY-MM-DD"}``), if any
    (an unreadable file counts as none)."""
    path = home / CALENDAR_FILE
    try:
        return date.fromisoformat(json.loads(path.read_text())["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_partition_start(home: Path, day: date) -> date:
    """Remember ``day`` as the first partition day in ``<home>/calendar.json``, unless an earlier day is
    remembered already (partitions only ever start earlier, so materialised days stay inside).
    Returns the day remembered."""
    current = remembered_partition_start(home)
    start = min(day, current) if current else day
    home.mkdir(parents=True, exist_ok=True)
    (home / CALENDAR_FILE).write_text(json.dumps({"start": start.isoformat()}) + "\n")
    return start
