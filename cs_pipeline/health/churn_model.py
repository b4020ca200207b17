"""The churn model (issue 26): training, honest time-split validation, calibration and selection with
scikit-learn. Pure: frames in, a fitted ``ChurnModel`` and its figures out (no database, no Dagster).

Two candidates: the book's model ("Fighting Churn with Data", Gold 2020), a regularised logistic
regression on standardised features (median imputation, ``StandardScaler``, the ``K_GRID`` strongest
inputs by ANOVA F, L2 from ``C_GRID``), and ``HistGradientBoostingClassifier``. Validation is rolling-origin
over weekly as-of days: the last quarter of the weeks is split into up to three blocks; for each block a
model is fitted on the weeks whose churn horizon had ended by the block's first day (so no label in training
looks past the validation day: an account's later rows never reach its own validation week), its settings
chosen (the logistic regression's inputs and penalty, the gradient boosting's number of rounds) and its
probabilities calibrated (``CalibratedClassifierCV`` on a ``FrozenEstimator``, sigmoid, or isotonic with 100+
churners) on the weeks in between (a later fold than the fit), and scored on the block. Every choice, of
settings and of algorithm, follows the one-standard-error rule (``simplest_within_noise``): the richer
candidate (more inputs, weaker penalty, more rounds, gradient boosting over logistic) only when better by
more than the noise. The deployed model is fitted the same way on every training week but the last
horizon's, calibrated on those.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

MIN_CHURNERS = 30
MIN_WEEKS = 4
WARN_WEEKS = 8
ISOTONIC_CHURNERS = 100
RESAMPLES = 999
ALGORITHMS = ("logistic", "gbm")
KEYS = ("supplier_id", "as_of_date")


def one_thread():
    """Run scikit-learn's OpenMP code and the BLAS on one thread: on a shared machine their thread pools spin
    against other processes (a 3,000-row gradient boosting fit: 20 s with the default pool under load, 1 s
    on one thread). Independent fits run side by side instead (``churn_train.validate``). The thread pools are
    found once per process (``_thread_pools``): ``threadpool_limits`` scans every loaded library again on each
    call, about 5 ms, twice per scoring pass."""
    return _thread_pools().limit(limits=1)


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The OpenMP and BLAS thread pools of this process's libraries (scikit-learn's, NumPy's and SciPy's, all
    imported with this module)."""
    return ThreadpoolController()


class ChurnModelError(ValueError):
    """A churn model cannot be trained honestly on this history; the message is one line saying why."""


C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
"""Inverse L2 strengths tried for the logistic regression, chosen on the calibration weeks (later than the
fit, earlier than the validation). Strong regularisation wins on small histories: RavenStack, 4,515 rows
and 110 features, validation ROC-AUC 0.618 at C=1, 0.626 at 0.1, 0.672 at 0.003."""
K_GRID = (3, 10, 30, None)
"""How many inputs the logistic regression keeps, ranked by their univariate ANOVA F on the fit rows
(``SelectKBest(f_classif)``; None: all), chosen with ``C_GRID`` on the calibration weeks by the
one-standard-error rule. With 100+ inputs and few churners most inputs are noise that the L2 penalty only
shrinks: on RavenStack, where churn follows account age, all 110 inputs validate at 0.69 at best, the three
strongest at 0.72; a history where many behaviours matter keeps more of them when they validate better."""
TREES_GRID = (25, 50, 100, 200)
"""How many boosting rounds the gradient boosting keeps, chosen on the calibration weeks by the
one-standard-error rule (``_choose_gbm``), the way ``C_GRID`` and ``K_GRID`` are for the logistic regression:
early stopping on a later fold, not on a random split of the fit rows (which would put an account's later
weeks beside its earlier ones). Fewer trees also cost less to score and to explain (``tree_paths``)."""


