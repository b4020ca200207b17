"""The ``health_score_backtest`` asset's loop: each scorecard backtested on its own churn label over the
weekly as-of days, each day scored with the point-in-time seasonal index (issue 28), and a scorecard that
ranks churners no better than chance diagnosed in words (``diagnose``). Pure: frames in, results out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd

from cs_pipeline.health.backtest import (
    BacktestError,
    BacktestResult,
    backtest,
    label_churn,
    weekly_rows,
)
from cs_pipeline.health.diagnose import misleading_warning
from cs_pipeline.health.scorecard import Scorecard


@dataclass
class ScorecardBacktests:
    """What ``backtest_scorecards`` found, per scorecard version: ``results`` (BacktestResult),
    ``failures`` (why no result), ``warnings`` (``misleading_warning``), ``skipped`` (the mart lacks
    a metric it reads)."""

    results: dict[str, BacktestResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def backtest_scorecards(history: pd.DataFrame, cards: list[Scorecard], churn_dates: pd.Series,
                        activity_for, last: date) -> ScorecardBacktests:
    """Backtest each scorecard on its own churn label over the weekly as-of days of ``history`` whose
    horizon ends by ``last`` (the loop of the ``health_score_backtest`` asset).

    Args:
        history: every row of marts.supplier_engagement_daily up to ``last``.
        cards: the scorecards (one per version).
        churn_dates: cancellation day per supplier_id (NaT when not cancelled).
        activity_for: ``f(events: list[str] | None) -> activity days`` (``supplier_id``,
            ``activity_date``), called for an ``inactivity`` label only.
        last: the last day of history (UTC).
    """
    from cs_pipeline.health.scoring import score_suppliers
    from cs_pipeline.health.seasonal import daily_seasonal_sums, point_in_time_index

    out = ScorecardBacktests()
    for card in cards:
        absent = sorted({m for c in card.components for m in (c.metric, c.fallback_metric) if m} - set(history.columns))
        if absent:
            out.skipped[card.version] = f"the mart has no column(s) {absent}"
            continue
        horizon = card.churn.horizon_days
        engagement = weekly_rows(history, last - timedelta(days=horizon))
        if engagement.empty:
            out.failures[card.version] = f"history shorter than the {horizon}-day horizon"
            continue
        activity = activity_for(card.churn.events) if card.churn.kind == "inactivity" else None
        labels = label_churn(engagement, card.churn, churn_dates, activity)
        seasonal_metrics = card.seasonal_metrics
        # Each as-of day scored with the seasonal index of the history before it (issue 28).
        seasonal = point_in_time_index(daily_seasonal_sums(history, seasonal_metrics),
                                       sorted(set(pd.to_datetime(engagement["as_of_date"]).dt.date)),
                                       seasonal_metrics, card.seasonality) if seasonal_metrics else None
        scores = score_suppliers(engagement, card, seasonal=seasonal)
        try:
            result = backtest(scores, labels=labels, horizon_days=horizon, churn_kind=card.churn.kind)
        except BacktestError as exc:
            out.failures[card.version] = str(exc)
            continue
        out.results[card.version] = result
        warning = misleading_warning(result, engagement, card, labels,
                                     lambda e, c, s=seasonal: score_suppliers(e, c, seasonal=s)["health_score"])
        if warning:
            out.warnings[card.version] = warning
    return out
