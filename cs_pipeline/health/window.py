"""Scores of a window of days as ``customer_health`` writes them: the scorecard's points with each day's
point-in-time seasonal index, the churn-risk score with the backtest calibration known by the day, the
history columns, and the churn model trained as of an earlier day (issue 28, ``known_by``). Reads the warehouse,
calls the pure functions; writes nothing.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg

from cs_pipeline.core.settings import Settings
from cs_pipeline.health.churn_scoring import score_churn
from cs_pipeline.health.churn_service import load_model
from cs_pipeline.health.drivers import history_days
from cs_pipeline.health.known_by import churn_risk_as_of, models_by_day
from cs_pipeline.health.scorecard import Scorecard
from cs_pipeline.health.scoring import add_history, score_suppliers
from cs_pipeline.health.seasonal import LOOKBACK_DAYS, point_in_time_index, read_daily_seasonal_sums
from cs_pipeline.health.store import read_calibrations, read_churn_models, read_engagement, read_health_history


def score_window(conn: psycopg.Connection, scorecard: Scorecard, first: date, last: date,
                 settings: Settings | None = None) -> pd.DataFrame:
    """Scores (``score_suppliers`` columns with ``add_history``'s) of every engagement row in [first, last]
    (UTC days), each day with only what was known by it:

    - the seasonal index learned from the history before the day (``seasonal.point_in_time_index``);
    - ``churn_risk_score`` from the newest backtest calibration known by the day, else ``100 - health``
      (``known_by.churn_risk_as_of``);
    - with ``settings`` (its ``home`` holds the model files, ``churn_model`` pins a version):
      ``churn_probability`` (float 0-1, NaN without a model), ``churn_model_version`` (None without one) from
      the newest model trained as of a day before it (``known_by.models_by_day``), and that model's reasons
      appended to ``drivers`` as ``churn model: ...`` (issue 26), and ``churn_probability_7d_ago`` (float 0-1,
      NaN): that same model's probability for the supplier's row 7 days earlier (the playbook's ``rise_7d``).

    Raises:
        ChurnModelError: a chosen model's file is missing or outside the models folder (``load_model``).
        ValueError: a chosen gradient boosting model that this version cannot explain (``score_churn``).
    """
    engagement = read_engagement(conn, first, last)
    row_days = pd.to_datetime(engagement["as_of_date"]).dt.date
    days = sorted(set(row_days))
    seasonal_metrics = scorecard.seasonal_metrics
    seasonal = None
    if seasonal_metrics and scorecard.seasonality.enabled:
        sums = read_daily_seasonal_sums(conn, first - timedelta(days=LOOKBACK_DAYS), last - timedelta(days=1),
                                        seasonal_metrics)
        seasonal = point_in_time_index(sums, days, seasonal_metrics, scorecard.seasonality)
    scores = score_suppliers(engagement, scorecard, seasonal=seasonal)
    scores["churn_risk_score"] = churn_risk_as_of(scores["health_score"].to_numpy(dtype=float), row_days,
                                                  scores["churn_risk_score"].to_numpy(dtype=float),
                                                  read_calibrations(conn, scorecard.version))
    history = read_health_history(conn, history_days(days))
    scores = add_history(scores, history, scorecard)
    n = len(scores)
    probability, version = np.full(n, np.nan), np.full(n, None, dtype=object)
    probability_7d_ago = np.full(n, np.nan)
    reasons = np.full(n, "", dtype=object)
    chosen = models_by_day(read_churn_models(conn), days, settings.churn_model) if settings is not None else {}
    by_row = row_days.map(chosen).to_numpy(dtype=object) if chosen else np.full(n, None, dtype=object)
    versions = sorted({v for v in chosen.values() if v is not None})
    models = {v: load_model(settings, v) for v in versions}
    for model_version, model in models.items():
        rows = by_row == model_version
        churn = score_churn(conn, model, engagement.loc[rows], week_ago=True)
        probability_7d_ago[rows] = churn["churn_probability_7d_ago"].to_numpy(dtype=float)
        probability[rows] = churn["churn_probability"].to_numpy(dtype=float)
        version[rows] = churn["churn_model_version"].to_numpy(dtype=object)
        reasons[rows] = churn["churn_reasons"].to_numpy(dtype=object)
    scores["churn_probability"] = probability
    scores["churn_model_version"] = version
    scores["churn_probability_7d_ago"] = probability_7d_ago
    drivers = scores["drivers"].fillna("").to_numpy(dtype=object)
    scores["drivers"] = np.where(reasons == "", drivers, np.where(drivers == "", "churn model: " + reasons,
                                                                  drivers + "; churn model: " + reasons))
    return scores