def make_estimator(algorithm: str, c: float = 0.1, k: int | None = None):
    """An unfitted scikit-learn estimator: ``logistic`` (inverse L2 strength ``c``, the ``k`` inputs with the
    highest ANOVA F kept, None: all) or ``gbm``."""
    if algorithm == "logistic":
        return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                         ("scale", StandardScaler()), ("select", SelectKBest(f_classif, k="all" if k is None else k)),
                         ("model", LogisticRegression(C=c, max_iter=3000))])
    if algorithm == "gbm":
        # Median imputation first (lossless: every engagement column has its missing indicator), so a column
        # with no value in the fit weeks does not break the binning.
        return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                         ("model", HistGradientBoostingClassifier(learning_rate=0.05, max_iter=200, max_leaf_nodes=15,
                                                                  min_samples_leaf=40, l2_regularization=1.0,
                                                                  early_stopping=False, random_state=0))])
    raise ValueError(f"unknown algorithm {algorithm!r}: use auto, logistic or gbm")


def describe_settings(pipeline: Pipeline) -> str:
    """The settings chosen for a fitted ``make_estimator`` pipeline (``_choose_logistic``, ``_choose_gbm``), in
    words for the comparison table and the asset's metadata: "C 0.003, 3 inputs" / "C 0.1, all 57 inputs"
    (logistic: inverse L2 strength and inputs kept, of those that vary in the training rows) or "25 rounds"
    (gbm: boosting rounds)."""
    model = pipeline.named_steps["model"]
    if isinstance(model, LogisticRegression):
        select = pipeline.named_steps["select"]
        kept = int(select.get_support().sum())
        return f"C {model.C:g}, {'all ' if select.k == 'all' else ''}{kept} inputs"
    return f"{model.n_iter_} rounds"


