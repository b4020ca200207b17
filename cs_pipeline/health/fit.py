"""Fitted scorecards (issue 13, the analogue of a vendor "scorecard optimizer"): pure functions.

``fit_scorecard`` fits a scorecard's component weights to its churn label with scikit-learn logistic
regression on the component points, with a time-based split: fit on the earlier as-of days, report the
ROC-AUC of the old and the new version on the later ones (never the same days). The new version keeps
every rule (for percentile rules nothing but the weight changes; step tiers are rescaled with their
weight) and its weights sum to 100, so every score stays explainable as points per component.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cs_pipeline.health.backtest import BacktestError
from cs_pipeline.health.scorecard import Scorecard
from cs_pipeline.health.scoring import score_suppliers


@dataclass
class FitResult:
    """A fitted scorecard and its held-out-in-time ROC-AUC against the scorecard it came from."""

    scorecard: Scorecard
    old_auc: float
    new_auc: float
    fit_days: tuple[date, date]
    test_days: tuple[date, date]
    fit_rows: int
    test_rows: int
    fit_auc: float | None = None
    """ROC-AUC of the new version on the fit days (in-sample): to choose between fits without looking at
    the held-out days."""
    as_of_days: int = 0
    """Distinct as-of days of the fit and held-out rows together (weekly in ``fit_run``)."""
    fit_as_of_days: int = 0
    """Of those, the as-of days the weights were fitted on (the rest are held out)."""

    @property
    def short_history(self) -> bool:
        """True below ``MIN_AS_OF_DAYS`` as-of days: the weights and the held-out ROC-AUC are too noisy to
        trust (issue 29: a 3-day fit said nothing)."""
        return self.as_of_days < MIN_AS_OF_DAYS


#: The fewest as-of days (weekly: about two months plus the churn horizon) before a fit is worth reading.
#: With a third held out, 8 days leave 5 to fit and 3 to test; fewer, and one week's churners decide the
#: held-out ROC-AUC.
MIN_AS_OF_DAYS = 8


def _fractions(scores: pd.DataFrame, scorecard: Scorecard) -> np.ndarray:
    """Per row and component, points / max points (0-1; NaN where the component is missing)."""
    cols = []
    for c in scorecard.components:
        pts = scores[f"{c.name}_points"].to_numpy(dtype=float)
        top = scores[f"{c.name}_max_points"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.append(np.where(top > 0, pts / top, np.nan))
    return np.column_stack(cols)


def _rescaled(scorecard: Scorecard, weights: np.ndarray, version: str) -> Scorecard:
    data = scorecard.model_dump()
    factor = {}
    for c, w in zip(data["components"], weights):
        factor[c["name"]] = w / c["weight"] if c["weight"] > 0 else 0.0
        c["weight"] = float(w)
        if c["rule"]["type"] == "step":
            _scale_step(c["rule"], factor[c["name"]])
    for o in data["overrides"]:
        for name, change in o["components"].items():
            if change.get("weight") is not None:
                change["weight"] = round(min(100.0, change["weight"] * factor[name]), 2)
            if change.get("rule") and change["rule"]["type"] == "step":
                _scale_step(change["rule"], factor[name])
    data["version"] = version
    data["source"] = f"fitted from {scorecard.version} ({scorecard.source})".strip()
    return Scorecard.model_validate(data)


def _scale_step(rule: dict, factor: float) -> None:
    for tier in rule["tiers"]:
        tier["points"] = round(tier["points"] * factor, 4)
    rule["otherwise"] = round(rule["otherwise"] * factor, 4)


def _hundred(raw: np.ndarray) -> np.ndarray:
    """Weights proportional to ``raw``, rounded to 0.01, summing to exactly 100."""
    w = np.round(100.0 * raw / raw.sum(), 2)
    w[int(np.argmax(w))] += round(100.0 - float(w.sum()), 2)
    return np.round(w, 2)


def fit_scorecard(engagement: pd.DataFrame, labels: np.ndarray, scorecard: Scorecard, version: str,
                  seasonal: pd.DataFrame | None = None, test_share: float = 1 / 3) -> FitResult:
    """Fit ``scorecard``'s component weights to ``labels``.

    Args:
        engagement: rows of marts.supplier_engagement_daily (as ``score_suppliers`` takes them) on
            as-of days whose churn horizon ended by the fit's as-of day: only history up to that day.
        labels: churn label per row of ``engagement`` (bool), from the scorecard's ``churn`` block.
        scorecard: the scorecard to refit; its rules are kept.
        version: the new scorecard's version.
        seasonal: the seasonal index (``seasonal_index``) when the scorecard uses it.
        test_share: the share of the latest as-of days held out for the ROC-AUC comparison.

    Returns:
        FitResult: the new scorecard (weights sum to 100, 0.01 precision; a component the regression
        finds protective-free, or whose points are the same for every row on the fit days, gets weight 0) and the held-out ROC-AUC of the old and the new version.

    Raises:
        BacktestError: fewer than 2 as-of days, or no churner (or no non-churner) in the fit or the
            held-out days.
    """
    labels = np.asarray(labels, dtype=bool)
    days = pd.to_datetime(engagement["as_of_date"]).dt.date.to_numpy()
    distinct = np.unique(days)
    if len(distinct) < 2:
        raise BacktestError("fitting needs at least 2 as-of days (fit on earlier days, test on later ones)")
    cut = distinct[max(1, int(round(len(distinct) * (1 - test_share))))] if len(distinct) > 2 else distinct[1]
    fit_rows, test_rows = days < cut, days >= cut
    scores = score_suppliers(engagement, scorecard, seasonal=seasonal)
    ok = scores["scored"].to_numpy(dtype=bool)
    x = _fractions(scores, scorecard)
    fit_mask, test_mask = fit_rows & ok, test_rows & ok
    for name, mask in (("fit", fit_mask), ("held-out", test_mask)):
        positives = int(labels[mask].sum())
        if positives == 0 or positives == int(mask.sum()):
            raise BacktestError(f"{scorecard.version}: no churner or no account that stayed in the {name} days")
    with warnings.catch_warnings():  # a component with no data at all on the fit days: mean NaN -> 0
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(np.where(fit_mask[:, None], x, np.nan), axis=0)
    x = np.where(np.isnan(x), np.nan_to_num(means, nan=0.0), x)
    # A component with the same points for every account on the fit days cannot rank anyone: weight 0
    # (left in, the regression gives it a share of the intercept, i.e. free points for everyone).
    varying = np.ptp(x[fit_mask], axis=0) > 1e-9
    protective = np.zeros(x.shape[1])
    if varying.any():
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x[fit_mask][:, varying], labels[fit_mask])
        protective[varying] = np.clip(-model.coef_[0], 0.0, None)  # more points must mean less churn
    if protective.sum() <= 0:
        protective = np.array([c.weight for c in scorecard.components], dtype=float)
    new = _rescaled(scorecard, _hundred(protective), version)
    test_engagement = engagement.loc[test_rows]
    old_health = scores["health_score"].to_numpy(dtype=float)[test_rows]
    new_health = score_suppliers(test_engagement, new, seasonal=seasonal)["health_score"].to_numpy(dtype=float)
    y = labels[test_rows]

    def auc(health):
        keep = ~np.isnan(health)
        return float(roc_auc_score(y[keep], -health[keep]))

    fitted = score_suppliers(engagement.loc[fit_rows], new, seasonal=seasonal)["health_score"].to_numpy(dtype=float)
    keep = ~np.isnan(fitted)
    fit_auc = float(roc_auc_score(labels[fit_rows][keep], -fitted[keep]))
    return FitResult(new, auc(old_health), auc(new_health), (distinct[0], distinct[distinct < cut][-1]),
                     (cut, distinct[-1]), int(fit_mask.sum()), int(test_mask.sum()), fit_auc,
                     as_of_days=len(distinct), fit_as_of_days=int((distinct < cut).sum()))


def scorecard_yaml(scorecard: Scorecard) -> str:
    """The scorecard as YAML that ``load_scorecard`` reads back (defaults left out)."""
    import yaml

    return yaml.safe_dump(scorecard.model_dump(exclude_defaults=True, exclude_none=True), sort_keys=False,
                          allow_unicode=True)
