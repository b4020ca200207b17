"""What a day's score may use besides the day's own data (issue 28: point in time): for as-of day D,
the newest backtest calibration that was *known* by D and the churn model trained as of a day before D.
A day's churn-risk score and churn probability then use no data from after the day, whichever day they are
computed on (a daily run, a re-run of an old day, a full refresh), as its seasonal index already does
(``seasonal``). They can still change when a backtest or a model becomes known *later*, for the days after
it became known: a re-run picks it up where the daily run could not have.
Pure: frames in, choices out; the readers are ``store.read_calibrations`` and ``store.read_churn_models``.

Rules (the point-in-time rule of feature stores such as Feast or Tecton: a value for day D uses only
data known by D):

- Calibration: a backtest row over as-of days up to ``last_day`` with a ``horizon_days`` label used
  churn up to ``last_day + horizon_days``; it is known by D when ``last_day + horizon_days < D``. The
  newest such row (latest known day, then latest ``evaluated_at``: a re-evaluation of the same days
  supersedes) calibrates D; none known: ``churn_risk_score`` stays ``100 - health_score`` (the
  scorecard's own rule, ``scoring.score_suppliers``), as it is without any backtest.
- Churn model: a model trained as of day T used data up to T, so it is known from T + 1 on: the model with
  the latest ``training_as_of < D`` (then the latest ``trained_at``) scores D; none: no probability (NaN).
  As for a backtest, the daily run of T itself came before any training on T's data, so a full refresh
  gives the rows the daily runs gave. A pinned version (``CS_PIPELINE_CHURN_MODEL``) is the only
  candidate, under the same rule: it scores the days after its training as-of day, and no earlier day (a
  model fitted on a day's own outcome would flatter that day).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from cs_pipeline.health.backtest import calibrated_churn_risk


def _newest_known(known: np.ndarray, days: np.ndarray, strict: bool) -> np.ndarray:
    """Per day, the position in ``known`` (datetime64[D], ascending) of the last entry known by it: known
    before the day (``strict``) or on or before it; -1 for none."""
    return np.searchsorted(known, days, side="left" if strict else "right") - 1


def _as_days(values) -> np.ndarray:
    return pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]")


def _instants(values: pd.Series) -> np.ndarray:
    """Timestamps (aware or naive, UTC) as datetime64[ns] UTC, for sorting."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy()


def churn_risk_as_of(health: np.ndarray, days, default: np.ndarray, calibrations: pd.DataFrame) -> np.ndarray:
    """Churn-risk score 0-100 of each row with the calibration known by its day (module docstring).

    Args:
        health: health score per row (float 0-100, NaN unscored).
        days: as-of day per row (date / datetime-like, same length).
        default: the score without a calibration per row (``score_suppliers``' ``churn_risk_score``).
        calibrations: ``read_calibrations`` rows: ``last_day`` (date), ``horizon_days`` (int),
            ``evaluated_at`` (timestamp), ``calibration`` (dict band -> observed probability 0-1; {} when the
            backtest had too few rows, which then falls back too).

    Returns:
        float ndarray, one per row: ``backtest.calibrated_churn_risk`` of the chosen calibration, else ``default``.
    """
    out = np.asarray(default, dtype=float).copy()
    if calibrations.empty or not len(out):
        return out
    known = _as_days(calibrations["last_day"]) + calibrations["horizon_days"].to_numpy(dtype=int).astype("timedelta64[D]")
    order = np.lexsort((_instants(calibrations["evaluated_at"]), known))
    chosen = _newest_known(known[order], _as_days(days), strict=True)
    health = np.asarray(health, dtype=float)
    for position in np.unique(chosen[chosen >= 0]):
        rows = chosen == position
        out[rows] = calibrated_churn_risk(health[rows], dict(calibrations["calibration"].iloc[order[position]]))
    return out


def models_by_day(models: pd.DataFrame, days: list[date], pinned: str | None = None) -> dict[date, str | None]:
    """The churn model version that scores each day (module docstring): the latest ``training_as_of``
    before the day (then the latest ``trained_at``), None when no model was trained as of an earlier day;
    with ``pinned``, only that version is a candidate (every day when it is not in ``models``).

    ``models``: ``read_churn_models`` rows: ``version`` (str), ``training_as_of`` (date), ``trained_at``
    (timestamp)."""
    if pinned is not None:
        mine = models.loc[models["version"] == pinned] if not models.empty else models
        if mine.empty:  # not in ops.churn_models: load_model names the problem
            return {day: pinned for day in days}
        models = mine
    if models.empty or not days:
        return {day: None for day in days}
    as_of = _as_days(models["training_as_of"])
    order = np.lexsort((_instants(models["trained_at"]), as_of))
    chosen = _newest_known(as_of[order], _as_days(days), strict=True)
    versions = models["version"].to_numpy(dtype=object)[order]
    return {day: (versions[c] if c >= 0 else None) for day, c in zip(days, chosen)}