def logistic_coefficients(pipeline: Pipeline) -> np.ndarray:
    """A fitted ``make_estimator("logistic")``'s coefficient per input (standardised scale; 0 for an input
    the selection step dropped)."""
    coef = np.zeros(pipeline.named_steps["select"].get_support().shape[0])
    coef[pipeline.named_steps["select"].get_support()] = pipeline.named_steps["model"].coef_[0]
    return coef


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Standard error of a ROC-AUC from its class sizes (Hanley and McNeil, Radiology 1982, eq. 2); NaN
    when a class is empty. Rows are taken as independent, so for weekly rows of the same accounts it is a
    lower bound."""
    if positives == 0 or negatives == 0 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (positives * negatives)
    return float(math.sqrt(max(variance, 0.0)))


def simplest_within_noise(scores: list[float], labels: np.ndarray) -> int:
    """Index of the first (simplest) of candidates ordered from simplest to most complex whose ROC-AUC on
    ``labels``' rows is within one standard error (``auc_standard_error``) of the best: the one-standard-error
    rule (Hastie, Tibshirani and Friedman, "The Elements of Statistical Learning", 2009, section 7.10). A
    more complex candidate must beat a simpler one by more than the noise of the comparison."""
    best = int(np.nanargmax(scores))
    labels = np.asarray(labels, dtype=bool)
    se = auc_standard_error(scores[best], int(labels.sum()), int((~labels).sum()))
    if not np.isfinite(se):
        return best
    return next(i for i, score in enumerate(scores) if score >= scores[best] - se)


def _choose_logistic(x_fit: np.ndarray, y_fit: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray) -> Pipeline:
    """The ``make_estimator("logistic", c, k)`` pipeline of ``C_GRID`` x ``K_GRID`` chosen by
    ``simplest_within_noise`` on the calibration rows. Imputation, scaling and the F scores are fitted once
    and shared by every candidate (the median imputation costs more than a logistic fit)."""
    template = make_estimator("logistic")
    prep = Pipeline(template.steps[:2]).fit(x_fit)
    z_fit, z_cal = prep.transform(x_fit), prep.transform(x_cal)
    with np.errstate(divide="ignore", invalid="ignore"):  # inputs constant in these fit weeks: F = NaN, kept last
        selector = template.named_steps["select"].fit(z_fit, y_fit)
    candidates, scores = [], []
    for k in [k for k in K_GRID if k is None or k < x_fit.shape[1]]:
        chosen = copy.copy(selector)
        chosen.k = "all" if k is None else k
        keep = chosen.get_support()
        path = LogisticRegression(max_iter=3000, warm_start=True)
        for c in sorted(C_GRID):
            # Along the regularisation path each fit starts from the previous (stronger-penalty) solution: about
            # 40 % fewer lbfgs iterations. It stops at lbfgs' tolerance from another start than a fit from zero,
            # so coefficients can differ in the third decimal (RavenStack and churnsim_crm: the same held-out
            # figures to the fourth decimal).
            model = copy.deepcopy(path.set_params(C=c).fit(z_fit[:, keep], y_fit)).set_params(warm_start=False)
            candidates.append((chosen, model))
            scores.append(weighted_auc(y_cal, model.predict_proba(z_cal[:, keep])[:, 1]))
    chosen, model = candidates[simplest_within_noise(scores, y_cal)]
    return Pipeline([*prep.steps, ("select", chosen), ("model", model)])


def _choose_gbm(x_fit: np.ndarray, y_fit: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray) -> Pipeline:
    """The ``make_estimator("gbm")`` pipeline with its number of boosting rounds (``TREES_GRID``) chosen by
    ``simplest_within_noise`` on the calibration rows. The most rounds are fitted once and each candidate is
    scored from the staged raw scores (``staged_decision_function``: the first N trees' sum, which is the raw
    score of a fit with ``max_iter`` N, the rounds being deterministic); the chosen number, when fewer, is
    then fitted alone (its trees are the first ones of the larger fit)."""
    template = make_estimator("gbm")
    impute = template.named_steps["impute"].fit(x_fit)
    z_fit = impute.transform(x_fit)
    full = template.named_steps["model"].set_params(max_iter=TREES_GRID[-1]).fit(z_fit, y_fit)
    stages = {trees: raw for trees, raw in enumerate(full.staged_decision_function(impute.transform(x_cal)), 1)
              if trees in TREES_GRID}
    trees = TREES_GRID[simplest_within_noise([weighted_auc(y_cal, stages[t]) for t in TREES_GRID], y_cal)]
    model = full if trees == full.n_iter_ else clone(full).set_params(max_iter=trees).fit(z_fit, y_fit)
    return Pipeline([("impute", impute), ("model", model)])


def fit_calibrated(algorithm: str, x_fit: np.ndarray, y_fit: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray):
    """Fit on the fit rows, then calibrate the frozen model on the (later) calibration rows. For ``logistic``
    the number of inputs (``K_GRID``) and the regularisation (``C_GRID``) are chosen on the calibration rows
    by the one-standard-error rule (``simplest_within_noise``: fewest inputs, then strongest penalty, unless
    a richer model is better by more than the noise); for ``gbm`` the number of boosting rounds
    (``TREES_GRID``, ``_choose_gbm``) the same way."""
    if algorithm == "logistic":
        model = _choose_logistic(x_fit, y_fit, x_cal, y_cal)
    elif algorithm == "gbm":
        model = _choose_gbm(x_fit, y_fit, x_cal, y_cal)
    else:
        model = make_estimator(algorithm).fit(x_fit, y_fit)
    method = "isotonic" if int(y_cal.sum()) >= ISOTONIC_CHURNERS else "sigmoid"
    return CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(x_cal, y_cal)


def weighted_auc(labels: np.ndarray, risk: np.ndarray, weights: np.ndarray | None = None,
                 group: np.ndarray | None = None) -> float:
    """ROC-AUC (ties count half) with row weights, in O(n) after one sort; NaN when a class is empty.
    ``group``: the rank of each row's risk among the distinct risks (``np.unique`` inverse), when known."""
    labels = np.asarray(labels, dtype=bool)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    if group is None:
        group = np.unique(np.asarray(risk, dtype=float), return_inverse=True)[1]
    pos = np.bincount(group, weights=weights * labels)
    neg = np.bincount(group, weights=weights * ~labels)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def account_interval(accounts: np.ndarray, labels: np.ndarray, risk: np.ndarray, seed: int = 26,
                     resamples: int = RESAMPLES) -> list[float] | None:
    """95 % percentile interval of ROC-AUC(``risk``) resampling accounts (all rows of a drawn account come
    along: an account's weekly rows are not independent), ``scipy.stats.bootstrap`` with a fixed seed.
    NaN risks (unscored rows) are left out. None when it cannot be computed."""
    ok = ~np.isnan(np.asarray(risk, dtype=float))
    codes = pd.factorize(pd.Series(np.asarray(accounts)[ok]))[0]
    labels, risk = np.asarray(labels, dtype=bool)[ok], np.asarray(risk, dtype=float)[ok]
    if len(codes) == 0 or labels.all() or not labels.any():
        return None
    n = codes.max() + 1
    group = np.unique(risk, return_inverse=True)[1]

    def statistic(idx):
        return weighted_auc(labels, risk, np.bincount(idx.astype(int), minlength=n)[codes], group)

    try:
        res = bootstrap((np.arange(n),), statistic, vectorized=False, n_resamples=resamples, method="percentile",
                        random_state=np.random.default_rng(seed))
    except ValueError:
        return None
    low, high = res.confidence_interval
    return None if not (np.isfinite(low) and np.isfinite(high)) else [round(float(low), 4), round(float(high), 4)]


