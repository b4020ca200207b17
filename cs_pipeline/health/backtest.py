"""Does the health score predict churn? Pure functions over scored history (no database).

The churn label is the scorecard's ``churn`` block (issue 13): ``cancellation`` (cancelled in the
``horizon_days`` after the as-of day, ``churn_labels``) or ``inactivity`` (no activity, optionally of
given event names, in the ``horizon_days`` after the as-of day, ``inactivity_labels``). The backtest
reports, per scorecard version, ROC-AUC and PR-AUC of the health score as a ranking of churners (lower
score = more risk), the top-decile lift, the churn rate per risk level, the lift of the critical band,
a calibration table (observed churn probability per 10-point score band) and the Brier score of that
calibrated probability (scikit-learn metrics). No churner in the label: ``BacktestError``, not a
silent "AUC None". ``diagnose`` names the component or override that makes a scorecard rank churners
below chance or its healthy level churn more than its at-risk level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from cs_pipeline.health.scorecard import Churn, Scorecard


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


def problems(result: BacktestResult) -> list[str]:
    """Why a backtest result says the scorecard misleads: ROC-AUC below 0.5, or the healthy level
    churning more than the at-risk level. Empty when neither."""
    out = []
    if result.auc is not None and result.auc < 0.5:
        out.append(f"ranks churners below chance (ROC-AUC {result.auc:.3f})")
    healthy, at_risk = result.churn_rate_by_level.get("healthy"), result.churn_rate_by_level.get("at_risk")
    if healthy is not None and at_risk is not None and healthy > at_risk:
        out.append(f"its healthy level churns more than its at_risk level ({healthy:.1%} against {at_risk:.1%})")
    return out


INVERTED_OVERRIDE_P = 0.01
"""Significance (one-sided Fisher exact test) for "an override's accounts churn more than the others"."""


def inverted_overrides(engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray,
                       health: np.ndarray, p_value: float = INVERTED_OVERRIDE_P) -> list[str]:
    """Overrides whose accounts score higher on average than the others yet churn significantly more:
    the profile rewards exactly the accounts most at risk (an onboarding profile, as WS-168 carried
    before issue 13, on data where new accounts churn most), even when the overall ROC-AUC stays above
    0.5.

    Args:
        engagement: the scored rows (``score_suppliers`` input), in the order of ``labels``.
        scorecard: the scorecard whose overrides are checked.
        labels: churn label per row (bool).
        health: health score per row (0-100, NaN = unscored, left out).
        p_value: the one-sided Fisher exact test (scipy) on churners / non-churners inside against
            outside the override must be below this. Rows (account-days) are counted as independent,
            which overstates the evidence a little; hence the strict default 0.01.

    Returns:
        One sentence per such override, e.g. "override 'onboarding' scores its accounts higher (86.1
        against 84.4) yet they churn more (3.3 % against 1.2 %, Fisher p=1e-09)". Empty when none.
    """
    from scipy.stats import fisher_exact

    from cs_pipeline.health.scoring import (
        _segments,  # the same segment matching as the scorer
    )

    labels = np.asarray(labels, dtype=bool)
    health = np.asarray(health, dtype=float)
    ok = ~np.isnan(health)
    segments = _segments(engagement.reset_index(drop=True), scorecard)
    out = []
    for i, override in enumerate(scorecard.overrides):
        inside, outside = (segments == i) & ok, (segments != i) & ok
        if not inside.any() or not outside.any():
            continue
        s_in, s_out = health[inside].mean(), health[outside].mean()
        c_in, c_out = labels[inside], labels[outside]
        if s_in <= s_out or c_in.mean() <= c_out.mean():
            continue
        table = [[int(c_in.sum()), int((~c_in).sum())], [int(c_out.sum()), int((~c_out).sum())]]
        p = float(fisher_exact(table, alternative="greater").pvalue)
        if p < p_value:
            out.append(f"override {override.name!r} scores its accounts higher ({s_in:.1f} against {s_out:.1f}) "
                       f"yet they churn more ({c_in.mean():.1%} against {c_out.mean():.1%}, Fisher p={p:.1g})")
    return out


def misleading_warning(result: BacktestResult, engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray,
                       score) -> str | None:
    """The ``scorecards_rank_churners`` warning for one backtest: what is wrong (``problems``, and
    ``inverted_overrides``) and the override(s) or component(s) that drive it (``diagnose``, at most
    3), or None when nothing is wrong.

    Arguments as ``diagnose``; ``result`` is the backtest of those rows.
    """
    why = problems(result)
    if scorecard.overrides:
        why += inverted_overrides(engagement, scorecard, labels, np.asarray(score(engagement, scorecard), dtype=float))
    if not why:
        return None
    drivers = diagnose(engagement, scorecard, labels, score)
    return f"{scorecard.version} {' and '.join(why)}; driven by: " + \
        ("; ".join(drivers[:3]) if drivers else "no single component or override")


def diagnose(engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray, score) -> list[str]:
    """Name the override(s) and component(s) that drive a scorecard's poor ranking of churners.

    Each override is removed in turn (its accounts scored by the default profile), and each component
    is removed in turn (weight 0); what raises the ROC-AUC the most drives the problem. An override is
    also named when its accounts score higher on average yet churn more than the others (as the WS-168
    onboarding profile does when new accounts churn most).

    Args:
        engagement: the rows that were scored (``score_suppliers`` input), in the order of ``labels``.
        scorecard: the scorecard backtested.
        labels: churn label per row (bool).
        score: ``f(engagement, scorecard) -> health scores`` (NaN = unscored), e.g. a wrapper of
            ``score_suppliers`` with the seasonal index.

    Returns:
        Sentences, most harmful first, e.g. "override 'onboarding' (lifecycle_stage in [onboarding]):
        its accounts score 80.0 on average against 64.9 yet churn 21.0 % against 4.0 %; without it
        ROC-AUC 0.48 -> 0.60". Empty when nothing helps.
    """
    labels = np.asarray(labels, dtype=bool)

    def auc_of(health: np.ndarray) -> float | None:
        ok = ~np.isnan(health)
        if labels[ok].all() or not labels[ok].any():
            return None
        return float(roc_auc_score(labels[ok], -health[ok]))

    base = np.asarray(score(engagement, scorecard), dtype=float)
    base_auc = auc_of(base)
    if base_auc is None:
        return []
    found: list[tuple[float, str]] = []
    data = scorecard.model_dump()
    for i, override in enumerate(scorecard.overrides):
        without = Scorecard.model_validate(data | {"overrides": [o for j, o in enumerate(data["overrides"]) if j != i]})
        auc = auc_of(np.asarray(score(engagement, without), dtype=float))
        from cs_pipeline.health.scoring import (
            _segments,  # the same segment matching as the scorer
        )
        inside = _segments(engagement.reset_index(drop=True), scorecard) == i
        ok = ~np.isnan(base)
        detail = ""
        if (inside & ok).any() and (~inside & ok).any():
            s_in, s_out = base[inside & ok].mean(), base[~inside & ok].mean()
            c_in, c_out = labels[inside & ok].mean(), labels[~inside & ok].mean()
            detail = (f"its accounts score {s_in:.1f} on average against {s_out:.1f} and churn {c_in:.1%} "
                      f"against {c_out:.1%}; ")
            inverted = s_in > s_out and c_in > c_out
        else:
            inverted = False
        gain = (auc - base_auc) if auc is not None else 0.0
        if gain > 0.005 or inverted:
            when = ", ".join(f"{k} in [{', '.join(v)}]" for k, v in override.when.items())
            found.append((gain + (1.0 if inverted else 0.0),
                          f"override {override.name!r} ({override.name} profile: {when}): {detail}"
                          f"without it ROC-AUC {base_auc:.3f} -> {auc if auc is None else round(auc, 3)}"))
    for j, component in enumerate(scorecard.components):
        if len(scorecard.components) < 2 or component.weight == 0:
            continue
        # Weight 0 (a weight-0 component is not scored, so its rule only has to validate).
        zero = {"weight": 0.0, "rule": {"type": "linear", "lower": 0, "upper": 1}}
        changed = [dict(c, **zero) if k == j else c for k, c in enumerate(data["components"])]
        changed_overrides = [dict(o, components={n: c for n, c in o["components"].items() if n != component.name})
                             for o in data["overrides"]]
        without = Scorecard.model_validate(data | {"components": changed, "overrides": changed_overrides})
        auc = auc_of(np.asarray(score(engagement, without), dtype=float))
        if auc is not None and auc - base_auc > 0.005:
            found.append((auc - base_auc, f"component {component.name!r} ({component.metric}): without it "
                                          f"ROC-AUC {base_auc:.3f} -> {auc:.3f}"))
    return [text for _, text in sorted(found, key=lambda f: -f[0])]


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
