"""The daily partitions shared by every partitioned asset (UTC days, keys YYYY-MM-DD)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg

#: A day's data must land (and be scored) within 26 hours: the UI shows the asset as stale (warn
#: after 24 hours) or failing freshness when a day's files did not arrive.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=24))


def daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from ``start``; the newest partition is today (so a day can be loaded as
    soon as its files land, and the schedule runs the day before)."""
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days (``datetime.date``) of the partitions this run materialises, oldest first."""
    return [date.fromisoformat(key) for key in context.partition_keys]


class PartitionRangeError(ValueError):
    """A day is outside the daily partitions; the message is one line naming the day, the partitions'
    range and ``CS_PIPELINE_PARTITION_START``."""


def check_days_in_partitions(first: date, last: date, start: date, origin: str = "by default",
                             today: date | None = None) -> None:
    """Raise unless every day of [first, last] is a daily partition: from ``start`` to today (UTC; the
    newest partition is the day in progress, see ``daily_partitions``). ``origin`` says where ``start``
    came from.

    Raises:
        PartitionRangeError: one line, e.g. ``day 1997-01-01 is outside the daily partitions
            2024-01-01..2026-11-23 (start by default); set CS_PIPELINE_PARTITION_START=1997-01-01 ...``;
            or, for a reversed range, ``the range 2026-01-05..2026-01-01 ends before it starts ...``.
    """
    if last < first:
        raise PartitionRangeError(f"the range {first}..{last} ends before it starts; give the earlier day first "
                                  f"(--start {last} --end {first})")
    end = today or datetime.now(timezone.utc).date()
    day = first if first < start else last if last > end else None
    if day is None:
        return
    advice = (f"set CS_PIPELINE_PARTITION_START={day.isoformat()} (or import data from that day) to include it"
              if day < start else "that day has not begun yet (UTC)")
    raise PartitionRangeError(f"day {day} is outside the daily partitions {start}..{end} (start {origin}); {advice}")
