"""Does the health score predict churn? Pure functions over scored history (no database).

For past as-of days, a supplier "churns" when it is cancelled within the next ``horizon_days`` days
(default 30). The backtest reports ROC-AUC of the health score as a ranking of churners (lower score
= more risk), the churn rate per risk level, the lift of the critical band, and a calibration table
(observed churn probability per 10-point score band) used to turn the score into a churn-risk score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

BANDS = np.arange(0, 101, 10)
MIN_CALIBRATION_ROWS = 200
MIN_CALIBRATION_CHURNERS = 10


def roc_auc(risk: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC-AUC of ``risk`` (higher = more likely to churn) for boolean ``labels`` (Mann-Whitney U,
    ties counted half). None when there are no positives or no negatives."""
    risk = np.asarray(risk, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return None
    ranks = pd.Series(risk).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def churn_labels(scores: pd.DataFrame, churn_dates: pd.Series, horizon_days: int = 30) -> np.ndarray:
    """True where the supplier is cancelled in (as_of_date, as_of_date + horizon_days].

    ``churn_dates``: cancellation day (date or NaT) indexed by supplier_id.
    """
    churn = pd.to_datetime(churn_dates.reindex(scores["supplier_id"]).to_numpy())
    day = pd.to_datetime(scores["as_of_date"]).to_numpy()
    with np.errstate(invalid="ignore"):
        return (~pd.isna(churn)) & (churn > day) & (churn <= day + np.timedelta64(horizon_days, "D"))


@dataclass
class BacktestResult:
    """The outcome for one scorecard version over a set of as-of days."""

    scorecard_version: str
    first_day: date | None
    last_day: date | None
    observations: int
    churners: int
    auc: float | None
    churn_rate: float | None
    churn_rate_by_level: dict[str, float | None] = field(default_factory=dict)
    critical_lift: float | None = None
    calibration: dict[str, float] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration)


def backtest(scores: pd.DataFrame, churn_dates: pd.Series, horizon_days: int = 30) -> BacktestResult:
    """Backtest scored history.

    Args:
        scores: ``supplier_id``, ``as_of_date``, ``health_score`` (0-100, NaN = unscored, dropped),
            ``risk_level``, ``scorecard_version``; only as-of days whose full horizon is observed should
            be passed.
        churn_dates: cancellation day per supplier_id (NaT when not cancelled).
        horizon_days: the churn window after each as-of day.

    Returns:
        BacktestResult; ``calibration`` maps score bands ("0-10", ..., "90-100") to the observed churn
        probability (0-1), filled only with at least 200 observations and 10 churners.
    """
    scored = scores.loc[scores["health_score"].notna()].reset_index(drop=True)
    version = str(scores["scorecard_version"].iloc[0]) if len(scores) else ""
    if scored.empty:
        return BacktestResult(version, None, None, 0, 0, None, None)
    labels = churn_labels(scored, churn_dates, horizon_days)
    health = scored["health_score"].to_numpy(dtype=float)
    rate = float(labels.mean())
    by_level = {}
    for level in ("healthy", "at_risk", "critical"):
        mask = (scored["risk_level"] == level).to_numpy()
        by_level[level] = float(labels[mask].mean()) if mask.any() else None
    lift = by_level["critical"] / rate if by_level.get("critical") is not None and rate > 0 else None
    calibration: dict[str, float] = {}
    if len(scored) >= MIN_CALIBRATION_ROWS and labels.sum() >= MIN_CALIBRATION_CHURNERS:
        band = np.clip((health // 10).astype(int), 0, 9)
        frame = pd.DataFrame({"band": band, "churn": labels})
        observed = frame.groupby("band")["churn"].mean()
        calibration = {f"{b * 10}-{b * 10 + 10}": round(float(v), 4) for b, v in observed.items()}
    days = pd.to_datetime(scored["as_of_date"])
    return BacktestResult(
        scorecard_version=version,
        first_day=days.min().date(),
        last_day=days.max().date(),
        observations=len(scored),
        churners=int(labels.sum()),
        auc=roc_auc(-health, labels),
        churn_rate=rate,
        churn_rate_by_level=by_level,
        critical_lift=lift,
        calibration=calibration,
    )


def calibrated_churn_risk(health: np.ndarray, calibration: dict[str, float]) -> np.ndarray:
    """Churn-risk score 0-100: the observed 30-day churn probability of the score's band x 100, or
    ``100 - health`` where the calibration has no such band (or there is none)."""
    health = np.asarray(health, dtype=float)
    default = np.round(100.0 - health, 2)
    if not calibration:
        return default
    lookup = np.full(10, np.nan)
    for key, value in calibration.items():
        lookup[int(key.split("-")[0]) // 10] = value * 100
    band = np.clip(np.nan_to_num(health // 10, nan=0).astype(int), 0, 9)
    calibrated = lookup[band]
    return np.where(np.isnan(health), np.nan, np.where(np.isnan(calibrated), default, np.round(calibrated, 2)))
