"""Does the health score predict churn? Pure functions over scored history (no database).

The churn label is the scorecard's ``churn`` block (issue 13): ``cancellation`` (cancelled in the
``horizon_days`` after the as-of day, ``churn_labels``) or ``inactivity`` (no activity, optionally of
given event names, in the ``horizon_days`` after the as-of day, ``inactivity_labels``). The backtest
reports, per scorecard version, ROC-AUC and PR-AUC of the health score as a ranking of churners (lower
score = more risk), the top-decile lift, the churn rate per risk level, the lift of the critical band,
a calibration table (observed churn probability per 10-point score band) and the Brier score of that
calibrated probability (scikit-learn metrics). No churner in the label: ``BacktestError``, not a
silent "AUC None". ``backtest_scorecards`` runs every scorecard on its weekly as-of days
(``weekly_rows``; the asset's loop is ``backtest_run``). ``cs_pipeline.health.diagnose`` names the component or override that makes a
scorecard rank churners below chance or its healthy level churn more than its at-risk level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from cs_pipeline.health.scorecard import Churn


class BacktestError(ValueError):
    """The backtest cannot be computed (no churner or no non-churner in the label); says why."""


MIN_CALIBRATION_ROWS = 200
MIN_CALIBRATION_CHURNERS = 10


def roc_auc(risk: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC-AUC of ``risk`` (higher = more likely to churn) for boolean ``labels`` (scikit-learn's
    ``roc_auc_score``; ties count half). None when there are no positives or no negatives."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, np.asarray(risk, dtype=float)))


def churn_labels(scores: pd.DataFrame, churn_dates: pd.Series, horizon_days: int = 30) -> np.ndarray:
    """``churn: {kind: cancellation}``: True where the supplier is cancelled in (as_of_date,
    as_of_date + horizon_days] (days, UTC).

    ``churn_dates``: cancellation day (date or NaT) indexed by supplier_id. Returns a bool array, one
    per row of ``scores`` (``supplier_id``, ``as_of_date``).
    """
    churn = pd.to_datetime(churn_dates.reindex(scores["supplier_id"]).to_numpy())
    day = pd.to_datetime(scores["as_of_date"]).to_numpy()
    with np.errstate(invalid="ignore"):
        return (~pd.isna(churn)) & (churn > day) & (churn <= day + np.timedelta64(horizon_days, "D"))


def inactivity_labels(scores: pd.DataFrame, activity: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """``churn: {kind: inactivity}``: True where the supplier has no active day in (as_of_date,
    as_of_date + horizon_days] (days, UTC).

    Args:
        scores: ``supplier_id``, ``as_of_date`` (one label per row, in order).
        activity: ``supplier_id``, ``activity_date``: the days with activity (already filtered to the
            churn block's ``events`` when it names some); duplicates are fine.

    Returns:
        bool array. Only as-of days whose whole horizon is observed should be passed.
    """
    left = pd.DataFrame({"supplier_id": scores["supplier_id"].astype(str).to_numpy(),
                         "day": pd.to_datetime(scores["as_of_date"]).to_numpy().astype("datetime64[ns]"), "row": np.arange(len(scores))})
    right = pd.DataFrame({"supplier_id": activity["supplier_id"].astype(str).to_numpy(),
                          "next_active": pd.to_datetime(activity["activity_date"]).to_numpy().astype("datetime64[ns]")})
    right = right.drop_duplicates().sort_values("next_active")
    right["day"] = right["next_active"]
    merged = pd.merge_asof(left.sort_values("day"), right, on="day", by="supplier_id", direction="forward",
                           allow_exact_matches=False).sort_values("row")
    gap = (merged["next_active"] - merged["day"]).dt.days.to_numpy(dtype=float, na_value=np.nan)
    return ~(gap <= horizon_days)


def label_churn(scores: pd.DataFrame, churn: Churn, churn_dates: pd.Series | None = None,
                activity: pd.DataFrame | None = None) -> np.ndarray:
    """The label of a scorecard's ``churn`` block for each row of ``scores`` (bool array).

    ``churn_dates`` is needed for ``cancellation``, ``activity`` (``supplier_id``, ``activity_date``,
    and ``event_name`` when ``churn.events`` is set) for ``inactivity``.

    Raises:
        ValueError: the data the label needs was not given.
    """
    if churn.kind == "cancellation":
        if churn_dates is None:
            raise ValueError("churn kind cancellation needs cancellation dates")
        return churn_labels(scores, churn_dates, churn.horizon_days)
    if activity is None:
        raise ValueError("churn kind inactivity needs activity days")
    if churn.events is not None:
        activity = activity.loc[activity["event_name"].isin(churn.events)]
    return inactivity_labels(scores, activity, churn.horizon_days)


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
    pr_auc: float | None = None
    top_decile_lift: float | None = None
    brier: float | None = None
    churn_kind: str = "cancellation"
    horizon_days: int = 30

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration)


def backtest(scores: pd.DataFrame, churn_dates: pd.Series | None = None, horizon_days: int = 30, *,
             labels: np.ndarray | None = None, churn_kind: str = "cancellation") -> BacktestResult:
    """Backtest scored history.

    Args:
        scores: ``supplier_id``, ``as_of_date``, ``health_score`` (0-100, NaN = unscored, dropped),
            ``risk_level``, ``scorecard_version``; only as-of days whose full horizon is observed should
            be passed.
        churn_dates: cancellation day per supplier_id (NaT when not cancelled); used when ``labels`` is
            not given (``churn_labels`` with ``horizon_days``).
        horizon_days: the churn window after each as-of day (days).
        labels: the churn label per row of ``scores`` (bool), e.g. from ``label_churn``.
        churn_kind: recorded in the result ("cancellation" / "inactivity").

    Returns:
        BacktestResult with ``auc`` (ROC-AUC), ``pr_auc`` (average precision), ``top_decile_lift``
        (churn rate of the 10 % lowest scores / overall rate), ``churn_rate_by_level``,
        ``critical_lift``, ``calibration`` (score bands "0-10" ... "90-100" -> observed churn
        probability 0-1, filled only with at least 200 observations and 10 churners) and ``brier``
        (Brier score of that calibrated probability; of the overall churn rate when uncalibrated).

    Raises:
        BacktestError: no scored row, or no churner (or no non-churner) in the label: an AUC would be
            meaningless, so say why instead of reporting "AUC None".
    """
    keep = scores["health_score"].notna().to_numpy()
    scored = scores.loc[keep].reset_index(drop=True)
    version = str(scores["scorecard_version"].iloc[0]) if len(scores) else ""
    if scored.empty:
        raise BacktestError(f"{version}: no scored observation to backtest")
    if labels is None:
        labels = churn_labels(scored, churn_dates, horizon_days)
    else:
        labels = np.asarray(labels, dtype=bool)[keep]
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        what = "no churner" if positives == 0 else "no account that stayed"
        raise BacktestError(f"{version}: {what} among {len(labels)} observations with churn kind {churn_kind} "
                            f"over {horizon_days} days: the label cannot be backtested")
    health = scored["health_score"].to_numpy(dtype=float)
    rate = float(labels.mean())
    by_level = {}
    for level in ("healthy", "at_risk", "critical"):
        mask = (scored["risk_level"] == level).to_numpy()
        by_level[level] = float(labels[mask].mean()) if mask.any() else None
    lift = by_level["critical"] / rate if by_level.get("critical") is not None else None
    calibration: dict[str, float] = {}
    band = np.clip((health // 10).astype(int), 0, 9)
    probability = np.full(len(health), rate)
    if len(scored) >= MIN_CALIBRATION_ROWS and positives >= MIN_CALIBRATION_CHURNERS:
        observed = pd.Series(labels).groupby(band).mean()
        calibration = {f"{b * 10}-{b * 10 + 10}": round(float(v), 4) for b, v in observed.items()}
        probability = observed.reindex(band).to_numpy(dtype=float)
    # Top decile: the 10 % lowest scores (ties broken by order in the data, as a CS team would cut a list).
    decile = max(1, int(np.ceil(0.1 * len(health))))
    riskiest = np.argsort(health, kind="stable")[:decile]
    days = pd.to_datetime(scored["as_of_date"])
    return BacktestResult(
        scorecard_version=version,
        first_day=days.min().date(),
        last_day=days.max().date(),
        observations=len(scored),
        churners=positives,
        auc=float(roc_auc_score(labels, -health)),
        churn_rate=rate,
        churn_rate_by_level=by_level,
        critical_lift=lift,
        calibration=calibration,
        pr_auc=float(average_precision_score(labels, -health)),
        top_decile_lift=float(labels[riskiest].mean() / rate),
        brier=float(brier_score_loss(labels, probability)),
        churn_kind=churn_kind,
        horizon_days=horizon_days,
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


def weekly_rows(history: pd.DataFrame, last_day: date, every_days: int = 7) -> pd.DataFrame:
    """Rows of ``history`` (``as_of_date``) on the as-of days every ``every_days`` days counted back from
    ``last_day`` (inclusive; e.g. the last day minus the churn horizon, so every label is observed)."""
    days = pd.to_datetime(history["as_of_date"])
    keep = (days.dt.date <= last_day) & (((days - pd.Timestamp(last_day)).dt.days % every_days) == 0)
    return history.loc[keep].reset_index(drop=True)
