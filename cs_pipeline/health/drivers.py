"""Drivers and trend of health scores: pure, vectorised functions (split from ``scoring``, which calls
them). ``_drivers`` words the components that lost the most points, ``_missing`` names the missing ones,
``add_history`` adds the 7/30-day deltas, the trend and the previous risk level from stored scores;
``explain_churn`` gives the churn model's probability and its top reasons in words per row (issue 26), over
the whole frame (``churn_reasons``: the reasons alone).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cs_pipeline.health.scorecard import Component, Scorecard

if TYPE_CHECKING:
    from cs_pipeline.health.churn_model import ChurnModel

# --- drivers ---------------------------------------------------------------------------------------


_UNIT_SCALE = {"percent": 100.0, "days": 1.0, "count": 1.0, "ratio": 10.0, "score": 10.0}


#: The metric code of a metric without a value (a never-logged-in supplier's login recency).
NO_VALUE = 9999


def _metric_code(values: np.ndarray, unit: str) -> np.ndarray:
    """Integer bucket of a metric as it is printed (percent: whole %, days/count: whole, else 0.1);
    ``NO_VALUE`` for a null metric (it is worded apart, never as 0)."""
    v = np.asarray(values, dtype=float)
    code = np.clip(np.rint(np.nan_to_num(v, nan=0.0) * _UNIT_SCALE[unit]), 0, NO_VALUE - 1).astype(np.int64)
    return np.where(np.isnan(v), NO_VALUE, code)


def _phrase(component: Component, code: int, points: int, weight: int) -> str:
    if code == NO_VALUE:
        words = component.phrase_when_none or component.phrase.replace("{metric}", "no data")
        return f"{words}: {points} of {weight} points"
    if component.unit == "percent":
        shown = f"{code}%"
    elif component.unit in ("days", "count"):
        shown = str(code)
    else:
        shown = f"{code / 10:.1f}"
    return f"{component.phrase.replace('{metric}', shown)}: {points} of {weight} points"


def _drivers(components: list[Component], lost: np.ndarray, metrics: np.ndarray, points: np.ndarray,
             weights: np.ndarray, top: int = 2) -> np.ndarray:
    """The ``top`` components that lost the most points, as words, per row (object array).

    ``lost`` (n x k, -1 for missing components) is overwritten.

    Rows are reduced to integer codes (component, printed metric, points, weight); only the distinct
    combinations are formatted, so the cost is one sort of integers, not one string per row.
    """
    n, k = lost.shape
    if n == 0 or k == 0:
        return np.full(n, "", dtype=object)
    rows = np.arange(n)
    # One integer per row and component: (component, printed metric, points, weight).
    code_matrix = np.empty((n, k), dtype=np.int64)
    for j, component in enumerate(components):
        code_matrix[:, j] = (((j * 10000 + _metric_code(metrics[:, j], component.unit)) * 128
                              + np.clip(np.rint(np.nan_to_num(points[:, j])), 0, 127).astype(np.int64)) * 128
                             + np.clip(np.rint(weights[:, j]), 0, 127).astype(np.int64))
    remaining = lost  # consumed in place: the caller does not need it afterwards
    codes = []
    for _ in range(min(top, k)):
        col = np.argmax(remaining, axis=1)  # first of equal losses: component order breaks ties
        picked = remaining[rows, col]
        codes.append(np.where(picked > 0.005, code_matrix[rows, col], -1))
        remaining[rows, col] = -np.inf
    # Factorise each rank's codes, then the combination (hash based, no sort of the rows).
    combined = np.zeros(n, dtype=np.int64)
    uniques = []
    for code in codes:
        inverse, values = pd.factorize(code)
        uniques.append(values)
        combined = combined * (len(values) + 1) + inverse
    inverse, unique_combined = pd.factorize(combined)
    # Words for each distinct single code, then for each distinct combination of ranks.
    words = []
    for values in uniques:
        texts = []
        for code in values.tolist():
            if code < 0:
                texts.append("")
                continue
            wgt, rest = code % 128, code // 128
            pts, rest = rest % 128, rest // 128
            texts.append(_phrase(components[rest // 10000], rest % 10000, pts, wgt))
        words.append(np.array(texts, dtype=object))
    positions = []
    remainder = np.asarray(unique_combined, dtype=np.int64)
    for values in reversed(uniques):
        remainder, position = np.divmod(remainder, len(values) + 1)
        positions.append(position)
    positions.reverse()
    texts = words[0][positions[0]]
    for rank in range(1, len(words)):
        extra = words[rank][positions[rank]]
        texts = np.where(extra == "", texts, texts + "; " + extra)
    return np.array(texts, dtype=object)[inverse]


def _missing(names: list[str], missing: np.ndarray) -> np.ndarray:
    """Comma-separated names of the missing components per row (object array; "" when none)."""
    n = missing.shape[0]
    if n == 0:
        return np.full(0, "", dtype=object)
    bits = (missing.astype(np.int64) << np.arange(len(names), dtype=np.int64)).sum(axis=1)
    inverse, unique_bits = pd.factorize(bits)
    texts = [",".join(name for j, name in enumerate(names) if b >> j & 1) for b in unique_bits]
    return np.array(texts, dtype=object)[inverse]


# --- history ---------------------------------------------------------------------------------------


#: The days before a scored day ``add_history`` reads the stored score of: 7 and 30 days (the deltas), 1 day
#: (the previous risk level).
HISTORY_OFFSETS_DAYS = {"7d": 7, "30d": 30, "prev": 1}


def history_days(days: list[date]) -> list[date]:
    """The days whose stored scores ``add_history`` reads for scored ``days`` (``HISTORY_OFFSETS_DAYS`` before
    each), sorted, those among ``days`` left out (the new scores win): 3 days for a daily run, not 31."""
    scored = set(days)
    return sorted({day - timedelta(days=offset) for day in scored for offset in HISTORY_OFFSETS_DAYS.values()} - scored)


def add_history(scores: pd.DataFrame, history: pd.DataFrame, scorecard: Scorecard) -> pd.DataFrame:
    """Add ``score_delta_7d``, ``score_delta_30d`` (points), ``trend`` and ``previous_risk_level``.

    Args:
        scores: output of ``score_suppliers`` (any days).
        history: stored rows (``supplier_id``, ``as_of_date``, ``health_score``, ``risk_level``) of other
            days (at least those of ``history_days``); rows of the days in ``scores`` are ignored (the new
            scores win).
        scorecard: gives the trend thresholds (``improving_at`` / ``declining_at`` on the 7-day delta).

    Returns:
        ``scores`` with the four columns added. ``trend`` is improving / stable / declining, or None
        when there is no score 7 days earlier; ``previous_risk_level`` is the day before's level.
    """
    keys = ["supplier_id", "as_of_date"]
    new_days = set(pd.to_datetime(scores["as_of_date"]).dt.date)
    old = history.loc[~pd.to_datetime(history["as_of_date"]).dt.date.isin(new_days), keys + ["health_score", "risk_level"]] \
        if len(history) else pd.DataFrame(columns=keys + ["health_score", "risk_level"])
    combined = pd.concat([old, scores[keys + ["health_score", "risk_level"]]], ignore_index=True)
    combined["as_of_date"] = pd.to_datetime(combined["as_of_date"])
    lookup = combined.set_index(keys)
    lookup = lookup[~lookup.index.duplicated(keep="last")]
    out = scores.copy()
    when = pd.to_datetime(out["as_of_date"])
    result = {}
    for label, days in HISTORY_OFFSETS_DAYS.items():
        idx = pd.MultiIndex.from_arrays([out["supplier_id"].to_numpy(), when - pd.Timedelta(days=days)])
        result[label] = lookup.reindex(idx)
    out["score_delta_7d"] = np.round(out["health_score"].to_numpy() - result["7d"]["health_score"].to_numpy(dtype=float), 2)
    out["score_delta_30d"] = np.round(out["health_score"].to_numpy() - result["30d"]["health_score"].to_numpy(dtype=float), 2)
    delta = out["score_delta_7d"].to_numpy(dtype=float)
    trend = np.where(delta >= scorecard.trend.improving_at, "improving",
                     np.where(delta <= scorecard.trend.declining_at, "declining", "stable")).astype(object)
    trend[np.isnan(delta)] = None
    out["trend"] = trend
    out["previous_risk_level"] = result["prev"]["risk_level"].to_numpy(dtype=object)
    return out


# --- the churn model's reasons in words (issue 26) -------------------------------------------------


MIN_REASON = 0.005
"""A reason adds at least half a point of churn probability (0-1 scale); smaller ones are not shown."""

SIMILAR = 0.05
"""A value equal to the training median or within this relative distance of it (on the metric's own scale)
is "as for similar accounts": it is never given as a reason (``explain_churn``), whatever the model credits
it with."""


def _against_median(value: np.ndarray, median: np.ndarray, scaled: np.ndarray) -> tuple[np.ndarray, ...]:
    """(value, median, relative change (value - median) / |median|, similar) back on the metric's own scale
    (``expm1`` where ``scaled``: the log1p-scaled counts), elementwise (NaN where unknown; similar: equal to
    the median, a median of 0 included, or within ``SIMILAR`` of it)."""
    val, med = np.asarray(value, dtype=float), np.asarray(median, dtype=float)
    with np.errstate(all="ignore"):
        val = np.where(scaled, np.sign(val) * np.expm1(np.abs(val)), val)
        med = np.where(scaled, np.sign(med) * np.expm1(np.abs(med)), med)
        change = (val - med) / np.abs(med)
        return val, med, change, (val == med) | (np.abs(change) < SIMILAR)


def reason_words(names: list[str], described: list[str], medians: np.ndarray, rates: np.ndarray, which: np.ndarray,
                 value: np.ndarray, missing: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """One churn-model reason per row in words, vectorised over the rows (object array):
    "events in the last 30 days 80 % below similar accounts: +12 % churn risk".

    Args:
        names: the explained quantities (engagement columns, ``feat__<feature>__<kind>``).
        described: ``churn_features.describe_feature`` of each name.
        medians: the training median of each name (the model's scale; NaN when unknown).
        rates: per name, True when it is used as it is (``RATE_COLUMNS``), False when log1p-scaled.
        which: per row, the index in ``names`` of its reason.
        value: per row, the quantity's value on the model's scale (NaN when missing).
        missing: per row, whether the quantity's missing indicator is set.
        delta: per row, the churn probability (0-1) the quantity adds against the median.

    The words of the model's reasons: "<quantity> unknown" when missing; back on the metric's own scale
    (``expm1``), "as for similar accounts" when equal to the median or within 5 % of it (``SIMILAR``),
    "<value> against 0|none for similar accounts" when the median is 0 or unknown, else "N % below|above
    similar accounts"; then ": +P % churn risk".
    """
    n = len(which)
    if n == 0:
        return np.zeros(0, dtype=object)
    val, med, change, alike = _against_median(value, np.asarray(medians, dtype=float)[which],
                                              ~np.asarray(rates, dtype=bool)[which])
    unknown = np.asarray(missing, dtype=bool) | np.isnan(val)
    similar = ~unknown & alike
    no_median = ~unknown & ~similar & (np.isnan(med) | (med == 0))
    differs = ~unknown & ~no_median & ~similar
    text = np.asarray(described, dtype=object)[which]
    words = np.empty(n, dtype=object)
    words[unknown] = text[unknown] + " unknown"
    if no_median.any():
        shown = pd.Series(val[no_median]).map("{:.3g}".format).to_numpy(dtype=object)
        against = np.where(med[no_median] == 0, " against 0 for similar accounts", " against none for similar accounts")
        words[no_median] = text[no_median] + " " + shown + against
    words[similar] = text[similar] + " as for similar accounts"
    if differs.any():
        percent = np.char.mod("%.0f", np.abs(change[differs]) * 100).astype(object)
        side = np.where(change[differs] < 0, " % below similar accounts", " % above similar accounts").astype(object)
        words[differs] = text[differs] + " " + percent + side
    return words + ": +" + np.char.mod("%.0f", np.asarray(delta, dtype=float) * 100).astype(object) + " % churn risk"


def churn_reasons(model: ChurnModel, features: pd.DataFrame, top: int = 3) -> list[str]:
    """``explain_churn``'s reasons alone: per row of ``features``, a string.

    Raises:
        ValueError: a ``gbm`` model that this version cannot explain (``tree_paths.PathAttributions.of``)."""
    return explain_churn(model, features, top)[1]


def explain_churn(model: ChurnModel, features: pd.DataFrame, top: int = 3) -> tuple[np.ndarray, list[str]]:
    """(calibrated churn probability per row, float 0-1, ``model.predict(features)`` to the bit; the model's
    top ``top`` reasons per row) from one evaluation of the model, for ``features``
    (``churn_features.build_features`` output). Reasons in words joined by "; ", "" when nothing adds 0.5
    point or more, e.g. "events in the last 30 days 80 % below similar accounts: +12 % churn risk" (issue 26
    item 5).

    Per explained quantity (a column and its missing indicator) the model's logit (log-odds) is a sum of
    additive contributions, and the reason's size is the change of the calibrated probability when the
    quantity's contribution is taken away, everything else kept: for ``logistic`` ``coef x (z - z_median)``
    (exactly the row's value set to the training median, "similar accounts"); for ``gbm`` its path
    attributions in the trees (``tree_paths``: Saabas's, against the model's mean output over its training
    rows). Only each row's ``top`` + 2 largest contributions are tried, and a quantity at its training median or
    within ``SIMILAR`` of it is never a reason. Percentage points of probability. The words are built over the
    whole frame (``reason_words``), not one string per row.

    Raises:
        ValueError: a ``gbm`` model that this version cannot explain (``tree_paths.PathAttributions.of``)."""
    from cs_pipeline.health.churn_features import describe_feature
    from cs_pipeline.health.churn_model import one_thread

    if len(features) == 0:
        return np.zeros(0), []
    with one_thread():
        x, base, deltas, tried, quantities = _reason_deltas(model, features, top)
    n = len(x)
    value_at, missing_at, medians, rates = (part[tried] for part in quantities[1:])
    candidates = [quantities[0][j] for j in tried]
    described = [describe_feature(c) for c in candidates]
    rows = np.arange(n)
    order = np.argsort(-deltas, axis=1)[:, :top]
    out = np.full(n, "", dtype=object)
    going = np.ones(n, dtype=bool)
    for rank in range(order.shape[1]):
        k = order[:, rank]
        delta = deltas[rows, k]
        going &= delta >= MIN_REASON
        if not going.any():
            break
        at, kg = rows[going], k[going]
        value = np.where(value_at[kg] >= 0, x[at, np.maximum(value_at[kg], 0)], np.nan)
        missing = (missing_at[kg] >= 0) & (x[at, np.maximum(missing_at[kg], 0)] == 1)
        combined = np.zeros(len(at), dtype=np.int64)
        for part in (kg, missing, np.round(value, 3), np.round(delta[going] * 100)):
            part_codes, part_uniques = pd.factorize(part)
            combined = combined * (len(part_uniques) + 1) + part_codes + 1
        codes = pd.factorize(combined)[0]
        first = pd.Series(np.arange(len(at))).groupby(codes).first().to_numpy()  # words of each code's first row
        words = reason_words(candidates, described, medians, rates, kg[first], value[first], missing[first],
                             delta[going][first])
        text = words[codes]
        current = out[going]
        out[going] = np.where(current == "", text, current + "; " + text)
    return base, out.tolist()


def _reason_deltas(model: ChurnModel, features: pd.DataFrame, top: int):
    """(input matrix, calibrated probability per row, deltas rows x candidates (-inf: not tried), the
    candidates' positions among the quantities, the quantities): per row and explained quantity, the change
    of the calibrated probability when the quantity's additive contribution to the model's logit is taken away
    (the reasons' definition, ``explain_churn``), for each row's ``top`` + 2 largest contributions among its
    quantities that are not as for similar accounts (``SIMILAR``).

    The quantities (a column with its missing indicator): (names, position of the value input (-1: none),
    position of the missing indicator (-1: none), training median (NaN: unknown), used as it is
    (``RATE_COLUMNS``; else log1p-scaled)), the last four as arrays over the names."""
    from cs_pipeline.health.churn_features import RATE_COLUMNS
    from cs_pipeline.health.churn_model import _groups
    from cs_pipeline.health.tree_paths import PathAttributions

    n = len(features)
    x = model.matrix(features)
    groups = _groups(model.inputs)
    names = list(groups)
    positions = list(groups.values())
    calibrated = model.estimator.calibrated_classifiers_
    if model.algorithm == "logistic":
        logit, parts = _logistic_parts(model, x, positions)
    else:
        paths = PathAttributions.of(model.estimator, positions)
        logit, leaves = paths.leaves(x)
    # The calibrated probability is the mean of the calibrators on the logit (what predict_proba computes).
    base = np.mean([c.calibrators[0].predict(logit) for c in calibrated], axis=0)
    if model.algorithm != "logistic":
        # A reason takes at most the whole probability away: a row under MIN_REASON can have none.
        parts = np.zeros((n, len(names)))
        parts[base >= MIN_REASON] = paths.attributions(leaves[base >= MIN_REASON])
    # A quantity as for similar accounts is no reason, whatever the model credits it with (a tree's path
    # attributions can credit a value at the median through the other splits on its path); it is left out
    # before each row's largest contributions are picked, so it takes no other reason's place.
    value_at = np.array([next((i for i in idx if not model.inputs[i].endswith("__missing")), -1) for idx in positions])
    missing_at = np.array([next((i for i in idx if model.inputs[i].endswith("__missing")), -1) for idx in positions])
    medians = np.array([model.medians.get(name, np.nan) for name in names], dtype=float)
    rates = np.array([name in RATE_COLUMNS for name in names], dtype=bool)
    similar = _against_median(np.where(value_at >= 0, x[:, np.maximum(value_at, 0)], np.nan), medians, ~rates)[3]
    similar &= ~((missing_at >= 0) & (x[:, np.maximum(missing_at, 0)] == 1))  # "unknown" is a reason
    order = np.argsort(-np.where(similar, -np.inf, parts), axis=1)[:, : min(top + 2, len(names))]
    at = np.array(sorted(np.unique(order), key=names.__getitem__), dtype=np.int64)  # by name: ties in name order
    member = np.zeros((n, len(names)), dtype=bool)
    member[np.arange(n)[:, None], order] = True
    member[base < MIN_REASON] = False
    deltas = np.full((n, len(at)), -np.inf)
    rows, k = np.nonzero(member[:, at] & ~similar[:, at])
    # Without the quantity the logit moves by exactly -parts (see explain_churn). Every (row, candidate) in one
    # call per calibrator (each maps values one by one).
    deltas[rows, k] = base[rows] - np.mean([c.calibrators[0].predict(logit[rows] - parts[rows, at[k]])
                                            for c in calibrated], axis=0)
    return x, base, deltas, at, (names, value_at, missing_at, medians, rates)


def _logistic_parts(model: ChurnModel, x: np.ndarray, positions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(logit per row, contributions rows x quantities) of the logistic model: per quantity the sum of its
    inputs' ``coef x (z - z_median)`` (a column and its missing indicator), so that setting the quantity to
    its training median moves the logit by exactly minus its contribution (the pipeline is affine up to the
    logit)."""
    pipeline = model.estimator.estimator.estimator
    coef = np.array([model.coefficients.get(name, 0.0) for name in model.inputs])
    medians = np.array([model.medians.get(name, 0.0) for name in model.inputs])
    scaler = pipeline.named_steps["scale"]
    z = scaler.transform(pipeline.named_steps["impute"].transform(x))
    z_med = scaler.transform(medians.reshape(1, -1))
    logit = pipeline.named_steps["model"].decision_function(pipeline.named_steps["select"].transform(z))
    starts = np.cumsum([0] + [len(idx) for idx in positions[:-1]])
    return logit, np.add.reduceat((coef * (z - z_med))[:, np.concatenate(positions)], starts, axis=1)
