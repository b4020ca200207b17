"""One scorecard fit against the warehouse (issue 13, issue 25): the steps shared by
``cs-pipeline scorecard fit`` and the ``scorecards/fitted`` asset, so both fit the same way.

Read the fit's inputs from the marts (``health.store.backtest_inputs``), fit (``health.fit.fit_scorecard``),
write the new version as YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from cs_pipeline.health.backtest import BacktestError
from cs_pipeline.health.fit import MIN_AS_OF_DAYS, FitResult, fit_scorecard, scorecard_yaml
from cs_pipeline.health.scorecard import Scorecard
from cs_pipeline.health.store import backtest_inputs


#: Days between as-of days of a fit (weekly, counted back from the as-of day minus the churn horizon).
EVERY_DAYS = 7


class FitRunError(ValueError):
    """The fit cannot be computed; the message says why (no engagement history, no history before the
    as-of day minus the horizon, or a ``BacktestError``'s reason: no churner in the fit or held-out days)."""


@dataclass(frozen=True)
class FitRun:
    """A fit of ``card`` using history up to ``as_of`` (UTC day), and its result."""

    card: Scorecard
    as_of: date
    result: FitResult

    @property
    def warning(self) -> str | None:
        """One line when the history is short (fewer than ``MIN_AS_OF_DAYS`` weekly as-of days), saying
        how much history a fit needs; None otherwise. Printed by ``cs-pipeline scorecard fit`` and put in
        the ``scorecards/fitted`` asset's metadata (issue 29)."""
        result = self.result
        if not result.short_history:
            return None
        need = (MIN_AS_OF_DAYS - 1) * EVERY_DAYS + self.card.churn.horizon_days + 1
        return (f"only {result.as_of_days} weekly as-of days ({result.fit_as_of_days} to fit, "
                f"{result.as_of_days - result.fit_as_of_days} held out): too few to trust the weights or the "
                f"ROC-AUC; fit on at least {MIN_AS_OF_DAYS}, about {need} days of history up to the as-of day "
                f"({MIN_AS_OF_DAYS - 1} weeks plus the {self.card.churn.horizon_days}-day churn horizon)")

    def write(self, path: Path) -> Path:
        """Write the fitted scorecard as YAML to ``path`` (parent folders created); returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(scorecard_yaml(self.result.scorecard), encoding="utf-8")
        return path


def fit_from_warehouse(conn: psycopg.Connection, card: Scorecard, as_of: date | None = None) -> FitRun:
    """Fit ``card``'s component weights to its churn label on the warehouse's history up to ``as_of``
    (default: the last ``as_of_date`` of ``marts.supplier_engagement_daily``). The new version is named
    ``<version>-fit-<YYYYMMDD of as_of>``.

    Raises:
        FitRunError: no engagement history, no history before ``as_of`` minus the churn horizon, or no
            churner / non-churner in the fit or held-out days.
    """
    day = as_of
    if day is None:
        day = conn.execute("SELECT max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()[0]
        if day is None:
            raise FitRunError("no engagement history yet")
    engagement, labels, seasonal = backtest_inputs(conn, card, day, every_days=EVERY_DAYS)
    if engagement.empty:
        raise FitRunError(f"no history before {day} minus the {card.churn.horizon_days}-day horizon")
    try:
        result = fit_scorecard(engagement, labels, card, f"{card.version}-fit-{day:%Y%m%d}", seasonal=seasonal)
    except BacktestError as exc:
        raise FitRunError(str(exc)) from exc
    return FitRun(card=card, as_of=day, result=result)
