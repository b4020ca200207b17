"""The day window of a run: one value from the partitions to dbt and back.

A run over the daily partitions [first, last] (inclusive UTC days) is a ``DayWindow``, built once per run
(``DayWindow.of_run``). The transform stage widens it to the days dbt must rebuild (``rebuild``: from the
first changed day to the newest day built, issue 15) and hands it to dbt as environment variables
(``dbt_env``; ``dbt_project/macros/window.sql`` reads them only when executing, so dbt's partial parse
survives a new window) or, by hand, as ``--vars`` (``dbt_vars``). Pure: no database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

#: The environment variables of the day window (read by ``dbt_project/macros/window.sql``).
WINDOW_ENV = {"min_date": "CS_PIPELINE_DBT_MIN_DATE", "max_date": "CS_PIPELINE_DBT_MAX_DATE"}


@dataclass(frozen=True)
class DayWindow:
    """Inclusive UTC days [first, last].

    Raises:
        ValueError: ``last`` before ``first`` ("empty window: FIRST > LAST").
    """

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"empty window: {self.first} > {self.last}")

    @classmethod
    def of_run(cls, context) -> DayWindow:
        """The partitions a Dagster run materialises (``context.partition_time_window``: end exclusive)."""
        window = context.partition_time_window
        return cls(window.start.date(), (window.end - timedelta(days=1)).date())

    @classmethod
    def day(cls, day: date) -> DayWindow:
        """The window of one day."""
        return cls(day, day)

    def days(self) -> list[date]:
        """Every day of the window, oldest first."""
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def __len__(self) -> int:
        return (self.last - self.first).days + 1

    def __str__(self) -> str:
        return f"{self.first}..{self.last}"

    def rebuild(self, newest_built: date | None, earliest_changed: date | None) -> DayWindow:
        """The days the daily dbt models rebuild for a run over this window.

        It starts at the earliest changed day (the run's first day, or the first day a late or corrected
        support ticket affects) and ends at the newest day already built when that is later than the run's
        last day: a re-run of an old day D must refresh every later day whose rolling windows, last-seen
        dates and running totals depend on D (issue 15). A daily run of the newest day gives
        ``(day, day)``; the models then read at most 89 days before the window and carry running totals
        forward from the day before it, so the cost does not grow with history.

        Args:
            newest_built: the newest day the daily marts hold (None before the first build).
            earliest_changed: the first day a changed support ticket affects (None: no change).
        """
        start = self.first if earliest_changed is None else min(self.first, earliest_changed)
        end = self.last if newest_built is None else max(self.last, newest_built)
        return DayWindow(start, end)

    def dbt_vars(self) -> dict[str, str]:
        """dbt's ``--vars`` of the window: ``{"min_date": "YYYY-MM-DD", "max_date": "YYYY-MM-DD"}``."""
        return {"min_date": self.first.isoformat(), "max_date": self.last.isoformat()}

    def dbt_vars_arg(self) -> list[str]:
        """``["--vars", "<json>"]`` for ``dbt_vars`` (for dbt by hand; runs use ``dbt_env``)."""
        return ["--vars", json.dumps(self.dbt_vars(), sort_keys=True)]

    def dbt_env(self) -> dict[str, str]:
        """The window as environment variables: ``{"CS_PIPELINE_DBT_MIN_DATE": "YYYY-MM-DD",
        "CS_PIPELINE_DBT_MAX_DATE": "YYYY-MM-DD"}``. Unlike ``--vars``, they are not part of dbt's parse
        state, so partial parsing survives a new window."""
        return {WINDOW_ENV[name]: value for name, value in self.dbt_vars().items()}
