"""The daily partitions shared by every partitioned asset (UTC days, keys YYYY-MM-DD)."""

from __future__ import annotations

from datetime import date

from datetime import timedelta

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
