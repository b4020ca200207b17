"""Train the churn model (issue 26): refusal rules, rolling-origin selection, the deployed fit and the
comparison with the scorecard and plain recency on the same validation rows. Pure (frames in).

Refusals (``ChurnModelError``, one line): fewer than ``MIN_CHURNERS`` (30) churners or fewer than
``MIN_WEEKS`` (4) weekly as-of days whose horizon ended by the training as-of day, or no time split
(fit, calibration and validation weeks each with churners and stayers). A warning under ``WARN_WEEKS`` (8).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import brier_score_loss
from threadpoolctl import threadpool_limits

from cs_pipeline.health.churn_model import (
    ALGORITHMS,
    KEYS,
    MIN_CHURNERS,
    MIN_WEEKS,
    WARN_WEEKS,
    ChurnModel,
    ChurnModelError,
    account_interval,
    calibration_by_decile,
    describe_settings,
    fit_calibrated,
    logistic_coefficients,
    one_thread,
    rolling_folds,
    simplest_within_noise,
    top_decile_lift,
    weighted_auc,
)

WORKERS = 2
"""Threads for the independent validation fits: two (a 2-core machine's cores; on one core they take turns),
not more, since each holds its own copy of its fit rows (memory grows with the workers)."""


@dataclass
class TrainResult:
    """A trained model and its figures.

    ``metrics``: ``algorithm``, ``training_rows``, ``churners``, ``weeks``, ``validation_rows``,
    ``validation_churners``, ``validation_days`` ("first..last"), ``auc``/``auc_ci`` (chosen model,
    pooled rolling-origin validation, 95 % account-bootstrap interval), ``brier``, ``top_decile_lift``,
    ``calibration`` (per predicted decile), ``candidates`` ({algorithm: validation AUC}), ``settings`` (the
    deployed fit's chosen settings in words, ``churn_model.describe_settings``), and
    ``baselines`` ({name: {auc, auc_ci, top_decile_lift}} on the same validation rows)."""

    model: ChurnModel
    metrics: dict
    warnings: list[str] = field(default_factory=list)
    validation: pd.DataFrame | None = None
    """The pooled validation rows: ``row`` (position in the training rows), ``supplier_id``, ``as_of_date``,
    ``label`` (bool), ``probability`` (calibrated, of the chosen algorithm)."""


def _check(labels: np.ndarray, days: list[date], horizon_days: int, as_of: date) -> list[str]:
    churners = int(labels.sum())
    if len(days) < MIN_WEEKS:
        raise ChurnModelError(
            f"churn model refused: {len(days)} weekly as-of day(s) whose {horizon_days}-day horizon ended by {as_of} "
            f"(at least {MIN_WEEKS} needed): load more history or choose a shorter horizon")
    if churners < MIN_CHURNERS:
        raise ChurnModelError(
            f"churn model refused: {churners} churner(s) in {len(labels)} training rows up to {as_of} "
            f"(at least {MIN_CHURNERS} needed): a model on so few churners would only memorise them")
    if len(days) < WARN_WEEKS:
        return [f"only {len(days)} weekly as-of days of history (fewer than {WARN_WEEKS}): the validation "
                f"figures rest on few weeks and may not hold"]
    return []


def _both(y: np.ndarray) -> bool:
    return bool(y.any() and not y.all())


def validate(x: np.ndarray, y: np.ndarray, days: np.ndarray, folds, algorithms: list[str]) -> dict[str, np.ndarray]:
    """Pooled calibrated validation predictions per algorithm over the folds (NaN outside them).

    Args:
        x: inputs, float array (training rows x inputs); y: churn labels (bool, one per row); days: each
            row's as-of day (date objects); folds: ``rolling_folds`` of those days; algorithms: names from
            ``ALGORITHMS``.

    Returns:
        {algorithm: float array of len(y)}: the calibrated probability (0-1) where a fold validates a row.

    The (algorithm, fold) fits are independent: they run on ``WORKERS`` threads (scikit-learn's fits and
    the BLAS under them release the GIL), each fit itself on one thread (``one_thread``), so two cores
    train about twice as fast as one without oversubscribing a shared machine."""
    masks = [tuple(np.isin(days, np.array(part, dtype=object)) for part in (f.fit, f.calibrate, f.validate))
             for f in folds]

    def one(algorithm: str, fit: np.ndarray, cal: np.ndarray, val: np.ndarray) -> np.ndarray:
        # OpenMP's thread count is per thread: a worker thread starts with the machine's default.
        with threadpool_limits(limits=1, user_api="openmp"):
            return fit_calibrated(algorithm, x[fit], y[fit], x[cal], y[cal]).predict_proba(x[val])[:, 1]

    tasks = [(a, m) for m in masks for a in algorithms]
    results = Parallel(n_jobs=min(WORKERS, len(tasks)), prefer="threads")(delayed(one)(a, *m) for a, m in tasks)
    out = {a: np.full(len(y), np.nan) for a in algorithms}
    for (a, (_, _, val)), p in zip(tasks, results):
        out[a][val] = p
    return out


def train(features: pd.DataFrame, labels: np.ndarray, *, horizon_days: int, churn_kind: str, training_as_of: date,
          columns: list[str], catalogue: list[str], algorithm: str = "auto",
          baselines: dict[str, np.ndarray] | None = None, trained_at: datetime | None = None) -> TrainResult:
    """Train, validate and calibrate a churn model.

    Args:
        features: ``churn_features.build_features`` of the training rows (``supplier_id``, ``as_of_date``,
            the inputs), one row per supplier and weekly as-of day whose horizon ended by ``training_as_of``.
        labels: churn label per row (bool), e.g. ``backtest.label_churn``.
        horizon_days, churn_kind: the label's definition (recorded in the model).
        training_as_of: the last day whose data was used (UTC).
        columns, catalogue: what ``build_features`` was given (stored, so scoring builds the same inputs).
        algorithm: ``auto`` (logistic, or gbm when its validation ROC-AUC is higher by more than one standard
            error: ``simplest_within_noise``), ``logistic`` or ``gbm``.
        baselines: risk per row (higher = more likely to churn; NaN = unscored, left out) to compare on
            the same validation rows, e.g. ``{"scorecard ws168": -health_score, "recency": days}``.
        trained_at: the training time (UTC); now when None.

    Returns:
        TrainResult.

    Raises:
        ChurnModelError: the refusals in the module docstring (one line each).
        ValueError: an unknown algorithm.
    """
    if algorithm not in ("auto", *ALGORITHMS):
        raise ValueError(f"unknown algorithm {algorithm!r}: use auto, logistic or gbm")
    with one_thread(), warnings.catch_warnings():
        # SelectKBest's F test on inputs constant in a fold's fit weeks: F = NaN, ranked last (not an error).
        # Set here, in the calling thread, for the fits on worker threads too (warning filters are global).
        warnings.filterwarnings("ignore", message="Features .* are constant", category=UserWarning)
        return _train(features, labels, horizon_days, churn_kind, training_as_of, columns, catalogue, algorithm,
                      baselines, trained_at)


def _train(features, labels, horizon_days, churn_kind, training_as_of, columns, catalogue, algorithm, baselines,
           trained_at) -> TrainResult:
    y = np.asarray(labels, dtype=bool)
    row_days = pd.to_datetime(features["as_of_date"]).dt.date.to_numpy()
    days = sorted(set(row_days))
    notes = _check(y, days, horizon_days, training_as_of)
    x_frame = features.drop(columns=list(KEYS))
    varying = [c for c in x_frame.columns if x_frame[c].nunique(dropna=False) > 1]
    x = x_frame[varying].to_numpy(dtype=float)
    folds = [f for f in rolling_folds(days, horizon_days)
             if all(_both(y[np.isin(row_days, np.array(p, dtype=object))]) for p in (f.fit, f.calibrate))
             and y[np.isin(row_days, np.array(f.validate, dtype=object))].any()]
    if not folds:
        raise ChurnModelError(
            f"churn model refused: no time split of {len(days)} weekly as-of days with a {horizon_days}-day horizon "
            f"has churners in its fit, calibration and validation weeks: load more history")
    tried = list(ALGORITHMS) if algorithm == "auto" else [algorithm]
    predictions = validate(x, y, row_days, folds, tried)
    held = ~np.isnan(predictions[tried[0]])
    scores = {a: round(weighted_auc(y[held], p[held]), 4) for a, p in predictions.items()}
    # The book's model unless gradient boosting is better by more than the noise (one standard error).
    chosen = tried[simplest_within_noise([scores[a] for a in tried], y[held])]
    p, yv = predictions[chosen][held], y[held]
    accounts = features["supplier_id"].to_numpy()[held]
    metrics = {
        "algorithm": chosen, "training_rows": len(y), "churners": int(y.sum()), "weeks": len(days),
        "validation_rows": int(held.sum()), "validation_churners": int(yv.sum()),
        "validation_days": f"{min(row_days[held])}..{max(row_days[held])}",
        "auc": scores[chosen], "auc_ci": account_interval(accounts, yv, p),
        "brier": round(float(brier_score_loss(yv, p)), 4), "top_decile_lift": round(top_decile_lift(yv, p), 2),
        "calibration": calibration_by_decile(yv, p), "candidates": scores, "baselines": {},
    }
    for name, risk in (baselines or {}).items():
        r = np.asarray(risk, dtype=float)[held]
        ok = ~np.isnan(r)
        metrics["baselines"][name] = {
            "auc": round(weighted_auc(yv[ok], r[ok]), 4), "auc_ci": account_interval(accounts, yv, r),
            "top_decile_lift": round(top_decile_lift(yv[ok], r[ok]), 2) if ok.any() else None}
    model = deploy(x, y, row_days, varying, chosen, horizon_days, churn_kind, training_as_of, columns, catalogue,
                   trained_at or datetime.now().astimezone())
    metrics["settings"] = describe_settings(model.estimator.estimator.estimator)  # the deployed fit's choice
    validation = pd.DataFrame({"row": np.flatnonzero(held), "supplier_id": accounts, "as_of_date": row_days[held],
                               "label": yv, "probability": p})
    return TrainResult(model=model, metrics=metrics, warnings=notes, validation=validation)


def deploy(x: np.ndarray, y: np.ndarray, row_days: np.ndarray, inputs: list[str], algorithm: str, horizon_days: int,
           churn_kind: str, training_as_of: date, columns: list[str], catalogue: list[str],
           trained_at: datetime) -> ChurnModel:
    """The model that scores: fitted on every training week but the last horizon's, calibrated on those
    (at least the last week; more weeks back when they hold no churner)."""
    days = sorted(set(row_days))
    k = max(1, -(-horizon_days // 7))
    while True:
        cal = np.isin(row_days, np.array(days[-k:], dtype=object))
        if (_both(y[cal]) and _both(y[~cal])) or k >= len(days) - 1:
            break
        k += 1
    if not (_both(y[cal]) and _both(y[~cal])):
        raise ChurnModelError("churn model refused: no split of the training weeks has churners both to fit and to "
                              "calibrate on")
    estimator = fit_calibrated(algorithm, x[~cal], y[~cal], x[cal], y[cal])
    with np.errstate(all="ignore"):
        medians = {name: float(v) for name, v in zip(inputs, np.nan_to_num(np.nanmedian(x[~cal], axis=0), nan=0.0))}
    base = estimator.estimator.estimator
    coefficients = dict(zip(inputs, logistic_coefficients(base).astype(float))) if algorithm == "logistic" else {}
    version = f"churn-{training_as_of:%Y%m%d}-{algorithm}-{trained_at:%Y%m%dT%H%M%S}"
    return ChurnModel(version=version, algorithm=algorithm, churn_kind=churn_kind, horizon_days=horizon_days,
                      training_as_of=training_as_of, trained_at=trained_at, columns=columns, catalogue=catalogue,
                      inputs=inputs, medians=medians, estimator=estimator, coefficients=coefficients)