def top_decile_lift(labels: np.ndarray, risk: np.ndarray) -> float:
    """Churn rate of the 10 % riskiest rows / overall churn rate."""
    labels = np.asarray(labels, dtype=bool)
    k = max(1, math.ceil(0.1 * len(labels)))
    riskiest = np.argsort(-np.asarray(risk, dtype=float), kind="stable")[:k]
    return float(labels[riskiest].mean() / labels.mean())


def calibration_by_decile(labels: np.ndarray, probability: np.ndarray) -> list[dict]:
    """Per predicted-probability decile: rows, mean predicted and observed churn rate (0-1)."""
    frame = pd.DataFrame({"y": np.asarray(labels, dtype=float), "p": probability})
    frame["decile"] = pd.qcut(frame["p"].rank(method="first"), 10, labels=False) if len(frame) >= 10 else 0
    out = frame.groupby("decile").agg(rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean"))
    return [{"decile": int(d) + 1, "rows": int(r.rows), "predicted": round(float(r.predicted), 4),
             "observed": round(float(r.observed), 4)} for d, r in out.iterrows()]


@dataclass
class Fold:
    """One rolling origin: fit weeks, calibration weeks (later) and validation weeks (later still)."""

    fit: list[date]
    calibrate: list[date]
    validate: list[date]


def rolling_folds(days: list[date], horizon_days: int, blocks: int = 3) -> list[Fold]:
    """The rolling origins over sorted weekly as-of ``days``: the last quarter of the weeks (at least
    one) in up to ``blocks`` blocks; each block's fit weeks are those whose horizon ended by its first day
    (``day + horizon_days <= first``), its calibration weeks the ones in between (the last fit week when
    none is). Folds without fit or calibration weeks are left out."""
    v = max(1, round(len(days) / 4))
    out = []
    for block in np.array_split(np.array(days[-v:], dtype=object), min(blocks, v)):
        start = block[0]
        fit = [d for d in days if (start - d).days >= horizon_days]
        calibrate = [d for d in days if d not in fit and d < start]
        if not calibrate and len(fit) > 1:
            calibrate = [fit.pop()]
        if fit and calibrate:
            out.append(Fold(fit, calibrate, list(block)))
    return out


@dataclass
class ChurnModel:
    """A trained, calibrated churn model and what it needs to build its inputs.

    ``predict(features)`` gives the calibrated churn probability (0-1) within ``horizon_days`` days of
    ``churn_kind``; ``features`` is ``churn_features.build_features`` output with ``columns`` and
    ``catalogue``."""

    version: str
    algorithm: str
    churn_kind: str
    horizon_days: int
    training_as_of: date
    trained_at: datetime
    columns: list[str]
    catalogue: list[str]
    inputs: list[str]
    medians: dict[str, float]
    estimator: object
    coefficients: dict[str, float] = field(default_factory=dict)

    def matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The model's input matrix from a feature frame (absent columns all-missing)."""
        return features.reindex(columns=self.inputs).to_numpy(dtype=float)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per row (float 0-1)."""
        if not len(features):
            return np.zeros(0)
        with one_thread():
            return self.estimator.predict_proba(self.matrix(features))[:, 1]


def _groups(inputs: list[str]) -> dict[str, list[int]]:
    """Input positions per explained quantity: a column with its missing indicator."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(inputs):
        groups.setdefault(name.removesuffix("__missing"), []).append(i)
    return groups
